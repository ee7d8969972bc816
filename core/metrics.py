"""Test metrics from predictions of labelled entries (pure numpy): per task, and over the whole
test set.

Per task (:func:`task_metrics`). Regression: ``rmse`` (in the original target units when the
dataset gives ``target_scale``) and ``explained_variance`` in percent,
``100 * (1 - Var(y - y_hat) / Var(y))`` within the task (a constant bias is not penalised).
Binary / multiclass: ``accuracy``. Rank: ``ndcg`` (NDCG@k over the task's test items, gains
``2^rating - 1`` in rating units), ``spearman`` and the rating ``rmse``.

Over the whole test set (:func:`run_metrics`), the definitions the multi-task literature
publishes on School and the Computer survey:

- ``pooled_explained_variance``: ``100 * (1 - SSE / SST)`` over all test entries of the
  regression tasks pooled, SST around the pooled test mean (Bakker & Heskes 2003, JMLR 4;
  Evgeniou & Pontil 2004, KDD, "explained variance" on School). Bias is penalised.
- ``nmse``: normalized MSE, each task's test MSE divided by the variance of its test targets,
  averaged over the regression tasks weighted by their test entries (the nMSE of the MALSAR
  experiments: Chen, Zhou & Ye 2011, KDD; Gong, Ye & Zhang 2012, KDD).
- ``pooled_rmse``: ``sqrt(SSE / N)`` over all test entries of the regression and rank tasks, in
  target units (the Computer survey's rating RMSE: Argyriou, Evgeniou & Pontil 2008, Machine
  Learning 73; Zhang & Yang's survey, Table 1).

A run gets the metrics that apply to at least one of its task types (:func:`applicable_metrics`);
within a run of mixed types a task's entry is NaN where the metric does not apply to its type.
Each metric's units are declared once, in :data:`METRIC_UNITS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.stats import spearmanr

METRIC_NAMES = ("rmse", "explained_variance", "accuracy", "ndcg", "spearman")

#: Metrics computed over the whole test set (one number per run), by :func:`run_metrics`.
RUN_METRIC_NAMES = ("pooled_explained_variance", "nmse", "pooled_rmse")

#: Task types each metric is defined for.
METRIC_TASK_TYPES: dict[str, tuple[str, ...]] = {
    "rmse": ("regression", "rank"),
    "explained_variance": ("regression",),
    "accuracy": ("binary", "multiclass"),
    "ndcg": ("rank",),
    "spearman": ("rank",),
    "pooled_explained_variance": ("regression",),
    "nmse": ("regression",),
    "pooled_rmse": ("regression", "rank"),
}

#: CF units of each metric, the ``units`` attribute of its variable in ``metrics.nc``: percent
#: for ``explained_variance``; ``1`` for the fractions and coefficients (accuracy, NDCG,
#: Spearman's rho) and for ``rmse``, which is in the units of the task's target (exam scores,
#: ratings), which no dataset declares as a CF unit.
METRIC_UNITS: dict[str, str] = {
    "rmse": "1",
    "explained_variance": "%",
    "accuracy": "1",
    "ndcg": "1",
    "spearman": "1",
    "pooled_explained_variance": "%",
    "nmse": "1",
    "pooled_rmse": "1",
}

#: Prefix of the validation split's metrics in ``metrics.nc`` (``val_main``, ``val_nmse``...).
VAL_PREFIX = "val_"

# How tables name each metric, and what they report beside a main metric, are store-level facts
# that analysis/ reads too: core.store.metric_info.


def applicable_metrics(task_types: Iterable[str], names: Iterable[str] = METRIC_NAMES
                       ) -> tuple[str, ...]:
    """The metrics of ``names`` (default: the per-task :data:`METRIC_NAMES`, in that order)
    defined for at least one of ``task_types``."""
    kinds = set(task_types)
    return tuple(m for m in names if kinds.intersection(METRIC_TASK_TYPES[m]))


def metric_units(names: Iterable[str]) -> dict[str, str]:
    """Units of the metrics ``names`` (``"1"`` for one not in :data:`METRIC_UNITS`); a
    ``val_`` prefix (the validation split's value, see :func:`validation_metrics`) keeps the
    metric's units (``val_main`` takes the main metric's: the caller knows which it is)."""
    return {n: METRIC_UNITS.get(n.removeprefix(VAL_PREFIX), "1") for n in names}


def ndcg_at_k(y_true: np.ndarray, score: np.ndarray, k: int) -> float:
    """NDCG@k of one list: items ranked by ``score``, gains ``2**y_true - 1`` (y shifted to >= 0)."""
    rel = y_true - min(0.0, float(y_true.min()))
    k = min(k, rel.size)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    gains = 2.0 ** rel - 1.0
    dcg = float(np.sum(gains[np.argsort(-score, kind="stable")][:k] * disc))
    ideal = float(np.sum(np.sort(gains)[::-1][:k] * disc))
    return dcg / ideal if ideal > 0 else float("nan")


def _per_task(value: float | np.ndarray, n_tasks: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=float).reshape(-1), (n_tasks,))


def task_metrics(pred: np.ndarray, y: np.ndarray, t_idx: np.ndarray, task_types: list[str],
                 n_classes: list[int], *, target_scale: float | np.ndarray = 1.0,
                 target_offset: float | np.ndarray = 0.0, ndcg_k: int = 10
                 ) -> dict[str, np.ndarray]:
    """Metrics per task, each an array (n_tasks,): only the :func:`applicable_metrics` of
    ``task_types`` (NaN for a task whose type the metric does not apply to, or that has no test
    entry).

    Parameters
    ----------
    pred : (N, O) predictions for the labelled test entries.
    y : (N,) targets. t_idx : (N,) task of each entry.
    target_scale, target_offset : float or (n_tasks,)
        Map standardized targets back to their units, ``y * scale + offset`` (RMSE needs the
        scale; NDCG's gains need the rating itself).
    """
    n_tasks = len(task_types)
    scales, offsets = _per_task(target_scale, n_tasks), _per_task(target_offset, n_tasks)
    out = {name: np.full(n_tasks, np.nan) for name in applicable_metrics(task_types)}
    for t, kind in enumerate(task_types):
        sel = t_idx == t
        if not sel.any():
            continue
        p, yt, target_scale = pred[sel], y[sel], float(scales[t])
        if kind in ("regression", "rank"):
            err = (p[:, 0] - yt) * target_scale
            out["rmse"][t] = float(np.sqrt(np.mean(err**2)))
            var = float(np.var(yt * target_scale))
            if kind == "regression" and var > 0:
                out["explained_variance"][t] = 100.0 * (1.0 - float(np.var(err)) / var)
            if kind == "rank":
                out["ndcg"][t] = ndcg_at_k(yt * target_scale + float(offsets[t]), p[:, 0], ndcg_k)
                if yt.size > 1 and np.ptp(yt) > 0 and np.ptp(p[:, 0]) > 0:
                    out["spearman"][t] = float(spearmanr(yt, p[:, 0]).statistic)
        elif kind == "binary":
            out["accuracy"][t] = float(np.mean((p[:, 0] > 0) == (yt > 0.5)))
        else:
            logits = p[:, : n_classes[t]]
            out["accuracy"][t] = float(np.mean(np.argmax(logits, axis=1) == yt.astype(int)))
    return out


def run_metrics(pred: np.ndarray, y: np.ndarray, t_idx: np.ndarray, task_types: list[str], *,
                target_scale: float | np.ndarray = 1.0) -> dict[str, float]:
    """Metrics over the whole test set (see the module docstring for definitions and sources):
    those of :data:`RUN_METRIC_NAMES` that apply to ``task_types``.

    Parameters
    ----------
    pred : (N, O) predictions for the labelled test entries (column 0 is read).
    y : (N,) targets. t_idx : (N,) task of each entry.
    task_types : the type of each task.
    target_scale : float or (n_tasks,)
        Multiplies errors and targets back into target units (variances are offset-free).

    Returns
    -------
    dict of str -> float
        NaN where the metric has no entries (or zero variance).
    """
    n_tasks = len(task_types)
    kinds = np.asarray(task_types, dtype=object)
    scale = _per_task(target_scale, n_tasks)[t_idx] if len(t_idx) else np.zeros(0)
    err = (np.asarray(pred, dtype=np.float64)[:, 0] - y) * scale
    truth = np.asarray(y, dtype=np.float64) * scale
    out: dict[str, float] = {}
    names = applicable_metrics(task_types, RUN_METRIC_NAMES)
    reg = kinds[t_idx] == "regression" if len(t_idx) else np.zeros(0, dtype=bool)
    if "pooled_explained_variance" in names:
        sst = float(np.sum((truth[reg] - truth[reg].mean()) ** 2)) if reg.any() else 0.0
        out["pooled_explained_variance"] = (
            100.0 * (1.0 - float(np.sum(err[reg] ** 2)) / sst) if sst > 0 else float("nan"))
        weighted, count = 0.0, 0
        for t in np.unique(t_idx[reg]):
            sel = t_idx == t
            var = float(np.var(truth[sel]))
            if var > 0:
                weighted += float(np.mean(err[sel] ** 2)) / var * int(sel.sum())
                count += int(sel.sum())
        out["nmse"] = weighted / count if count else float("nan")
    if "pooled_rmse" in names:
        used = np.isin(kinds[t_idx], ("regression", "rank")) if len(t_idx) else reg
        out["pooled_rmse"] = float(np.sqrt(np.mean(err[used] ** 2))) if used.any() else float("nan")
    return {n: out[n] for n in names}


def _target_map(extras: dict, key: str, default: float) -> np.ndarray:
    """``extras["task_<key>"]`` (per task) or ``extras[key]`` (one for all tasks)."""
    return np.asarray(extras.get(f"task_{key}", extras.get(key, default)), dtype=float)


def split_metrics(pred: np.ndarray, data: Any, split: str = "test"
                  ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Metrics per task (:func:`task_metrics`) and over the whole split (:func:`run_metrics`)
    of predictions for every sample and task of one split of ``data`` (an ``MTLData``).

    Parameters
    ----------
    pred : (N, n_tasks, O) predictions for every sample of the split (only labelled entries are
        read), e.g. ``core.evaluation.predict_all``'s.
    split : {"test", "val", "train"}
        Which split's targets and mask to score against.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r}: one of 'train', 'val', 'test'")
    mask, y = getattr(data, f"m_{split}"), getattr(data, f"y_{split}")
    if mask is None:
        raise ValueError(f"{data.name!r} has no {split} split (load it with val_fraction > 0)")
    b_idx, t_idx = np.nonzero(mask)
    p, truth = pred[b_idx, t_idx], y[b_idx, t_idx]
    types = [t.type for t in data.tasks]
    scale = _target_map(data.extras, "target_scale", 1.0)
    per_task = task_metrics(p, truth, t_idx, types, [t.n_classes for t in data.tasks],
                            target_scale=scale,
                            target_offset=_target_map(data.extras, "target_offset", 0.0))
    return per_task, run_metrics(p, truth, t_idx, types, target_scale=scale)


def validation_metrics(pred: np.ndarray, data: Any) -> dict[str, float]:
    """The validation split's figures for choosing settings on (never the test split's):
    every run metric and the mean over tasks of every task metric, prefixed ``val_``, plus
    ``val_main``, the main metric computed as the test split's ``main`` is.

    Parameters
    ----------
    pred : (N_val, n_tasks, O) predictions for every sample of ``data``'s validation split.
    """
    per_task, pooled = split_metrics(pred, data, "val")
    out = {f"{VAL_PREFIX}{k}": v for k, v in pooled.items()}
    for name, values in per_task.items():
        finite = values[np.isfinite(values)]
        out[f"{VAL_PREFIX}{name}"] = float(finite.mean()) if finite.size else float("nan")
    out[f"{VAL_PREFIX}main"] = out.get(f"{VAL_PREFIX}{data.main_metric}", float("nan"))
    return out
