"""Pure grouping decision rule (README, "What a run does", steps 1-3): numpy, scipy and
scikit-learn only.

No torch, no file I/O: core/ calls :func:`grouping_event` during training and analysis/ replays
it from the stored inputs. Distances and strategies live in explicit name -> function registries
(:data:`DISTANCES`, :data:`STRATEGIES`); add your own with :func:`register_distance` /
:func:`register_strategy`. A distance takes one :class:`Window`, a strategy one
:class:`StrategyInput` and returns a :class:`Proposal`; the event applies guards and hysteresis.
:data:`DECISION_RULE_VERSION` numbers the rule (:mod:`.version`): a stored event is replayed with
``grouping_event(..., rule=<its rule>)``. ``grouping_event(..., record=False)`` decides without
the record-only pooled k-means and :func:`complete_record` adds it afterwards.
"""

from .config import ConfigError, GroupingConfig
from .event import complete_record, grouping_event
from .partition import canonical, compose
from .protocols import Proposal, StrategyInput, Window
from .registry import DISTANCES, STRATEGIES, register_distance, register_strategy
from .result import EventResult
from .sketch import countsketch_params, dense_projection
from .version import DECISION_RULE_VERSION, DECISION_RULES, UNVERSIONED_RULE

__all__ = [
    "DECISION_RULES",
    "DECISION_RULE_VERSION",
    "DISTANCES",
    "STRATEGIES",
    "UNVERSIONED_RULE",
    "ConfigError",
    "EventResult",
    "GroupingConfig",
    "Proposal",
    "StrategyInput",
    "Window",
    "canonical",
    "complete_record",
    "compose",
    "countsketch_params",
    "dense_projection",
    "grouping_event",
    "register_distance",
    "register_strategy",
]
