"""Per-run figures drawn from the store alone (matplotlib ``Figure`` objects, no pyplot state).

- :func:`plot_grouping_timeline`: tasks x events, coloured by group;
- :func:`plot_event_distances`: the chosen distance matrix of one event under its dendrogram,
  leaves aligned with the columns;
- :func:`plot_factor_space`: 2-D embedding (PCA or UMAP) of the sketched bins and of the
  gradient factors, coloured by entity;
- :func:`plot_learning_curves`: per-task training loss, with the event steps marked;
- :func:`plot_loss_around_event`: per-task loss just before and after one event, merged tasks
  highlighted (the jump a ``merge=average`` causes);
- :func:`plot_parameter_count`: parameters over steps, from zero, with each drop's size;
- :func:`plot_threshold_sweep`: number of groups against the threshold (counterfactual replay),
  the recorded cut marked.

Every function returns a Figure styled by :mod:`.style` whose title names the run
(dataset / method / seed). :func:`draw_run_figures` writes all of them as PNG and PDF
(``reproduce/figures.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import pairwise
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
    "draw_run_figures",
    "embed_2d",
    "plot_event_distances",
    "plot_factor_space",
    "plot_grouping_timeline",
    "plot_learning_curves",
    "plot_loss_around_event",
    "plot_parameter_count",
    "plot_threshold_sweep",
    "save_figure",
]

MAX_LEGEND = 20  # entries; beyond it a legend lists the first ones and says how many there are


def _tree(run: RunLike) -> xr.DataTree:
    return run if isinstance(run, xr.DataTree) else load_run(run, activations=False)


def _event(tree: xr.DataTree, event: int):
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


def _group_ids(assignment: np.ndarray) -> np.ndarray:
    """Name each group by its lowest task, so a group keeps its colour across events."""
    first = {g: int(np.flatnonzero(assignment == g)[0]) for g in np.unique(assignment)}
    return np.array([first[g] for g in assignment])


def _legend(ax, handles: list, title: str | None = None) -> None:
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
    tree = _tree(run)
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
    ids = np.stack([_group_ids(np.asarray(c)) for c in columns], axis=1)
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

    tree = _tree(run)
    r, meta = _event(tree, event)
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
    tree = _tree(run)
    r, meta = _event(tree, event)
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
    for e in range(n_e):
        keep = ~np.isnan(xy[e, :, 0])
        left.plot(xy[e, keep, 0], xy[e, keep, 1], marker="o", ms=2, lw=0.7, **styles[e])
    share = r.singular_values**2 / np.maximum((r.singular_values**2).sum(1, keepdims=True), 1e-300)
    colours = [styles[e]["color"] for e in ent]
    right.scatter(fxy[:, 0], fxy[:, 1], s=8 + 80 * share[ent, fac], c=colours, linewidths=0)
    name = embedding.upper()
    for ax in (left, right):
        ax.set(xlabel=f"{name} 1 (arbitrary units)", ylabel=f"{name} 2 (arbitrary units)")
    left.set_title("sketched gradient bins\n(unit norm; one path per entity)")
    right.set_title("gradient factors\n(marker area ~ share of sigma^2)")
    names = entity_names(r.assignment_before, meta["task_names"], width=4)
    handles = [
        Line2D([], [], marker="o", ms=3, lw=0.7, label=names[e], **styles[e]) for e in range(n_e)
    ]
    _legend(right, handles, "entity (tasks)")
    fig.suptitle(
        f"Factor space at event {meta['index']} (step {meta['step']}, {n_e} entities): "
        f"{run_title(tree.attrs)}"
    )
    return fig


def _event_steps(tree: xr.DataTree) -> list[int]:
    events = tree["events"].children.values() if "events" in tree.children else []
    return [int(node.attrs["step"]) for node in events]


def _history(tree: xr.DataTree) -> xr.Dataset:
    if "history" not in tree.children:
        raise ValueError(f"run {tree.attrs.get('run_dir')} has no history.nc to draw curves from")
    return tree["history"].to_dataset()


def _mark_events(ax, steps: Sequence[int]) -> None:
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


def _running_mean(loss: np.ndarray, steps: np.ndarray, breaks: Sequence[int], k: int):
    """Trailing mean ``(S, T)`` of ``loss`` over ``k`` steps, restarted at each step of
    ``breaks`` so that a jump at an event stays a jump."""
    out = np.empty_like(loss, dtype=np.float64)
    edges = [0, *np.searchsorted(steps, sorted(breaks)), len(steps)]
    for lo, hi in pairwise(edges):
        csum = np.cumsum(np.nan_to_num(loss[lo:hi]), axis=0)
        n = np.arange(1, hi - lo + 1)[:, None]
        window = np.minimum(n, k)
        shifted = np.vstack([np.zeros((k, loss.shape[1])), csum])[: hi - lo]
        out[lo:hi] = (csum - shifted) / window
    return out


@styled
def plot_learning_curves(run: RunLike, smooth: int | None = None) -> Figure:
    """Training loss of every task over steps, as a trailing running mean over ``smooth`` steps
    (default: 1/50 of the run, restarted at each event; 1 draws the raw per-batch losses).

    One colour / line style pair per task (beyond 40 tasks, one per final group); grouping
    events are dashed lines ``e0, e1, ...``.
    """
    tree = _tree(run)
    h = _history(tree)
    names = [str(t) for t in h["task"].values]
    steps, loss = h["step"].values, h["loss"].values.astype(np.float64)
    events = _event_steps(tree)
    k = max(1, int(smooth if smooth is not None else len(steps) // 50))
    curves = _running_mean(loss, steps, events, k) if k > 1 else loss
    fig = new_figure(DOUBLE_COLUMN, 3.0)
    ax = fig.add_subplot()
    groups = np.unique(final := _group_ids(h["assignment"].values[-1]))
    per_task = len(names) <= 40
    for t, name in enumerate(names):
        i = t if per_task else int(np.searchsorted(groups, final[t]))
        ax.plot(steps, curves[:, t], lw=0.9, label=name, **series_style(i))
    handles = (
        ax.get_lines()
        if per_task
        else [
            Line2D([], [], label=f"group of {names[g]}", **series_style(i))
            for i, g in enumerate(groups)
        ]
    )
    _mark_events(ax, events)
    if np.nanmin(loss, initial=np.inf) > 0:
        ax.set_yscale("log")
    scale = ", log scale" if ax.get_yscale() == "log" else ""
    mean = f"; mean of {k} steps" if k > 1 else ""
    ax.set(xlabel="training step", ylabel=f"training loss\n(per task{mean}{scale})")
    ax.set_xlim(steps[0], steps[-1])
    _legend(ax, list(handles), "task" if per_task else "final group")
    fig.suptitle(f"Learning curves: {run_title(tree.attrs)}")
    return fig


def _merged_tasks(result, n_tasks: int) -> np.ndarray:
    """Group after the event ``(T,)`` of each task whose group was formed by merging
    several entities, -1 for the others."""
    counts = np.bincount(result.parent, minlength=result.n_entities_after)
    after = result.assignment_after
    return np.where(counts[after] > 1, after, -1)[:n_tasks]


@styled
def plot_loss_around_event(run: RunLike, event: int = 0, window: int | None = None) -> Figure:
    """Per-task training loss from ``window`` steps before to ``window`` after an event.

    Tasks whose estimators were merged at the event are drawn in their new group's colour, the
    others in grey; the dashed line separates the last step before the event from the first
    step trained with the merged estimators (with ``merge=average`` their loss jumps there).
    """
    tree = _tree(run)
    r, meta = _event(tree, event)
    h = _history(tree)
    step, steps, loss = int(meta["step"]), h["step"].values, h["loss"].values
    window = window or max(10, min(60, step))
    keep = (steps >= step - window) & (steps < step + window)
    names = [str(t) for t in h["task"].values]
    merged = _merged_tasks(r, len(names))
    groups = [g for g in np.unique(merged) if g >= 0]
    fig = new_figure(DOUBLE_COLUMN, 3.0)
    ax = fig.add_subplot()
    rank = {g: i for i, g in enumerate(groups)}
    seen: dict[int, int] = {}
    for t, name in enumerate(names):
        g = int(merged[t])
        if g < 0:
            ax.plot(steps[keep], loss[keep, t], color="0.6", lw=0.6, label=f"{name} (not merged)")
            continue
        k = seen[g] = seen.get(g, -1) + 1
        style = {
            "color": PALETTE[rank[g] % len(PALETTE)],
            "linestyle": ("-", "--", ":", "-.")[k % 4],
        }
        ax.plot(steps[keep], loss[keep, t], lw=1.0, label=f"{name} (group {rank[g] + 1})", **style)
    mode = meta.get("merge_mode", "?")
    ax.axvline(
        step - 0.5, color="k", ls="--", lw=0.8, label=f"event {meta['index']} (merge={mode})"
    )
    before = loss[(steps >= step - 5) & (steps < step)][:, merged >= 0]
    after = loss[(steps >= step) & (steps < step + 5)][:, merged >= 0]
    if before.size and after.size:
        b, a = float(np.mean(before)), float(np.mean(after))
        ax.text(
            0.99,
            0.97,
            f"merged tasks, mean loss over 5 steps\nbefore / after: {b:.3f} / {a:.3f}"
            f" (x{a / max(b, 1e-12):.1f})",
            transform=ax.transAxes,
            va="top",
            ha="right",
            fontsize=7,
        )
    ax.set(xlabel="training step", ylabel="training loss (per task)")
    ax.set_xlim(steps[keep][0], steps[keep][-1])
    ax.set_ylim(bottom=0)
    _legend(ax, ax.get_lines(), "task (group after the event)")
    fig.suptitle(
        f"Loss around event {meta['index']} (step {step}, {len(groups)} merged group(s))\n"
        f"{run_title(tree.attrs)}"
    )
    return fig


@styled
def plot_parameter_count(run: RunLike) -> Figure:
    """Trainable parameters over steps, from zero: drops at the events where estimators merged,
    each annotated with its relative change."""
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
    fig = new_figure(SINGLE_COLUMN, 2.6)
    ax = fig.add_subplot()
    thousands = np.asarray(counts[: len(steps)], dtype=np.float64) / 1e3
    ax.step(steps, thousands, where="post")
    for i, node in enumerate(events):
        before, after = int(node.attrs["n_params_before"]), int(node.attrs["n_params_after"])
        if before != after:
            ax.annotate(
                f"{before / 1e3:.0f}k -> {after / 1e3:.0f}k ({(after - before) / before:+.1%})",
                (steps[i + 1], after / 1e3),
                xytext=(3 if steps[i + 1] < 0.6 * steps[-1] else -3, -10),
                textcoords="offset points",
                ha="left" if steps[i + 1] < 0.6 * steps[-1] else "right",
                fontsize=7,
            )
    ax.set_ylim(0, 1.1 * max(thousands))
    ax.set_xlim(0, steps[-1])
    ax.set(xlabel="training step", ylabel="trainable parameters (thousands)")
    fig.suptitle(f"Parameters: {run_title(tree.attrs)}")
    return fig


def _sweep_range(decoded, distance: str | None) -> tuple[float, list[str]]:
    """Largest distance (and the distances' names) that the events' decisions used, or that
    ``distance`` names."""
    used = []
    top = 0.0
    for r, _ in decoded:
        name = r.chosen_distance if distance in (None, "auto") else distance
        used.append(name)
        if name in r.distances:
            top = max(top, float(np.max(r.distances[name])))
    return top or 1.0, sorted(set(used))


@styled
def plot_threshold_sweep(run: RunLike, **kwargs) -> Figure:
    """Number of groups after each event against the threshold (:func:`sweep_thresholds`).

    Thresholds default to 21 points from 0 to the largest value of the distance the run's
    decisions used (not of every candidate); each event's recorded cut is a star.
    """
    from .replay import sweep_thresholds

    tree = _tree(run)
    _, decoded = read_events(tree, bins=False)
    top, used = _sweep_range(decoded, kwargs.get("distance"))
    if kwargs.get("thresholds") is None:
        kwargs["thresholds"] = np.linspace(0.0, min(top, 2.0), 21)
    df = sweep_thresholds(tree, **kwargs)
    fig = new_figure(SINGLE_COLUMN + 1.4, 2.6)
    ax = fig.add_subplot()
    for event, part in df.groupby("event"):
        style = series_style(int(event))
        ax.plot(
            part["threshold"], part["n_groups"], marker="o", ms=2, label=f"event {event}", **style
        )
        r = decoded[int(event)][0]
        if np.isfinite(r.threshold) and kwargs.get("strategy") in (None, "similarity"):
            ax.plot(
                [r.threshold],
                [r.n_entities_after],
                marker="*",
                ms=9,
                ls="none",
                color=style["color"],
                markeredgecolor="k",
                markeredgewidth=0.5,
                label=f"chosen cut {r.threshold:.3f} (event {event})",
            )
    lo = float(np.min(kwargs["thresholds"]))
    cuts = [r.threshold for r, _ in decoded if np.isfinite(r.threshold)]
    hi = (
        max(float(np.max(kwargs["thresholds"])), *cuts)
        if cuts
        else float(np.max(kwargs["thresholds"]))
    )
    ax.set_xlim(lo, hi if hi > lo else lo + 1.0)
    ax.set_ylim(bottom=0)
    ax.set(xlabel=f"threshold on the {' / '.join(used)} distance", ylabel="groups after the event")
    _legend(ax, ax.get_lines(), None)
    fig.suptitle(f"Threshold sweep: {run_title(tree.attrs)}")
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

    ``max_events`` limits the per-event figures (distances, factor space, loss around the
    event) to the first events; ``sweep=False`` skips the threshold sweep (it replays every
    event 21 times).
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
        if "history" in tree.children:
            figures[f"loss_around_event_{i:03d}"] = plot_loss_around_event(tree, i)
    if n_events and sweep:
        figures["threshold_sweep"] = plot_threshold_sweep(tree)
    paths = []
    for name, fig in figures.items():
        paths += save_figure(fig, out_dir, name, formats)
    return paths
