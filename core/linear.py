"""Linear baselines for regression data, stored as runs so that Table 2 reads them like any other.

Three ridge regressions on the dataset's inputs (pure numpy, closed form through one SVD per fit):

- ``ridge_per_task``: an independent ridge regression per task, with its own unpenalized
  intercept (one penalty shared by all tasks);
- ``ridge_pooled``: one ridge regression on every task's labelled training rows, ignoring the
  task (one unpenalized intercept);
- ``ridge_pooled_intercept``: one shared weight vector plus an unpenalized intercept per task
  (fixed task effects: inputs and targets are centred within each task before the pooled fit).

Protocol (the one the deep runs are scored with): the dataset is loaded with a validation split
carved out of its training part (:data:`VAL_FRACTION`); each penalty is chosen from
:data:`RIDGE_ALPHAS` by the validation MSE of a fit on the remaining training rows; the chosen
penalty is refitted on the whole training part (train + validation: exactly the rows the deep
runs train on, see ``MTLData.merged_validation``), and only that fit touches the test split,
scored by :func:`~.metrics.split_metrics` (the same per-task and pooled metrics as a run's
``metrics.nc``). Rank tasks (the Computer survey) are fitted to their ratings.

:func:`write_linear_run` writes ``manifest.json`` (``trained_by="linear_baseline"``) and
``metrics.nc`` into ``runs/<dataset>/<method>/seed<k>/``, the layout of the grid.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import store
from .metrics import metric_units, split_metrics

LINEAR_METHODS = ("ridge_per_task", "ridge_pooled", "ridge_pooled_intercept")
#: Penalties tried (on features as the loader gives them, targets standardized).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
#: Share of each task's training rows held out to choose the penalty.
VAL_FRACTION = 0.2
LINEAR_TASK_TYPES = ("regression", "rank")


class LinearBaselineError(ValueError):
    """The data does not suit the linear baselines (the message says why and what to do)."""


@dataclass(frozen=True)
class LinearFit:
    """One baseline fitted and scored.

    Attributes
    ----------
    method : str
        One of :data:`LINEAR_METHODS`.
    alpha : float
        The penalty chosen on the validation split.
    val_mse : dict of float -> float
        Validation MSE (standardized target units, pooled over tasks) of every penalty tried.
    task_metrics, run_metrics : dict
        Test metrics per task and over the whole test split.
    n_parameters, n_groups : int
        Fitted coefficients (weights and intercepts) and the number of distinct weight vectors.
    assignment : (T,) int64
        Which weight vector each task uses.
    wall_time_s : float
        Seconds to choose and fit.
    """

    method: str
    alpha: float
    val_mse: dict[float, float]
    task_metrics: dict[str, np.ndarray]
    run_metrics: dict[str, float]
    n_parameters: int
    n_groups: int
    assignment: np.ndarray
    wall_time_s: float


def _rows(x: np.ndarray, y: np.ndarray, m: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(m[:, t])
    return x[rows].reshape(len(rows), -1).astype(np.float64), y[rows, t].astype(np.float64)


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(A, F)`` and intercepts ``(A,)`` of ridge fits with an unpenalized intercept,
    one per penalty, from one SVD of the centred inputs."""
    x_mean, y_mean = x.mean(axis=0), y.mean()
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uy = u.T @ (y - y_mean)
    shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (A, k)
    w = (shrink * uy[None, :]) @ vt
    return w, y_mean - w @ x_mean


def _stacked(x: np.ndarray, y: np.ndarray, m: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every labelled (sample, task) entry: inputs ``(N, F)``, targets ``(N,)``, tasks ``(N,)``."""
    b_idx, t_idx = np.nonzero(m)
    return (x[b_idx].reshape(len(b_idx), -1).astype(np.float64),
            y[b_idx, t_idx].astype(np.float64), t_idx)


def _task_means(x: np.ndarray, y: np.ndarray, t_idx: np.ndarray, n_tasks: int
                ) -> tuple[np.ndarray, np.ndarray]:
    counts = np.maximum(np.bincount(t_idx, minlength=n_tasks), 1)
    x_mean = np.zeros((n_tasks, x.shape[1]))
    np.add.at(x_mean, t_idx, x)
    return x_mean / counts[:, None], np.bincount(t_idx, weights=y, minlength=n_tasks) / counts


class _Fitter:
    """Fits one baseline for every penalty at once; ``predict(x, alpha_index)`` gives
    ``(N, T)`` predictions of every task on inputs ``x``."""

    def __init__(self, method: str, x: np.ndarray, y: np.ndarray, m: np.ndarray,
                 alphas: np.ndarray) -> None:
        self.method, self.n_tasks = method, m.shape[1]
        if method == "ridge_per_task":
            fits = [_ridge_path(*_rows(x, y, m, t), alphas) for t in range(self.n_tasks)]
            self.w = np.stack([f[0] for f in fits], axis=1)  # (A, T, F)
            self.b = np.stack([f[1] for f in fits], axis=1)  # (A, T)
            return
        xs, ys, t_idx = _stacked(x, y, m)
        if method == "ridge_pooled":
            w, b = _ridge_path(xs, ys, alphas)
            self.w = np.repeat(w[:, None, :], self.n_tasks, axis=1)
            self.b = np.repeat(b[:, None], self.n_tasks, axis=1)
            return
        x_mean, y_mean = _task_means(xs, ys, t_idx, self.n_tasks)
        w, _ = _ridge_path(xs - x_mean[t_idx], ys - y_mean[t_idx], alphas)
        self.w = np.repeat(w[:, None, :], self.n_tasks, axis=1)
        self.b = y_mean[None, :] - np.einsum("af,tf->at", w, x_mean)

    def predict(self, x: np.ndarray, a: int) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        return flat @ self.w[a].T + self.b[a][None, :]

    def size(self, n_features: int) -> tuple[int, int, np.ndarray]:
        """Parameters, distinct weight vectors, and each task's weight vector."""
        t = self.n_tasks
        if self.method == "ridge_per_task":
            return t * (n_features + 1), t, np.arange(t, dtype=np.int64)
        extra = 1 if self.method == "ridge_pooled" else t
        return n_features + extra, 1, np.zeros(t, dtype=np.int64)


def _val_mse(fitter: _Fitter, data: Any, a: int) -> float:
    b_idx, t_idx = np.nonzero(data.m_val)
    pred = fitter.predict(data.x_val, a)
    return float(np.mean((pred[b_idx, t_idx] - data.y_val[b_idx, t_idx]) ** 2))


def check_linear_data(data: Any) -> None:
    """Raise :class:`LinearBaselineError` unless ``data`` suits the linear baselines: in-memory
    arrays of regression or rank tasks, with a validation split."""
    if getattr(data, "streamed", False):
        raise LinearBaselineError(f"{data.name!r} is streamed; the linear baselines need arrays")
    others = sorted({t.type for t in data.tasks} - set(LINEAR_TASK_TYPES))
    if others:
        raise LinearBaselineError(
            f"{data.name!r} has {'/'.join(others)} tasks; the linear baselines fit "
            f"{' and '.join(LINEAR_TASK_TYPES)} targets only")
    if getattr(data, "m_val", None) is None or not np.any(data.m_val):
        raise LinearBaselineError(
            f"{data.name!r} has no validation split to choose the penalty on; load it with "
            f"val_fraction > 0 (e.g. val_fraction={VAL_FRACTION})")


def fit_linear(data: Any, method: str, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> LinearFit:
    """Choose ``method``'s penalty on ``data``'s validation split, refit on train + validation,
    score on the test split (see the module docstring).

    Parameters
    ----------
    data : MTLData
        Regression or rank tasks, loaded with ``val_fraction > 0``.
    method : str
        One of :data:`LINEAR_METHODS`.
    alphas : tuple of float
        Penalties to choose from.
    """
    if method not in LINEAR_METHODS:
        raise LinearBaselineError(f"method={method!r}: one of {LINEAR_METHODS}")
    check_linear_data(data)
    start = time.perf_counter()
    grid = np.asarray(alphas, dtype=np.float64)
    chooser = _Fitter(method, data.x_train, data.y_train, data.m_train, grid)
    val_mse = {float(a): _val_mse(chooser, data, i) for i, a in enumerate(grid)}
    best = int(np.argmin(list(val_mse.values())))  # the smallest penalty among equal MSEs
    whole = data.merged_validation()
    final = _Fitter(method, whole.x_train, whole.y_train, whole.m_train, grid[best:best + 1])
    pred = final.predict(data.x_test, 0)[:, :, None]
    per_task, pooled = split_metrics(pred, data, "test")
    n_params, n_groups, assignment = final.size(int(np.prod(data.input_shape)))
    return LinearFit(method, float(grid[best]), val_mse, per_task, pooled, n_params, n_groups,
                     assignment, time.perf_counter() - start)


def write_linear_run(run_dir: str | os.PathLike, data: Any, fit: LinearFit, *, seed: int,
                     profile: str, dataset: str | None = None,
                     data_config: dict[str, Any] | None = None) -> Path:
    """Store ``fit`` as a complete run in ``run_dir``: ``manifest.json`` (``trained_by`` is
    ``"linear_baseline"``, with the penalty grid, the chosen penalty, the validation MSEs and
    ``data_config``, how the data was loaded) and ``metrics.nc`` (the test metrics, as a trained
    run's). Returns ``run_dir``."""
    from .rundir import versions_and_revision

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = dataset or str(data.provenance.get("name", data.name))
    groups = None if data.groups is None else [int(g) for g in data.groups]
    manifest = {
        "status": "running", "method": fit.method, "seed": int(seed), "profile": profile,
        "dataset": dict(data.provenance), "task_names": data.task_names,
        "task_types": [t.type for t in data.tasks], "true_groups": groups,
        "main_metric": data.main_metric, "trained_by": "linear_baseline",
        "linear": {"alphas": list(fit.val_mse), "alpha": fit.alpha,
                   "val_mse": list(fit.val_mse.values()), "val_fraction": VAL_FRACTION,
                   "refit_on": "train + validation"},
        "data_config": data_config,
        **versions_and_revision(), "error": None,
    }
    store.write_manifest(run_dir, manifest)
    main = data.main_metric
    task = dict(fit.task_metrics)
    if main not in task and main not in fit.run_metrics:
        task[main] = np.full(data.n_tasks, np.nan)
    ds = store.encode_metrics(
        task_names=data.task_names, task_metrics=task, run_metrics=fit.run_metrics,
        metric_units=metric_units([*task, *fit.run_metrics]), method=fit.method, seed=int(seed),
        dataset=name, main_metric=main, n_parameters=fit.n_parameters,
        n_parameters_estimators=fit.n_parameters, n_groups=fit.n_groups,
        assignment=fit.assignment, wall_time_s=fit.wall_time_s, backward_passes=0,
        forward_passes=0, steps=0, adjusted_rand_index=_ari(data.groups, fit.assignment),
        variant=str(data.provenance.get("variant", "real")))
    store.write_metrics(run_dir, ds)
    store.update_manifest(run_dir, status="complete")
    return run_dir


def _ari(groups: Any, assignment: np.ndarray) -> float | None:
    if groups is None:
        return None
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(groups), assignment))


def linear_applies(data: Any) -> bool:
    """Whether ``data``'s tasks are all regression or rank (the linear baselines' domain)."""
    return not getattr(data, "streamed", False) and all(
        t.type in LINEAR_TASK_TYPES for t in data.tasks)


__all__ = ["LINEAR_METHODS", "LinearBaselineError", "LinearFit", "RIDGE_ALPHAS", "VAL_FRACTION",
           "check_linear_data", "fit_linear", "linear_applies", "write_linear_run"]
