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
from .metrics import metric_units, split_metrics, validation_metrics


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
    return split_metrics(pred, data, "test")[0]


def _predict_split(trainer: Any, split: str) -> np.ndarray:
    """Every task's output on every sample of ``split``: in-memory inputs in batches of
    ``train.eval_batch_size``; a streamed split through a DataLoader."""
    data, batch = trainer.data, trainer.cfg.train.eval_batch_size
    if getattr(data, "streamed", False):
        from .data import predict_items

        return predict_items(trainer.model, getattr(data, split), batch,
                             trainer.cfg.train.num_workers)
    return predict_all(trainer.model, getattr(data, f"x_{split}"), batch)


def evaluate(trainer: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Test metrics of the trainer's model, per task and over the whole test split; with a
    validation split (``val_fraction > 0``) the run metrics also hold its ``val_`` figures
    (:func:`~.metrics.validation_metrics`), which is what settings are chosen on."""
    per_task, pooled = split_metrics(_predict_split(trainer, "test"), trainer.data, "test")
    if getattr(trainer.data, "has_validation", False):
        pooled.update(validation_metrics(_predict_split(trainer, "val"), trainer.data))
    return per_task, pooled


def adjusted_rand(groups: Any, assignment: np.ndarray) -> float | None:
    """Adjusted Rand index of the final partition against the true groups (None without)."""
    if groups is None:
        return None
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(groups), assignment))


def _units(per_task: dict, pooled: dict, main: str) -> dict[str, str]:
    units = metric_units([*per_task, *pooled])
    if "val_main" in units:
        units["val_main"] = metric_units([main])[main]
    return units


def finish_run(trainer: Any) -> None:
    """Evaluate the trained model and close the run: metrics, history, checkpoint, status."""
    data = trainer.data
    trainer.flush()  # the events and checkpoints still queued, before the run is closed
    n_params, n_est = trainer.model.count_parameters()
    metrics, pooled = evaluate(trainer)  # only the metrics that apply to the task types
    if data.main_metric not in metrics and data.main_metric not in pooled:
        metrics[data.main_metric] = np.full(len(data.task_names), np.nan)  # none applies: NaN
    ds = store.encode_metrics(
        task_names=data.task_names, task_metrics=metrics, run_metrics=pooled,
        metric_units=_units(metrics, pooled, data.main_metric),
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
