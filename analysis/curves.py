"""Per-run curves over training steps, drawn from the store alone (matplotlib ``Figure``s).

- :func:`plot_learning_curves`: per-task training loss, with the event steps marked;
- :func:`plot_loss_around_event`: per-task loss just before and after one event, merged tasks
  highlighted (the jump a ``merge=average`` causes);
- :func:`plot_parameter_count`: parameters over steps, from zero, with each drop's size;
- :func:`plot_threshold_sweep`: number of groups against the threshold (counterfactual replay),
  the recorded cut marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .events import RunLike, read_events
from .plots import (
    add_legend,
    event_result,
    event_steps,
    group_ids,
    mark_events,
    run_history,
    run_tree,
)
from .style import (
    DOUBLE_COLUMN,
    PALETTE,
    SINGLE_COLUMN,
    new_figure,
    run_title,
    series_style,
    styled,
)

__all__ = [
    "plot_learning_curves",
    "plot_loss_around_event",
    "plot_parameter_count",
    "plot_threshold_sweep",
]


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
    tree = run_tree(run)
    h = run_history(tree)
    names = [str(t) for t in h["task"].values]
    steps, loss = h["step"].values, h["loss"].values.astype(np.float64)
    events = event_steps(tree)
    k = max(1, int(smooth if smooth is not None else len(steps) // 50))
    curves = _running_mean(loss, steps, events, k) if k > 1 else loss
    fig = new_figure(DOUBLE_COLUMN, 3.0)
    ax = fig.add_subplot()
    groups = np.unique(final := group_ids(h["assignment"].values[-1]))
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
    mark_events(ax, events)
    if np.nanmin(loss, initial=np.inf) > 0:
        ax.set_yscale("log")
    scale = ", log scale" if ax.get_yscale() == "log" else ""
    mean = f"; mean of {k} steps" if k > 1 else ""
    ax.set(xlabel="training step", ylabel=f"training loss\n(per task{mean}{scale})")
    ax.set_xlim(steps[0], steps[-1])
    add_legend(ax, list(handles), "task" if per_task else "final group")
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
    tree = run_tree(run)
    r, meta = event_result(tree, event)
    h = run_history(tree)
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
    add_legend(ax, ax.get_lines(), "task (group after the event)")
    fig.suptitle(
        f"Loss around event {meta['index']} (step {step}, {len(groups)} merged group(s))\n"
        f"{run_title(tree.attrs)}"
    )
    return fig


@styled
def plot_parameter_count(run: RunLike) -> Figure:
    """Trainable parameters over steps, from zero: drops at the events where estimators merged,
    each annotated with its relative change."""
    tree = run_tree(run)
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

    tree = run_tree(run)
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
    add_legend(ax, ax.get_lines(), None)
    fig.suptitle(f"Threshold sweep: {run_title(tree.attrs)}")
    return fig
