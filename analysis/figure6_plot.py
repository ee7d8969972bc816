"""Drawing Figure 6 (:func:`draw_figure6`) and writing it with its numbers
(:func:`write_figure6`); the numbers come from :mod:`.figure6`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .events import RunLike
from .figure6 import (
    CLASSIFICATION,
    figure6_numbers,
    read_snapshot,
    run_info,
    summarize_figure6,
    task_representation,
)
from .methods import trunk_per_task
from .plots import embed_2d, save_figure
from .style import DOUBLE_COLUMN, IMAGE_CMAP, PALETTE, SALIENCY_CMAP, new_figure, styled, wrap_names

__all__ = ["draw_figure6", "write_figure6"]


def _common_probes(snaps: list[xr.Dataset]) -> list[xr.Dataset]:
    """Restrict every snapshot to the probes all share (warn when they differ)."""
    common = snaps[0]["probe"].values
    for snap in snaps[1:]:
        common = np.intersect1d(common, snap["probe"].values)
    if any(snap.sizes["probe"] != common.size for snap in snaps):
        warnings.warn(
            f"the runs' probe sets differ; using the {common.size} probes they share",
            stacklevel=3,
        )
        return [snap.sel(probe=common) for snap in snaps]
    return snaps


EMBED_ROW = 1.0  # inches per run in panel (a)
NUMBERS_ROW = 2.3  # inches for panel (c), with its rotated run labels


def _saliency_row(snaps: list[xr.Dataset], max_groups: int) -> float:
    """Inches per run in panel (b): the map at the column's width and the image's aspect, plus
    up to 4 lines of group names above and a colorbar below."""
    cols = min(max_groups, max(int(s["assignment"].values.max()) + 1 for s in snaps))
    height, width = snaps[0]["saliency"].shape[2:]
    return (DOUBLE_COLUMN - 0.5) / max(cols, 4) * height / width + 0.65


def _label_colours(values: np.ndarray) -> dict:
    """Class value -> colour, the same in every panel."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(np.unique(values))}


def _draw_embeddings(fig, snaps, manifests, labels, embedding: str, max_tasks: int) -> None:
    n_tasks = min(max_tasks, snaps[0].sizes["task"])
    axes = fig.subplots(len(snaps), n_tasks, squeeze=False)
    types = manifests[0].get("task_types") or ["regression"] * snaps[0].sizes["task"]
    classes = [types[t] in CLASSIFICATION for t in range(n_tasks)]
    values = np.concatenate([s["labels"].values[:, :n_tasks][:, classes].ravel() for s in snaps])
    colours = _label_colours(values[np.isfinite(values)])
    name = embedding.upper()
    for i, (snap, manifest, label) in enumerate(zip(snaps, manifests, labels)):
        shared = not trunk_per_task(manifest)
        xy = embed_2d(snap["representation"].values, embedding) if shared else None
        for t in range(n_tasks):
            if not shared:  # stl: every task has its own trunk, embed the one it reads
                xy = embed_2d(task_representation(snap, manifest, t), embedding)
            ax, use = axes[i, t], snap["label_mask"].values[:, t]
            y = snap["labels"].values[use, t]
            if classes[t]:
                for v in np.unique(y):
                    pts = xy[use][y == v]
                    ax.scatter(pts[:, 0], pts[:, 1], s=3, color=colours[v], linewidths=0)
            else:
                points = ax.scatter(xy[use, 0], xy[use, 1], c=y, s=3, cmap=IMAGE_CMAP)
                fig.colorbar(points, ax=ax, label="label", shrink=0.8)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(f"{name} 1", fontsize=6, labelpad=1)
            ax.set_ylabel(f"{label}\n{name} 2" if t == 0 else f"{name} 2", fontsize=6, labelpad=1)
            if i == 0:
                ax.set_title(str(snap["task"].values[t]), fontsize=6)
    if colours:
        handles = [
            Line2D([], [], ls="none", marker="o", ms=3, color=c, label=f"label {v:g}")
            for v, c in colours.items()
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    fig.suptitle(
        f"(a) {name} of the shared representation (stl: the task's own trunk), one panel per "
        "task;\npoints (probe samples) coloured by that task's label",
        fontsize=8,
    )


def _group_maps(snap: xr.Dataset) -> list[tuple[list[str], np.ndarray]]:
    """Member names and mean saliency ``(h, w)`` of each group's tasks over the probes, in
    multiples of a uniform map (1 = the pixel's share if saliency were spread evenly)."""
    sal = snap["saliency"].values.astype(np.float64)
    pixels = sal.shape[2] * sal.shape[3]
    sal = pixels * sal / np.maximum(sal.sum(axis=(2, 3), keepdims=True), 1e-300)
    a, names = snap["assignment"].values, [str(t) for t in snap["task"].values]
    out = []
    for g in range(int(a.max()) + 1):
        members = np.flatnonzero(a == g)
        out.append(([names[m] for m in members], sal[members].mean(axis=(0, 1))))
    return out


def _draw_saliency(fig, snaps, labels, max_groups: int) -> None:
    maps = [_group_maps(snap)[:max_groups] for snap in snaps]
    cols = max(len(m) for m in maps)
    axes = fig.subplots(len(snaps), cols, squeeze=False)
    width = max(12, int(100 / cols))  # characters per line of a group's member names
    regions = any("region_masks" in snap for snap in snaps)
    for i, (row, label) in enumerate(zip(maps, labels)):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            image = ax.imshow(row[j][1], cmap=SALIENCY_CMAP, vmin=0)
            bar = fig.colorbar(
                image, ax=ax, orientation="horizontal", fraction=0.12, aspect=15, pad=0.04
            )
            bar.ax.tick_params(labelsize=5, length=2, pad=1)
            bar.ax.locator_params(nbins=3)
            if "region_masks" in snaps[i]:
                for mask in snaps[i]["region_masks"].values:
                    ax.contour(mask, levels=[0.5], colors="c", linewidths=0.6)
            ax.set_title(wrap_names(row[j][0], width), fontsize=5)
        axes[i, 0].set_ylabel(label, fontsize=6)
    handles = []
    if regions:
        handles.append(
            Line2D(
                [],
                [],
                color="c",
                lw=0.8,
                label="border of the regions the\ntasks need (left / right digit)",
            )
        )
    if handles:
        fig.legend(handles=handles, loc="outside lower center")
    fig.suptitle(
        "(b) saliency of each group (its tasks named above the map) over the input, mean over "
        "its tasks and the probes;\ncolour scale: multiples of an even spread (1 = uniform)",
        fontsize=8,
    )


def _draw_numbers(fig, numbers: pd.DataFrame) -> None:
    """Bars: mean over each run's tasks; error bars: standard deviation over its tasks."""
    cols = ["saliency_share", "region_area", "knn_consistency", "probe_score"]
    stats = numbers.groupby("label", sort=False)[cols].agg(["mean", "std"])
    methods = numbers.groupby("label", sort=False)["method"].first()
    order = list(dict.fromkeys(methods))
    colours = [PALETTE[order.index(m) % len(PALETTE)] for m in methods]
    axes = fig.subplots(1, 3)
    names = {
        "saliency_share": "saliency share in\nthe needed region",
        "knn_consistency": "kNN label consistency\n(share of neighbours)",
        "probe_score": "linear probe score\n(accuracy or R^2)",
    }
    x = np.arange(len(stats))
    for ax, (col, ylabel) in zip(axes, names.items()):
        mean, std = stats[(col, "mean")], stats[(col, "std")].fillna(0.0)
        ax.bar(x, mean, yerr=std, color=colours, capsize=2, error_kw={"lw": 0.8})
        steep = len(stats) > 3  # upright labels: 30 degree ones collide beyond 3 runs
        ax.set_xticks(
            x,
            stats.index,
            rotation=90 if steep else 30,
            ha="center" if steep else "right",
            rotation_mode="default" if steep else "anchor",
        )
        ax.set(xlabel="run (method/seed)", ylabel=ylabel)
        if col == "saliency_share" and stats[("region_area", "mean")].notna().any():
            chance = float(stats[("region_area", "mean")].mean())
            ax.axhline(chance, color="k", ls="--", lw=0.8, label=f"chance ({chance:.2f})")
            ax.set_ylim(0, 1.2 * max(1.0, float(np.nanmax(mean + std))))
            ax.legend(loc="upper right")
    fig.suptitle(
        "(c) numbers: bar = mean over the run's tasks, error bar = standard deviation over its "
        "tasks;\nchance = the needed region's share of the pixels",
        fontsize=8,
    )


@styled
def draw_figure6(
    runs: Sequence[RunLike],
    *,
    numbers: pd.DataFrame | None = None,
    embedding: str = "umap",
    max_tasks: int = 8,
    max_groups: int = 8,
) -> Figure:
    """Draw Figure 6 (a, b, c) for ``runs`` (one row per run); (b) only where saliency exists.

    The figure is double-column wide and grows by a fixed height per run, so its fonts keep
    their printed size whatever the number of runs.
    """
    read = [read_snapshot(run) for run in runs]
    snaps = _common_probes([s for s, _ in read])
    labels = [run_info(run, m)["label"] for run, (_, m) in zip(runs, read)]
    if numbers is None:
        numbers = figure6_numbers(runs)
    has_saliency = all("saliency" in s for s in snaps)
    heights = [EMBED_ROW * len(snaps) + 0.6]
    if has_saliency:
        heights.append(_saliency_row(snaps, max_groups) * len(snaps) + 0.6)
    longest = max(len(label) for label in numbers["label"].unique())
    # labels stand upright beyond 3 runs: about 0.06 in per character at 7 pt
    heights.append(NUMBERS_ROW if len(labels) <= 3 else 1.9 + 0.06 * longest)
    fig = new_figure(DOUBLE_COLUMN, sum(heights) + 0.5)
    subs = fig.subfigures(len(heights), 1, height_ratios=heights)
    _draw_embeddings(subs[0], snaps, [m for _, m in read], labels, embedding, max_tasks)
    if has_saliency:
        _draw_saliency(subs[1], snaps, labels, max_groups)
    _draw_numbers(subs[-1], numbers)
    dataset = sorted({(m.get("dataset") or {}).get("name", "?") for _, m in read})
    fig.suptitle(
        f"Figure 6, activation regions on {', '.join(dataset)}: "
        + wrap_names(labels, 90).replace("\n", "\n"),
    )
    return fig


def write_figure6(
    runs: Sequence[RunLike],
    out_dir: str | os.PathLike,
    *,
    embedding: str = "umap",
    formats: Sequence[str] = ("png", "pdf"),
    name: str = "figure6",
) -> dict[str, list[Path]]:
    """Write the figure (``name.png``/``.pdf``) and its numbers (``name.csv`` per task,
    ``name_summary.csv`` per run) into ``out_dir``; returns the paths by kind."""
    numbers = figure6_numbers(runs)
    fig = draw_figure6(runs, numbers=numbers, embedding=embedding)
    out = Path(out_dir)
    paths = {"figure": save_figure(fig, out, name, formats)}
    numbers.to_csv(out / f"{name}.csv", index=False)
    summarize_figure6(numbers).to_csv(out / f"{name}_summary.csv", index=False)
    paths["csv"] = [out / f"{name}.csv", out / f"{name}_summary.csv"]
    return paths
