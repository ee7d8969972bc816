"""Per-task test metrics from predictions of labelled entries (pure numpy).

Regression: ``rmse`` (in the original target units when the dataset gives ``target_scale``) and
``explained_variance`` in percent, ``100 * (1 - Var(y - y_hat) / Var(y))``.
Binary / multiclass: ``accuracy``. Rank: ``ndcg`` (NDCG@k over the task's test items, gains
``2^rating - 1``), ``spearman`` and the rating ``rmse``.

A run gets the metrics that apply to at least one of its task types (:func:`applicable_metrics`);
within a run of mixed types a task's entry is NaN where the metric does not apply to its type.
Each metric's units are declared once, in :data:`METRIC_UNITS`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.stats import spearmanr

METRIC_NAMES = ("rmse", "explained_variance", "accuracy", "ndcg", "spearman")

#: Task types each metric is defined for.
METRIC_TASK_TYPES: dict[str, tuple[str, ...]] = {
    "rmse": ("regression", "rank"),
    "explained_variance": ("regression",),
    "accuracy": ("binary", "multiclass"),
    "ndcg": ("rank",),
    "spearman": ("rank",),
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
}


def applicable_metrics(task_types: Iterable[str]) -> tuple[str, ...]:
    """The metrics (in :data:`METRIC_NAMES` order) defined for at least one of ``task_types``."""
    kinds = set(task_types)
    return tuple(m for m in METRIC_NAMES if kinds.intersection(METRIC_TASK_TYPES[m]))


def metric_units(names: Iterable[str]) -> dict[str, str]:
    """Units of the metrics ``names`` (``"1"`` for one not in :data:`METRIC_UNITS`)."""
    return {n: METRIC_UNITS.get(n, "1") for n in names}


def ndcg_at_k(y_true: np.ndarray, score: np.ndarray, k: int) -> float:
    """NDCG@k of one list: items ranked by ``score``, gains ``2**y_true - 1`` (y shifted to >= 0)."""
    rel = y_true - min(0.0, float(y_true.min()))
    k = min(k, rel.size)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    gains = 2.0 ** rel - 1.0
    dcg = float(np.sum(gains[np.argsort(-score, kind="stable")][:k] * disc))
    ideal = float(np.sum(np.sort(gains)[::-1][:k] * disc))
    return dcg / ideal if ideal > 0 else float("nan")


def task_metrics(pred: np.ndarray, y: np.ndarray, t_idx: np.ndarray, task_types: list[str],
                 n_classes: list[int], *, target_scale: float | np.ndarray = 1.0,
                 ndcg_k: int = 10
                 ) -> dict[str, np.ndarray]:
    """Metrics per task, each an array (n_tasks,): only the :func:`applicable_metrics` of
    ``task_types`` (NaN for a task whose type the metric does not apply to, or that has no test
    entry).

    Parameters
    ----------
    pred : (N, O) predictions for the labelled test entries.
    y : (N,) targets. t_idx : (N,) task of each entry.
    """
    n_tasks = len(task_types)
    scales = np.broadcast_to(np.asarray(target_scale, dtype=float).reshape(-1), (n_tasks,))
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
                out["ndcg"][t] = ndcg_at_k(yt, p[:, 0], ndcg_k)
                if yt.size > 1 and np.ptp(yt) > 0 and np.ptp(p[:, 0]) > 0:
                    out["spearman"][t] = float(spearmanr(yt, p[:, 0]).statistic)
        elif kind == "binary":
            out["accuracy"][t] = float(np.mean((p[:, 0] > 0) == (yt > 0.5)))
        else:
            logits = p[:, : n_classes[t]]
            out["accuracy"][t] = float(np.mean(np.argmax(logits, axis=1) == yt.astype(int)))
    return out


#: Ridge penalties tried by :func:`ridge_baselines` (chosen by leave-one-out CV on training rows).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))


def ridge_baselines(data: object, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> dict[str, float]:
    """Two linear baselines on ``data``'s own train/test split (an ``MTLData`` of regression
    tasks, e.g. School), scored as a run's main metric is: the mean over tasks of
    :func:`task_metrics`' test ``explained_variance``, in percent.

    - ``ridge_per_school``: an independent ridge regression per task (school);
    - ``ridge_pooled``: one ridge regression on every task's training rows, ignoring the task.

    Each penalty is chosen from ``alphas`` by scikit-learn's leave-one-out CV on the training
    rows only.
    """
    from sklearn.linear_model import RidgeCV

    tasks = range(len(data.tasks))
    if any(t.type != "regression" for t in data.tasks):
        raise ValueError(f"ridge_baselines needs regression tasks; {data.name!r} has others")
    x_train, x_test = data.x_train.astype(np.float64), data.x_test.astype(np.float64)
    y_train, y_test = data.y_train.astype(np.float64), data.y_test.astype(np.float64)
    train = [np.flatnonzero(data.m_train[:, t]) for t in tasks]
    test = [np.flatnonzero(data.m_test[:, t]) for t in tasks]
    t_idx = np.concatenate([np.full(r.size, t) for t, r in zip(tasks, test)])
    y = np.concatenate([y_test[r, t] for t, r in zip(tasks, test)])

    def score(predict: list) -> float:
        pred = np.concatenate([predict[t](x_test[r]) for t, r in zip(tasks, test)])[:, None]
        ev = task_metrics(pred, y, t_idx, ["regression"] * len(tasks), [1] * len(tasks))
        return float(np.nanmean(ev["explained_variance"]))

    per_school = [
        RidgeCV(alphas=np.asarray(alphas)).fit(x_train[r], y_train[r, t]).predict
        for t, r in zip(tasks, train)
    ]
    rows = np.concatenate(train)
    cols = np.concatenate([np.full(r.size, t) for t, r in zip(tasks, train)])
    pooled = RidgeCV(alphas=np.asarray(alphas)).fit(x_train[rows], y_train[rows, cols]).predict
    return {"ridge_per_school": score(per_school), "ridge_pooled": score([pooled] * len(tasks))}
