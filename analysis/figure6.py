"""Figure 6, the activation-region study, from activation snapshots only (no torch; the
README's "Analysis from stores" section shows the command).

For runs of different methods (e.g. stl, mtl, ss_similarity) on the same probe samples:

(a) a 2-D embedding (UMAP by default) of the shared representation, coloured by each task's
    label;
(b) per-group saliency heatmaps over the input (image datasets): the mean normalized saliency
    of the group's tasks over the probes;
(c) the numbers, per run and task (:func:`figure6_numbers`):

    - ``saliency_share``: share of a task's saliency inside the region it needs (the image half
      of its digit for mnist_context, the target object's mask for shapes_context), averaged
      over probes; ``region_area`` is the region's share of the pixels (the chance level);
    - ``knn_consistency``: for classification tasks, the share of each probe's k nearest
      neighbours in the representation with the same label; for other tasks the R^2 of the
      leave-one-out k-NN mean;
    - ``probe_score``: cross-validated linear-probe accuracy (logistic regression) or R^2
      (ridge) of the task from the representation.
"""

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

from ..core import store
from .events import RunLike
from .plots import embed_2d, save_figure
from .style import DOUBLE_COLUMN, IMAGE_CMAP, PALETTE, SALIENCY_CMAP, new_figure, styled, wrap_names

__all__ = [
    "draw_figure6",
    "figure6_numbers",
    "knn_consistency",
    "probe_score",
    "read_snapshot",
    "saliency_share",
    "summarize_figure6",
    "write_figure6",
]

CLASSIFICATION = ("binary", "multiclass")


def read_snapshot(run: RunLike, name: str = "final") -> tuple[xr.Dataset, dict]:
    """``(activations dataset, manifest)`` of a run's snapshot ``name``."""
    if isinstance(run, xr.DataTree):
        if "activations" not in run.children or name not in run["activations"].children:
            raise ValueError(f"run {run.attrs.get('run_dir')} has no activation snapshot {name!r}")
        return run["activations"][name].to_dataset().load(), dict(run.attrs)
    manifest = store.read_manifest(run)
    return store.read_activations(store.RunPaths(Path(run)).activations(name)), manifest


def task_representation(snap: xr.Dataset, manifest: dict, task: int) -> np.ndarray:
    """Representation ``(probe, D)`` that task ``task`` reads.

    ``stl`` runs have one trunk per task and their snapshot concatenates the trunks' outputs
    along ``unit`` (task-major, ``n_tasks * D`` units): each task gets its own block. Every
    other method shares one representation.
    """
    rep = snap["representation"].values.astype(np.float64)
    n_tasks, units = snap.sizes["task"], rep.shape[1]
    if manifest.get("method") == "stl" and n_tasks > 1 and units % n_tasks == 0:
        width = units // n_tasks
        return rep[:, task * width : (task + 1) * width]
    return rep


def _region(snap: xr.Dataset, task: int) -> np.ndarray | None:
    """Mask of the region task ``task`` needs: ``(height, width)`` or ``(probe, height,
    width)``; None when the snapshot does not say."""
    region = int(snap["task_region"].values[task]) if "task_region" in snap else 0
    if region < 0:
        return None
    if "region_masks" in snap:
        return snap["region_masks"].values[region]
    if "object_masks" in snap:
        return snap["object_masks"].values
    return None


def saliency_share(snap: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Share of each task's saliency inside its needed region, and the region's pixel share.

    Returns
    -------
    share, area : (T,) float64
        Mean over labelled probes (with nonzero saliency) of ``sum(s * mask) / sum(s)``, and
        the mean share of pixels inside the mask; NaN where the snapshot has no saliency or no
        region for the task.
    """
    n_tasks = snap.sizes["task"]
    share, area = np.full(n_tasks, np.nan), np.full(n_tasks, np.nan)
    if "saliency" not in snap:
        return share, area
    sal = snap["saliency"].values.astype(np.float64)  # (task, probe, h, w)
    labelled = snap["label_mask"].values
    for t in range(n_tasks):
        mask = _region(snap, t)
        if mask is None:
            continue
        mask = np.broadcast_to(mask, sal.shape[1:])
        total = sal[t].sum(axis=(1, 2))
        use = labelled[:, t] & (total > 0)
        if use.any():
            inside = (sal[t] * mask).sum(axis=(1, 2))
            share[t] = float(np.mean(inside[use] / total[use]))
            area[t] = float(np.mean(mask[use].mean(axis=(1, 2))))
    return share, area


def knn_consistency(rep: np.ndarray, y: np.ndarray, classification: bool, k: int = 10) -> float:
    """Label consistency of one task's probes ``rep`` ``(n, D)``, ``y`` ``(n,)`` in the
    representation (module docstring); NaN with fewer than 3 probes."""
    from sklearn.neighbors import NearestNeighbors

    n = rep.shape[0]
    if n < 3:
        return float("nan")
    k = min(k, n - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(rep).kneighbors(rep)
    neigh = idx[:, 1:]  # drop each probe itself (ties may reorder it; it is still excluded)
    neigh = np.where(neigh == np.arange(n)[:, None], idx[:, :1], neigh)
    if classification:
        return float(np.mean(y[neigh] == y[:, None]))
    residual = y - y[neigh].mean(axis=1)
    var = np.var(y)
    return float(1.0 - np.mean(residual**2) / var) if var > 0 else float("nan")


def probe_score(
    rep: np.ndarray, y: np.ndarray, classification: bool, cv: int = 5, seed: int = 0
) -> float:
    """Cross-validated linear-probe accuracy (classification) or R^2 of ``y`` ``(n,)`` from
    ``rep`` ``(n, D)``; NaN when too few samples per class for two folds."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if classification:
        _, counts = np.unique(y, return_counts=True)
        folds = min(cv, int(counts.min())) if counts.size >= 2 else 0
        model = LogisticRegression(max_iter=2000)
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed) if folds >= 2 else None
    else:
        folds = min(cv, y.size)
        model = Ridge(alpha=1.0)
        splitter = KFold(folds, shuffle=True, random_state=seed) if folds >= 2 else None
    if splitter is None:
        return float("nan")
    pipe = make_pipeline(StandardScaler(), model)
    return float(np.mean(cross_val_score(pipe, rep, y, cv=splitter)))


def _run_info(run: RunLike, manifest: dict) -> dict:
    path = run.attrs.get("run_dir") if isinstance(run, xr.DataTree) else os.fspath(run)
    dataset = (manifest.get("dataset") or {}).get("name", "")
    method, seed = manifest.get("method", "?"), manifest.get("seed", -1)
    return {
        "run": str(path),
        "label": f"{method}/seed{seed}",
        "dataset": dataset,
        "method": method,
        "seed": seed,
    }


def _numbers_one(run: RunLike, k: int, cv: int) -> pd.DataFrame:
    snap, manifest = read_snapshot(run)
    types = manifest.get("task_types") or ["regression"] * snap.sizes["task"]
    labels, labelled = snap["labels"].values, snap["label_mask"].values
    regions = snap["task_region"].values if "task_region" in snap else -np.ones(len(types), int)
    share, area = saliency_share(snap)
    info, rows = _run_info(run, manifest), []
    for t, task in enumerate(snap["task"].values):
        cls = types[t] in CLASSIFICATION
        use = labelled[:, t]
        y = labels[use, t].astype(np.int64 if cls else np.float64)
        row = dict(info, task=str(task), task_type=types[t])
        row.update(group=int(snap["assignment"].values[t]), region=int(regions[t]))
        row.update(saliency_share=share[t], region_area=area[t])
        rep = task_representation(snap, manifest, t)[use]
        row.update(knn_consistency=knn_consistency(rep, y, cls, k))
        row.update(probe_score=probe_score(rep, y, cls, cv))
        row.update(probe_metric="accuracy" if cls else "r2")
        rows.append(row)
    return pd.DataFrame(rows)


def figure6_numbers(runs: Sequence[RunLike], *, k: int = 10, cv: int = 5) -> pd.DataFrame:
    """The numbers behind Figure 6: one row per (run, task); columns in the module docstring.

    BLAS/OpenMP run on one thread: the fits are tiny and extra threads cost far more than they
    give (7x slower measured on a busy 2-core machine).
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=1):
        return pd.concat([_numbers_one(run, k, cv) for run in runs], ignore_index=True)


def summarize_figure6(numbers: pd.DataFrame) -> pd.DataFrame:
    """Mean over tasks per run: saliency share (and its chance level), kNN, linear probe."""
    cols = ["saliency_share", "region_area", "knn_consistency", "probe_score"]
    return numbers.groupby(["label", "dataset", "method"], sort=False)[cols].mean().reset_index()


# ----------------------------------------------------------------------------- drawing


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
        shared = manifest.get("method") != "stl"
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
    labels = [_run_info(run, m)["label"] for run, (_, m) in zip(runs, read)]
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
