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

This module computes the numbers; :mod:`.figure6_plot` draws the figure and writes the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..core import store
from .events import RunLike
from .methods import trunk_per_task

__all__ = [
    "figure6_numbers",
    "knn_consistency",
    "probe_score",
    "read_snapshot",
    "run_info",
    "saliency_share",
    "summarize_figure6",
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
    if trunk_per_task(manifest) and n_tasks > 1 and units % n_tasks == 0:
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


def run_info(run: RunLike, manifest: dict) -> dict:
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
    info, rows = run_info(run, manifest), []
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
