"""Per-run figures drawn from the store alone (matplotlib ``Figure`` objects, no pyplot state).

- :func:`plot_grouping_timeline`: tasks x events, coloured by group;
- :func:`plot_event_distances`: the chosen distance matrix of one event with its dendrogram;
- :func:`plot_factor_space`: 2-D embedding (PCA or UMAP) of the sketched bins and of the
  gradient factors, coloured by entity;
- :func:`plot_learning_curves`: per-task training loss, with the event steps marked;
- :func:`plot_parameter_count`: parameters over steps;
- :func:`plot_threshold_sweep`: number of groups against the threshold (counterfactual replay).

:func:`draw_run_figures` writes all of them as PNG and PDF (``reproduce/figures.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from .events import RunLike, entity_names, read_events
from .load import load_run

__all__ = [
    "draw_run_figures",
    "embed_2d",
    "plot_event_distances",
    "plot_factor_space",
    "plot_grouping_timeline",
    "plot_learning_curves",
    "plot_parameter_count",
    "plot_threshold_sweep",
    "save_figure",
]

_PALETTE = ListedColormap(
    [
        *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"),
        *("#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896"),
    ]
)


def _tree(run: RunLike) -> xr.DataTree:
    return run if isinstance(run, xr.DataTree) else load_run(run, activations=False)


def _title(tree: xr.DataTree) -> str:
    a = tree.attrs
    return f"{(a.get('dataset') or {}).get('name', '?')} / {a.get('method', '?')} / seed {a.get('seed', '?')}"


def save_figure(
    fig: Figure, out_dir: str | os.PathLike, name: str, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{fmt}`` for each format; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return paths


def _group_ids(assignment: np.ndarray) -> np.ndarray:
    """Name each group by its lowest task, so a group keeps its colour across events."""
    first = {g: int(np.flatnonzero(assignment == g)[0]) for g in np.unique(assignment)}
    return np.array([first[g] for g in assignment])


def plot_grouping_timeline(run: RunLike) -> Figure:
    """Tasks (rows) x events (columns), each cell coloured by the task's group after the event."""
    tree = _tree(run)
    manifest, decoded = read_events(tree)
    names = list(manifest.get("task_names") or [])
    columns, labels = [], []
    if decoded:
        columns.append(decoded[0][0].assignment_before)
        labels.append("start")
    for r, m in decoded:
        columns.append(r.assignment_after)
        labels.append(f"e{m['index']}\nstep {m['step']}")
    if not columns and "metrics" in tree.children:
        columns, labels = [tree["metrics"]["partition"].values], ["final"]
    grid = np.stack([_group_ids(np.asarray(c)) for c in columns], axis=1) % _PALETTE.N
    fig = Figure(figsize=(1.2 + 0.7 * grid.shape[1], 1.0 + 0.22 * len(names)))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap=_PALETTE, vmin=0, vmax=_PALETTE.N - 1, aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(f"grouping timeline: {_title(tree)}", fontsize=9)
    return fig


def plot_event_distances(run: RunLike, event: int = 0) -> Figure:
    """The event's chosen distance matrix ordered by its average-linkage dendrogram."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    _, decoded = read_events(_tree(run))
    if not 0 <= event < len(decoded):
        raise ValueError(f"event={event} is out of range: the run has {len(decoded)} event(s)")
    r, meta = decoded[event]
    d = r.distances[r.chosen_distance]
    labels = entity_names(r.assignment_before, meta["task_names"])
    fig = Figure(figsize=(6.5, 7.5))
    top, main = fig.subplots(2, 1, height_ratios=[1, 3.5])
    order = np.arange(d.shape[0])
    if d.shape[0] >= 2:
        tree = linkage(squareform(d, checks=False), method="average")
        cut = r.threshold if np.isfinite(r.threshold) else None
        info = dendrogram(tree, ax=top, no_labels=True, color_threshold=cut)
        order = np.asarray(info["leaves"])
        if cut is not None:
            top.axhline(cut, color="k", ls="--", lw=0.8)
    top.set_ylabel("linkage height", fontsize=7)
    image = main.imshow(d[np.ix_(order, order)], cmap="viridis", aspect="auto")
    ticks = [labels[i] for i in order]
    main.set_xticks(range(len(order)), ticks, rotation=90, fontsize=6)
    main.set_yticks(range(len(order)), ticks, fontsize=6)
    fig.colorbar(image, ax=main, label=f"{r.chosen_distance} distance")
    sil = ", ".join(f"{k} {v:.3f}" for k, v in r.silhouettes.items())
    fig.suptitle(
        f"event {meta['index']} (step {meta['step']}): {r.chosen_distance} chosen; silhouettes "
        f"{sil}; cut {r.threshold:.4f}",
        fontsize=8,
    )
    return fig


def embed_2d(points: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D embedding ``(n, 2)`` of ``points`` ``(n, d)`` by PCA or UMAP (imported lazily).

    UMAP falls back to PCA below 5 points, where its neighbourhood graph is meaningless.
    """
    if method not in ("pca", "umap"):
        raise ValueError(f"method={method!r} must be 'pca' or 'umap'")
    x = np.asarray(points, dtype=np.float64)
    if method == "umap" and x.shape[0] >= 5:
        import umap  # lazy: slow import (numba), optional for everything else

        n_neighbors = min(15, x.shape[0] - 1)
        reducer = umap.UMAP(n_neighbors=n_neighbors, random_state=seed, n_jobs=1)
        return np.asarray(reducer.fit_transform(x))
    x = x - x.mean(axis=0)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2))
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    out = u[:, :2] * s[:2]
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def plot_factor_space(run: RunLike, event: int = 0, embedding: str = "pca") -> Figure:
    """Sketched bins (trajectories) and gradient factors of one event, coloured by entity."""
    _, decoded = read_events(_tree(run))
    if not 0 <= event < len(decoded):
        raise ValueError(f"event={event} is out of range: the run has {len(decoded)} event(s)")
    r, meta = decoded[event]
    bins = np.asarray(meta["bins"], dtype=np.float64)
    n_e, n_bins = bins.shape[:2]
    flat = bins.reshape(n_e * n_bins, -1)
    norms = np.linalg.norm(flat, axis=1)
    used = norms > 0  # a window shorter than window_bins leaves empty bins
    # Bins differ in scale by orders of magnitude over training: unit rows compare directions.
    xy = np.full((n_e * n_bins, 2), np.nan)
    xy[used] = embed_2d(flat[used] / norms[used, None], embedding)
    xy = xy.reshape(n_e, n_bins, 2)
    present = r.singular_values > 0
    ent, fac = np.nonzero(present)
    fxy = embed_2d(r.factors[ent, fac], embedding)
    fig = Figure(figsize=(11, 5))
    left, right = fig.subplots(1, 2)
    colours = _PALETTE(np.arange(n_e) % _PALETTE.N)
    for e in range(n_e):
        keep = ~np.isnan(xy[e, :, 0])
        left.plot(xy[e, keep, 0], xy[e, keep, 1], "-o", ms=2, lw=0.6, color=colours[e])
    share = r.singular_values**2 / np.maximum((r.singular_values**2).sum(1, keepdims=True), 1e-300)
    right.scatter(fxy[:, 0], fxy[:, 1], s=10 + 120 * share[ent, fac], c=colours[ent])
    left.set_title(f"sketched bins ({embedding}), one trajectory per entity", fontsize=9)
    right.set_title(f"gradient factors ({embedding}), size ~ sigma^2 share", fontsize=9)
    fig.suptitle(f"event {meta['index']} (step {meta['step']}): {n_e} entities", fontsize=9)
    return fig


def _event_steps(tree: xr.DataTree) -> list[int]:
    events = tree["events"].children.values() if "events" in tree.children else []
    return [int(node.attrs["step"]) for node in events]


def plot_learning_curves(run: RunLike) -> Figure:
    """Training loss of every task over steps, coloured by final group; events dashed."""
    tree = _tree(run)
    if "history" not in tree.children:
        raise ValueError(f"run {tree.attrs.get('run_dir')} has no history.nc to draw curves from")
    h = tree["history"].to_dataset()
    final = _group_ids(h["assignment"].values[-1])
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for t, name in enumerate(h["task"].values):
        loss = h["loss"].values[:, t]
        ax.plot(h["step"].values, loss, lw=0.8, color=_PALETTE(final[t] % _PALETTE.N), label=name)
    for step in _event_steps(tree):
        ax.axvline(step, color="k", ls="--", lw=0.6)
    if np.nanmin(h["loss"].values, initial=np.inf) > 0:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="training loss", title=f"learning curves: {_title(tree)}")
    if h.sizes["task"] <= 12:
        ax.legend(fontsize=6, ncol=2)
    return fig


def plot_parameter_count(run: RunLike) -> Figure:
    """Trainable parameters over steps: drops at the events where estimators merged."""
    tree = _tree(run)
    events = tree["events"].children.values() if "events" in tree.children else []
    steps, counts = [0], []
    for node in events:
        counts.append(int(node.attrs["n_params_before"]))
        steps.append(int(node.attrs["step"]))
        counts.append(int(node.attrs["n_params_after"]))
    last = int(tree["history"]["step"].values[-1]) + 1 if "history" in tree.children else steps[-1]
    if "metrics" in tree.children:
        final = int(tree["metrics"]["n_parameters"].values)
        counts = counts or [final]
        last = int(tree["metrics"]["steps"].values)
    counts.append(counts[-1])
    steps.append(max(last, steps[-1]))
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.step(steps, counts[: len(steps)], where="post")
    ax.set(xlabel="step", ylabel="trainable parameters", title=f"parameters: {_title(tree)}")
    return fig


def plot_threshold_sweep(run: RunLike, **kwargs) -> Figure:
    """Number of groups after each event against the threshold (:func:`sweep_thresholds`)."""
    from .replay import sweep_thresholds

    df = sweep_thresholds(run, **kwargs)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for event, part in df.groupby("event"):
        ax.plot(part["threshold"], part["n_groups"], "-o", ms=2, label=f"event {event}")
    ax.set(xlabel="threshold", ylabel="groups after the event", title="threshold sweep")
    ax.legend(fontsize=6)
    return fig


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

    ``max_events`` limits the per-event figures (distances, factor space) to the first events;
    ``sweep=False`` skips the threshold sweep (it replays every event 21 times).
    """
    tree = run if isinstance(run, xr.DataTree) else load_run(run, activations=False)
    figures = {"timeline": plot_grouping_timeline(tree)}
    if "history" in tree.children:
        figures["learning_curves"] = plot_learning_curves(tree)
    figures["parameters"] = plot_parameter_count(tree)
    n_events = len(_event_steps(tree))
    for i in range(n_events if max_events is None else min(n_events, max_events)):
        figures[f"distances_event_{i:03d}"] = plot_event_distances(tree, i)
        figures[f"factor_space_event_{i:03d}"] = plot_factor_space(tree, i, embedding)
    if n_events and sweep:
        figures["threshold_sweep"] = plot_threshold_sweep(tree)
    paths = []
    for name, fig in figures.items():
        paths += save_figure(fig, out_dir, name, formats)
    return paths
