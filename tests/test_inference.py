"""Reload a finished run's merged model and predict (issue 10, Done when 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from selective_sharing.core import BranchedModel, load_model, make_config, predict, store, train
from selective_sharing.core.evaluation import entry_metrics
from selective_sharing.core.rundir import load_data
from selective_sharing.datasets import from_arrays
from torch import nn

SMALL = {"train.steps": 60, "warmup_steps": 20, "regroup_every": 10, "patience": 1,
         "samples_per_task": 40}


def _assert_metrics_reproduced(run, pred: np.ndarray, data) -> None:
    stored = store.read_metrics(run)
    recomputed = entry_metrics(pred, data)
    compared = [k for k in recomputed if k in stored]
    assert compared, (sorted(recomputed), sorted(stored.data_vars))
    for key in compared:
        np.testing.assert_array_equal(np.asarray(recomputed[key], dtype=stored[key].dtype),
                                      stored[key].values, err_msg=key)


def test_load_model_and_predict_reproduce_a_merged_runs_test_metrics(tmp_path) -> None:
    cfg = make_config("synthetic", "ss_similarity", 0, overrides=SMALL, out=str(tmp_path / "r"))
    run = train(cfg, progress=False)
    n_groups = int(store.read_metrics(run)["n_groups"])
    assert n_groups < 30  # it merged: the reloaded stacks must have the merged size
    model = load_model(run)
    assert model.n_entities == n_groups and not model.training
    np.testing.assert_array_equal(model.assignment.numpy(),
                                  store.read_metrics(run)["partition"].values)
    data = load_data(cfg, None)
    pred = predict(run, data.x_test)
    assert pred.shape[:2] == (data.x_test.shape[0], data.n_tasks)
    _assert_metrics_reproduced(run, pred, data)
    np.testing.assert_array_equal(predict(model, torch.as_tensor(data.x_test)), pred)


def _toy_data(n_tasks: int = 6):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype("float32")
    w = rng.normal(size=(2, 8))
    targets = {f"t{i}": x @ (w[i % 2] * (1 + 0.1 * i)) + 0.1 * rng.normal(size=400)
               for i in range(n_tasks)}
    return from_arrays(x, targets, task_types="regression", groups=[i % 2 for i in range(n_tasks)])


def _user_model(data) -> BranchedModel:
    torch.manual_seed(5)
    trunk = nn.Sequential(nn.Linear(8, 16), nn.GELU())
    template = nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 6), nn.Tanh())
    return BranchedModel(trunk, template, data.tasks, seed=1)


def test_a_user_model_trains_in_the_harness_and_reloads_from_a_factory(tmp_path) -> None:
    data = _toy_data()
    cfg = make_config("custom", "ss_similarity", 0, out=str(tmp_path / "mine"),
                      overrides={"train.steps": 80, "warmup_steps": 30, "regroup_every": 20})
    mine = _user_model(data)
    run = train(cfg, data=data, model=mine, progress=False)
    signal = mine.signal_parameter()
    assert not signal._backward_hooks, "train() must leave no capture hook on the user's model"
    manifest = store.read_manifest(run)
    assert manifest["status"] == "complete" and len(manifest["events"]) >= 1
    assert manifest["user_model"]["class"] == "BranchedModel"
    assert "GELU" in manifest["user_model"]["trunk"]
    with pytest.raises(ValueError, match=r"trained your own BranchedModel .*pass model="):
        load_model(run)  # a custom trunk cannot be rebuilt from the manifest alone
    model = load_model(run, model=lambda: _user_model(data))
    assert isinstance(model.trunk[1], nn.GELU)
    _assert_metrics_reproduced(run, predict(model, data.x_test), data)


def test_load_model_refuses_unfinished_runs_and_wrong_models(tmp_path) -> None:
    run = tmp_path / "r"
    store.write_manifest(run, {"status": "running", "events": []})
    with pytest.raises(ValueError, match=r"not a finished run \(status 'running'\).*--resume"):
        load_model(run)
    store.update_manifest(run, status="complete")
    with pytest.raises(TypeError, match="invalid model=Linear: load_model needs a BranchedModel"):
        load_model(run, model=nn.Linear(2, 2))
