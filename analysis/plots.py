"""Per-run figures drawn from the store alone (matplotlib ``Figure`` objects, no pyplot state).

- :func:`plot_grouping_timeline`: tasks x events, coloured by group;
- :func:`plot_event_distances`: the chosen distance matrix of one event under its dendrogram,
  leaves aligned with the columns;
- :func:`plot_factor_space`: 2-D embedding (PCA or UMAP) of the sketched bins and of the
  gradient factors, coloured by entity;

and the helpers every per-run figure shares (:func:`run_tree`, :func:`event_result`,
:func:`add_legend`, :func:`save_figure`, ...). The curves over training steps are in
:mod:`.curves`; :func:`~.run_figures.draw_run_figures` writes them all.

Every function returns a Figure styled by :mod:`.style` whose title names the run
(dataset / method / seed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .events import RunLike, entity_names, read_events
from .load import load_run
from .style import (
    DOUBLE_COLUMN,
    DPI,
    IMAGE_CMAP,
    PALETTE,
    SINGLE_COLUMN,
    new_figure,
    run_title,
    series_style,
    styled,
)

__all__ = [
    "MAX_LEGEND",
    "add_legend",
    "embed_2d",
    "event_result",
    "event_steps",
    "group_ids",
    "mark_events",
    "plot_event_distances",
    "plot_factor_space",
    "plot_grouping_timeline",
    "run_history",
    "run_tree",
    "save_figure",
]

MAX_LEGEND = 20  # entries; beyond it a legend lists the first ones and says how many there are


def run_tree(run: RunLike) -> xr.DataTree:
    return run if isinstance(run, xr.DataTree) else load_run(run, activations=False)


def event_result(tree: xr.DataTree, event: int):
    _, decoded = read_events(tree)
    if not 0 <= event < len(decoded):
        raise ValueError(f"event={event} is out of range: the run has {len(decoded)} event(s)")
    return decoded[event]


def save_figure(
    fig: Figure,
    out_dir: str | os.PathLike,
    name: str,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = DPI,
) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.{fmt}`` for each format; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=dpi)
    return paths


def group_ids(assignment: np.ndarray) -> np.ndarray:
    """Name each group by its lowest task, so a group keeps its colour across events."""
    first = {g: int(np.flatnonzero(assignment == g)[0]) for g in np.unique(assignment)}
    return np.array([first[g] for g in assignment])


def add_legend(ax, handles: list, title: str | None = None) -> None:
    """A legend of at most MAX_LEGEND entries right of ``ax`` (constrained layout makes room
    for it, and the figure title stays clear of it)."""
    shown = list(handles)[:MAX_LEGEND]
    if len(handles) > MAX_LEGEND:
        title = f"{title or ''} (first {MAX_LEGEND} of {len(handles)})".strip()
    ax.legend(handles=shown, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0))


@styled
def plot_grouping_timeline(run: RunLike) -> Figure:
    """Tasks (rows) x events (columns), each cell coloured by the task's group after the event;
    a group is named by its first task and keeps its colour across events."""
    tree = run_tree(run)
    manifest, decoded = read_events(tree)
    names = list(manifest.get("task_names") or [])
    columns, labels = [], []
    if decoded:
        columns.append(decoded[0][0].assignment_before)
        labels.append("start")
    for r, m in decoded:
        columns.append(r.assignment_after)
        labels.append(f"e{m['index']}\n({m['step']})")
    if not columns and "metrics" in tree.children:
        columns, labels = [tree["metrics"]["partition"].values], ["final"]
    ids = np.stack([group_ids(np.asarray(c)) for c in columns], axis=1)
    groups, grid = np.unique(ids, return_inverse=True)
    grid = grid.reshape(ids.shape)
    colours = [PALETTE[i % len(PALETTE)] for i in range(groups.size)]
    width = SINGLE_COLUMN if len(labels) <= 6 else DOUBLE_COLUMN
    fig = new_figure(width, 1.1 + 0.14 * max(len(names), 6))
    ax = fig.add_subplot()
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(groups.size + 1) - 0.5, groups.size)
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel="grouping event (training step)", ylabel="task")
    bar = fig.colorbar(image, ax=ax, ticks=np.arange(groups.size), label="group (its first task)")
    bar.ax.set_yticklabels([names[g] if g < len(names) else str(g) for g in groups])
    bar.ax.tick_params(length=0)
    fig.suptitle(f"Grouping timeline: {run_title(tree.attrs)}")
    return fig


@styled
def plot_event_distances(run: RunLike, event: int = 0) -> Figure:
    """The event's chosen distance matrix, rows and columns in the order of its average-linkage
    dendrogram, which sits above the heatmap with each leaf over its column."""
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    tree = run_tree(run)
    r, meta = event_result(tree, event)
    d = r.distances[r.chosen_distance]
    labels = entity_names(r.assignment_before, meta["task_names"])
    n = d.shape[0]
    side = min(DOUBLE_COLUMN, max(SINGLE_COLUMN + 1.0, 1.8 + 0.3 * n))
    fig = new_figure(side, side + 1.4)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.2, 3], width_ratios=[1, 0.04])
    top, main = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0])
    cax = fig.add_subplot(grid[1, 1])
    # scipy puts leaf i at x = 10 i + 5: give the heatmap the same x coordinates
    order, centres = np.arange(n), 10 * np.arange(n) + 5.0
    cut = float(r.threshold) if np.isfinite(r.threshold) else None
    if n >= 2:
        link = linkage(squareform(d, checks=False), method="average")
        info = dendrogram(
            link,
            ax=top,
            labels=labels,
            color_threshold=cut,
            above_threshold_color="0.45",
            leaf_rotation=90,
            leaf_font_size=7,
        )
        order = np.asarray(info["leaves"])
        height = max(float(link[:, 2].max()), cut or 0.0)
        top.set_ylim(0, 1.45 * height)  # headroom for the legend above the root
        if cut is not None:
            top.axhline(cut, color="k", ls="--", lw=0.8, label=f"cut {cut:.3f}: merge below")
            top.legend(loc="upper right")
    top.set_xlim(0, 10 * n)
    top.set(xlabel="leaf (entity)", ylabel=f"linkage height\n({r.chosen_distance})")
    image = main.imshow(
        d[np.ix_(order, order)],
        cmap=IMAGE_CMAP,
        aspect="auto",
        interpolation="nearest",
        extent=(0, 10 * n, 10 * n, 0),
    )
    ticks = [labels[i] for i in order]
    main.set_xticks(centres, ticks, rotation=90)
    main.set_yticks(centres, ticks)
    main.set(xlabel="entity", ylabel="entity")
    fig.colorbar(image, cax=cax, label=f"{r.chosen_distance} distance\n(0 = same)")
    sil = ", ".join(f"{k} {v:.3f}" for k, v in r.silhouettes.items())
    fig.suptitle(
        f"Distances at event {meta['index']} (step {meta['step']})\n{run_title(tree.attrs)}\n"
        f"{r.chosen_distance} chosen; silhouette {sil}",
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


@styled
def plot_factor_space(run: RunLike, event: int = 0, embedding: str = "pca") -> Figure:
    """Sketched bins (trajectories) and gradient factors of one event, coloured by entity."""
    tree = run_tree(run)
    r, meta = event_result(tree, event)
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
    fig = new_figure(DOUBLE_COLUMN, 3.2)
    left, right = fig.subplots(1, 2)
    styles = [series_style(e) for e in range(n_e)]
    for e in range(n_e):  # points, not paths: consecutive bins jump around and paths tangle
        keep = ~np.isnan(xy[e, :, 0])
        colour = styles[e]["color"]
        left.scatter(xy[e, keep, 0], xy[e, keep, 1], s=5, color=colour, alpha=0.45, linewidths=0)
        if keep.any():  # the entity's mean direction over the window
            mean = xy[e, keep].mean(axis=0)
            left.scatter(*mean, s=45, color=colour, edgecolors="black", linewidths=0.6, zorder=3)
    share = r.singular_values**2 / np.maximum((r.singular_values**2).sum(1, keepdims=True), 1e-300)
    colours = [styles[e]["color"] for e in ent]
    right.scatter(fxy[:, 0], fxy[:, 1], s=8 + 80 * share[ent, fac], c=colours, linewidths=0)
    name = embedding.upper()
    for ax in (left, right):
        ax.set(xlabel=f"{name} 1 (arbitrary units)", ylabel=f"{name} 2 (arbitrary units)")
    left.set_title("sketched gradient bins (unit norm)\nsmall: one bin; large: entity mean")
    right.set_title("gradient factors\n(marker area ~ share of sigma^2)")
    names = entity_names(r.assignment_before, meta["task_names"], width=4)
    handles = [
        Line2D([], [], marker="o", ms=3, lw=0.7, label=names[e], **styles[e]) for e in range(n_e)
    ]
    add_legend(right, handles, "entity (tasks)")
    fig.suptitle(
        f"Factor space at event {meta['index']} (step {meta['step']}, {n_e} entities): "
        f"{run_title(tree.attrs)}"
    )
    return fig


def event_steps(tree: xr.DataTree) -> list[int]:
    events = tree["events"].children.values() if "events" in tree.children else []
    return [int(node.attrs["step"]) for node in events]


def run_history(tree: xr.DataTree) -> xr.Dataset:
    if "history" not in tree.children:
        raise ValueError(f"run {tree.attrs.get('run_dir')} has no history.nc to draw curves from")
    return tree["history"].to_dataset()


def mark_events(ax, steps: Sequence[int]) -> None:
    for i, step in enumerate(steps):
        ax.axvline(step - 0.5, color="0.3", ls="--", lw=0.7, zorder=0)
        ax.annotate(
            f"e{i}",
            (step - 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            va="top",
            fontsize=6,
        )
