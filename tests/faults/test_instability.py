"""Training instability (issue 7, item 3): a non-finite loss mid-run stops the run with status
``failed``; every event before it is kept (identical to the uninterrupted run's), and the run
can be resumed from its last checkpoint to the reference result."""

from __future__ import annotations

import math

import numpy as np
import pytest
import selective_sharing.core.trainer as train_module
import torch
from selective_sharing.core import store
from selective_sharing.core.checkpoint import load_checkpoint
from selective_sharing.core.rundir import load_data
from selective_sharing.core.training import Trainer, TrainingError

from .conftest import (
    assert_matches_reference,
    check_visible_state,
    tiny_config,
    train_tiny,
)

TASK = 5  # the poisoned task


class PoisonHead:
    """Callback: once ``after`` events are done, task ``task``'s head outputs ``value``."""

    def __init__(self, after: int, task: int, value: float):
        self.after, self.task, self.value = after, task, value

    def on_event(self, trainer, result) -> None:
        if trainer.n_events == self.after:
            with torch.no_grad():
                trainer.model.head_bias[self.task] = self.value


@pytest.mark.parametrize(
    "value", [math.nan, pytest.param(math.inf, marks=pytest.mark.slow)], ids=["nan", "inf"]
)
def test_non_finite_loss_fails_the_run_and_keeps_every_earlier_event(
    value, reference, tmp_path
) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"non-finite loss at step 30 for task 'task_05'"):
        train_tiny(run, callbacks=[PoisonHead(2, TASK, value)])
    manifest = check_visible_state(run, reference, ("failed",))
    assert manifest["events"] == ["event_000000.nc", "event_000001.nc"]
    assert manifest["error"].startswith("TrainingError: non-finite loss at step 30")
    # the checkpoint and history of event 1 (step 30) are intact and clean
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 30
    store_history = store.read_history(run)
    assert store_history.sizes["step"] == 30
    assert np.isfinite(store_history["grad_norm"].values).all()
    train_tiny(run, resume=True)  # the poison is gone: the run completes as if never hit
    assert_matches_reference(run, reference)


def test_nan_loss_between_events_loses_only_the_open_window(
    reference, tmp_path, monkeypatch
) -> None:
    run = tmp_path / "run"
    real, calls = train_module.entry_losses, [0]

    def task_losses(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 38:  # step 37, in the window of event 2 (step 40)
            losses = losses.clone()
            losses[TASK] = math.nan
        return losses

    monkeypatch.setattr(train_module, "entry_losses", task_losses)
    with pytest.raises(
        TrainingError, match=r"non-finite loss at step 37 for task 'task_05' \(loss=nan\)"
    ):
        train_tiny(run)
    manifest = check_visible_state(run, reference, ("failed",))
    assert [p.name for p in store.list_events(run)] == manifest["events"]
    assert manifest["events"] == ["event_000000.nc", "event_000001.nc"]
    assert not list(run.glob("metrics.nc")) and not list(run.glob("activations/*.nc"))


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_loss_error_names_the_step_and_the_task(value, tmp_path) -> None:
    cfg = tiny_config(tmp_path / "run")
    data = load_data(cfg, None)
    trainer = Trainer(cfg, data)
    trainer._step()
    trainer._step()
    with torch.no_grad():
        trainer.model.head_bias[TASK] = value
    name = data.task_names[TASK]
    with pytest.raises(
        TrainingError, match=rf"non-finite loss at step 2 for task '{name}' \(loss={value}\)"
    ):
        trainer._step()
