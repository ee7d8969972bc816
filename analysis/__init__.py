"""Analysis from run stores alone: load runs, replay and explain grouping decisions, plots,
and the activation-region study (Figure 6). Never imports torch (a test checks).

Importing this package is cheap: the submodules (xarray, pandas, matplotlib, scikit-learn)
load on first use of a name::

    from selective_sharing.analysis import load_run, replay, explain
    report = replay("runs/synthetic/ss_similarity/seed0")
    assert report.matched

The functions ``replay`` and ``explain`` share their names with the submodules that define
them; the package attribute is always the function (importing a submodule does not replace
it). Reach the submodules with ``from selective_sharing.analysis.replay import ...``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "load": ("BrokenRunWarning", "IncompleteRunWarning", "find_runs", "load_run", "load_runs"),
    "replay": ("EventReplay", "ReplayReport", "replay", "sweep_thresholds"),
    "overrides": ("IgnoredOverrideWarning",),
    "explain": ("Explanation", "explain"),
    "events": ("read_events",),
    "plots": (
        "plot_event_distances",
        "plot_factor_space",
        "plot_grouping_timeline",
        "save_figure",
    ),
    "curves": (
        "plot_learning_curves",
        "plot_loss_around_event",
        "plot_parameter_count",
        "plot_threshold_sweep",
    ),
    "run_figures": ("draw_run_figures",),
    "figure6": ("figure6_numbers", "summarize_figure6"),
    "figure6_plot": ("draw_figure6", "write_figure6"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)  # one list: every name of _EXPORTS


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``analysis.replay`` (and ``explain``) the function when the import system binds
    the submodule of the same name onto the package after importing it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
