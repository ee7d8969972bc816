"""Evaluation of a trained run: test predictions, per-task metrics, and the run's closing write.

:func:`predict_all` is the one prediction path (the stored test metrics and
:func:`~.inference.predict` both use it); :func:`finish_run` evaluates the final model and
writes ``metrics.nc``, the history, the last checkpoint and the status ``complete``, in that
order, so a run marked complete always has all of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import store
from .checkpoint import save_checkpoint
from .metrics import metric_units, task_metrics


@torch.no_grad()
def predict_all(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    """Every task's output on every sample, (N, n_tasks, O), in eval mode, ``batch`` at a time.
    The one prediction path: the stored test metrics and :func:`~.inference.predict` use it."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = [model(torch.as_tensor(x[s:s + batch]).to(device)).cpu().numpy()
               for s in range(0, x.shape[0], batch)]
    finally:
        model.train(was_training)
    return np.concatenate(out)


def entry_metrics(pred: np.ndarray, data: Any) -> dict[str, np.ndarray]:
    """Test metrics per task from ``predict_all``'s (N, n_tasks, O) on ``data``'s test split."""
    b_idx, t_idx = np.nonzero(data.m_test)
    scale = np.asarray(data.extras.get("task_target_scale",
                                       data.extras.get("target_scale", 1.0)), dtype=float)
    return task_metrics(pred[b_idx, t_idx], data.y_test[b_idx, t_idx], t_idx,
                        [t.type for t in data.tasks], [t.n_classes for t in data.tasks],
                        target_scale=scale)


def evaluate(trainer: Any) -> dict[str, np.ndarray]:
    """Test metrics per task of the trainer's model: in-memory test inputs are predicted in
    batches of ``train.eval_batch_size``; a streamed test split is read through a DataLoader."""
    data, batch = trainer.data, trainer.cfg.train.eval_batch_size
    if getattr(data, "streamed", False):
        from .data import predict_items

        pred = predict_items(trainer.model, data.test, batch, trainer.cfg.train.num_workers)
    else:
        pred = predict_all(trainer.model, data.x_test, batch)
    return entry_metrics(pred, data)


def adjusted_rand(groups: Any, assignment: np.ndarray) -> float | None:
    """Adjusted Rand index of the final partition against the true groups (None without)."""
    if groups is None:
        return None
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(groups), assignment))


def finish_run(trainer: Any) -> None:
    """Evaluate the trained model and close the run: metrics, history, checkpoint, status."""
    data = trainer.data
    trainer.flush()  # the events and checkpoints still queued, before the run is closed
    n_params, n_est = trainer.model.count_parameters()
    metrics = evaluate(trainer)  # only the metrics that apply to the run's task types
    if data.main_metric not in metrics:  # a main metric no task type has: NaN, as it was
        metrics[data.main_metric] = np.full(len(data.task_names), np.nan)
    ds = store.encode_metrics(
        task_names=data.task_names, task_metrics=metrics, metric_units=metric_units(metrics),
        method=trainer.cfg.method, seed=trainer.cfg.seed,
        dataset=str(data.provenance.get("name", data.name)),
        main_metric=data.main_metric, n_parameters=n_params, n_parameters_estimators=n_est,
        n_groups=int(trainer.assignment.max()) + 1, assignment=trainer.assignment,
        wall_time_s=float(trainer.counters["wall_time_s"]),
        backward_passes=int(trainer.counters["backward_passes"]),
        forward_passes=int(trainer.counters["forward_passes"]), steps=trainer.step,
        adjusted_rand_index=adjusted_rand(data.groups, trainer.assignment),
        variant=str(data.provenance.get("variant", "real")))
    store.write_metrics(trainer.paths.run_dir, ds)
    trainer.write_history()
    save_checkpoint(trainer.paths.checkpoint, trainer.state_dict())
    store.update_manifest(trainer.paths.run_dir, status="complete")
    store.remove_history_parts(trainer.paths.run_dir)  # history.nc holds them all now
