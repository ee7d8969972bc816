"""Every per-run figure of one run, written as files (``reproduce/figures.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from .curves import (
    plot_learning_curves,
    plot_loss_around_event,
    plot_parameter_count,
    plot_threshold_sweep,
)
from .events import RunLike
from .load import load_run
from .plots import (
    event_steps,
    plot_event_distances,
    plot_factor_space,
    plot_grouping_timeline,
    save_figure,
)

__all__ = ["draw_run_figures"]


def draw_run_figures(
    run: RunLike,
    out_dir: str | os.PathLike,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    embedding: str = "pca",
    max_events: int | None = None,
    sweep: bool = True,
) -> list[Path]:
    """Draw every per-run figure into ``out_dir``; returns the written paths.

    ``max_events`` limits the per-event figures (distances, factor space, loss around the
    event) to the first events; ``sweep=False`` skips the threshold sweep (it replays every
    event 21 times).
    """
    tree = run if isinstance(run, xr.DataTree) else load_run(run, activations=False)
    figures = {"timeline": plot_grouping_timeline(tree)}
    if "history" in tree.children:
        figures["learning_curves"] = plot_learning_curves(tree)
    figures["parameters"] = plot_parameter_count(tree)
    n_events = len(event_steps(tree))
    for i in range(n_events if max_events is None else min(n_events, max_events)):
        figures[f"distances_event_{i:03d}"] = plot_event_distances(tree, i)
        figures[f"factor_space_event_{i:03d}"] = plot_factor_space(tree, i, embedding)
        if "history" in tree.children:
            figures[f"loss_around_event_{i:03d}"] = plot_loss_around_event(tree, i)
    if n_events and sweep:
        figures["threshold_sweep"] = plot_threshold_sweep(tree)
    paths = []
    for name, fig in figures.items():
        paths += save_figure(fig, out_dir, name, formats)
    return paths
