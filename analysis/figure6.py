"""Figure 6, the activation-region study, from activation snapshots only (DESIGN section 6).

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

from ..core import store
from .events import RunLike
from .plots import embed_2d, save_figure

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


def _draw_embeddings(fig, snaps, manifests, labels, embedding: str, max_tasks: int) -> None:
    n_tasks = min(max_tasks, snaps[0].sizes["task"])
    axes = fig.subplots(len(snaps), n_tasks, squeeze=False)
    for i, (snap, manifest, label) in enumerate(zip(snaps, manifests, labels)):
        shared = manifest.get("method") != "stl"
        xy = embed_2d(snap["representation"].values, embedding) if shared else None
        for t in range(n_tasks):
            if not shared:  # stl: every task has its own trunk, embed the one it reads
                xy = embed_2d(task_representation(snap, manifest, t), embedding)
            ax, use = axes[i, t], snap["label_mask"].values[:, t]
            colour = snap["labels"].values[use, t]
            ax.scatter(xy[use, 0], xy[use, 1], c=colour, s=4, cmap="coolwarm", linewidths=0)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(str(snap["task"].values[t]), fontsize=7)
        axes[i, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(
        f"(a) {embedding.upper()} of the shared representation (stl: the task's own trunk), "
        "coloured by each task's label",
        fontsize=9,
    )


def _group_maps(snap: xr.Dataset) -> list[tuple[str, np.ndarray]]:
    """Mean normalized saliency ``(h, w)`` of each group's tasks over the probes."""
    sal = snap["saliency"].values.astype(np.float64)
    sal = sal / np.maximum(sal.sum(axis=(2, 3), keepdims=True), 1e-300)
    a, names = snap["assignment"].values, [str(t) for t in snap["task"].values]
    out = []
    for g in range(int(a.max()) + 1):
        members = np.flatnonzero(a == g)
        title = names[members[0]] + (f" +{members.size - 1}" if members.size > 1 else "")
        out.append((title, sal[members].mean(axis=(0, 1))))
    return out


def _draw_saliency(fig, snaps, labels, max_groups: int) -> None:
    maps = [_group_maps(snap)[:max_groups] for snap in snaps]
    cols = max(len(m) for m in maps)
    axes = fig.subplots(len(snaps), cols, squeeze=False)
    for i, (row, label) in enumerate(zip(maps, labels)):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            ax.imshow(row[j][1], cmap="magma")
            if "region_masks" in snaps[i]:
                for mask in snaps[i]["region_masks"].values:
                    ax.contour(mask, levels=[0.5], colors="c", linewidths=0.5)
            ax.set_title(row[j][0], fontsize=6)
        axes[i, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(
        "(b) per-group saliency over the input (mean over the group's tasks and the probes)",
        fontsize=9,
    )


def _draw_numbers(fig, summary: pd.DataFrame) -> None:
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(top=0.78, bottom=0.18)
    names = {
        "saliency_share": "saliency in needed region",
        "knn_consistency": "kNN label consistency",
        "probe_score": "linear probe (acc. / R^2)",
    }
    for ax, (col, title) in zip(axes, names.items()):
        ax.bar(summary["label"], summary[col], color="0.5")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
        if col == "saliency_share" and summary["region_area"].notna().any():
            ax.axhline(summary["region_area"].mean(), color="r", ls="--", lw=0.8)
    fig.suptitle("(c) mean over tasks (red dashes: chance, the region's pixel share)", fontsize=9)


def draw_figure6(
    runs: Sequence[RunLike],
    *,
    numbers: pd.DataFrame | None = None,
    embedding: str = "umap",
    max_tasks: int = 8,
    max_groups: int = 8,
) -> Figure:
    """Draw Figure 6 (a, b, c) for ``runs`` (one row per run); (b) only where saliency exists."""
    read = [read_snapshot(run) for run in runs]
    snaps = _common_probes([s for s, _ in read])
    labels = [_run_info(run, m)["label"] for run, (_, m) in zip(runs, read)]
    if numbers is None:
        numbers = figure6_numbers(runs)
    has_saliency = all("saliency" in s for s in snaps)
    parts = [len(snaps), len(snaps)] if has_saliency else [len(snaps)]
    fig = Figure(figsize=(1.6 * max(max_tasks, 4), 1.5 * sum(parts) + 3.0))
    subs = fig.subfigures(len(parts) + 1, 1, height_ratios=[*parts, 1.6])
    _draw_embeddings(subs[0], snaps, [m for _, m in read], labels, embedding, max_tasks)
    if has_saliency:
        _draw_saliency(subs[1], snaps, labels, max_groups)
    _draw_numbers(subs[-1], summarize_figure6(numbers))
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
