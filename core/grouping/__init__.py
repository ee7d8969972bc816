"""Pure grouping decision rule (README, "What a run does", steps 1-3): numpy, scipy and
scikit-learn only.

No torch, no file I/O: core/ calls :func:`grouping_event` during training and analysis/ replays
it from the stored inputs. Distances and strategies live in explicit name -> function registries
(:data:`DISTANCES`, :data:`STRATEGIES`); add your own with :func:`register_distance` /
:func:`register_strategy`. A distance takes one :class:`Window`, a strategy one
:class:`StrategyInput` and returns a :class:`Proposal`; the event applies guards and hysteresis.
"""

from .config import ConfigError, GroupingConfig
from .event import grouping_event
from .partition import canonical, compose
from .protocols import Proposal, StrategyInput, Window
from .registry import DISTANCES, STRATEGIES, register_distance, register_strategy
from .result import EventResult
from .sketch import countsketch_params, dense_projection

__all__ = [
    "DISTANCES",
    "STRATEGIES",
    "ConfigError",
    "EventResult",
    "GroupingConfig",
    "Proposal",
    "StrategyInput",
    "Window",
    "canonical",
    "compose",
    "countsketch_params",
    "dense_projection",
    "grouping_event",
    "register_distance",
    "register_strategy",
]
