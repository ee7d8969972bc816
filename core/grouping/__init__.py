"""Pure grouping decision rule (README, "What a run does", steps 1-3): numpy, scipy and
scikit-learn only.

No torch, no file I/O: core/ calls :func:`grouping_event` during training and analysis/ replays
it from the stored inputs. Distances and strategies live in explicit name -> function registries
(:data:`DISTANCES`, :data:`STRATEGIES`); add your own with :func:`register_distance` /
:func:`register_strategy`.
"""

from .config import ConfigError, GroupingConfig
from .event import grouping_event
from .partition import canonical, compose
from .registry import DISTANCES, STRATEGIES, register_distance, register_strategy
from .sketch import apply_countsketch, countsketch_params, dense_projection, make_sketcher
from .types import EventResult

__all__ = [
    "DISTANCES",
    "STRATEGIES",
    "ConfigError",
    "EventResult",
    "GroupingConfig",
    "apply_countsketch",
    "canonical",
    "compose",
    "countsketch_params",
    "dense_projection",
    "grouping_event",
    "make_sketcher",
    "register_distance",
    "register_strategy",
]
