"""The literature's metrics over the whole test set (School's pooled explained variance and nMSE,
the Computer survey's pooled rating RMSE), their storage in metrics.nc, and the table's use."""

from __future__ import annotations

import numpy as np
import pytest

from selective_sharing.core import store
from selective_sharing.core.store.metric_info import COMPANION_METRICS
from selective_sharing.core.metrics import (
    METRIC_UNITS,
    run_metrics,
    task_metrics,
)


def _school_like(seed: int = 0):
    rng = np.random.default_rng(seed)
    t_idx = np.repeat(np.arange(3), [5, 8, 4])
    y = rng.normal(size=t_idx.size) + t_idx  # task means differ
    pred = (y + rng.normal(0, 0.5, size=y.size) + 0.3)[:, None]  # biased predictions
    return pred, y, t_idx


def test_pooled_explained_variance_is_one_minus_sse_over_sst_in_percent():
    pred, y, t_idx = _school_like()
    out = run_metrics(pred, y, t_idx, ["regression"] * 3, target_scale=2.0)
    err = (pred[:, 0] - y) * 2.0
    sst = np.sum((2.0 * y - np.mean(2.0 * y)) ** 2)
    assert out["pooled_explained_variance"] == pytest.approx(100 * (1 - np.sum(err**2) / sst))
    assert METRIC_UNITS["pooled_explained_variance"] == "%"
    # the scale cancels: a dimensionless ratio
    assert run_metrics(pred, y, t_idx, ["regression"] * 3)["pooled_explained_variance"] == (
        pytest.approx(out["pooled_explained_variance"]))


def test_pooled_explained_variance_penalises_a_bias_the_per_task_one_ignores():
    pred, y, t_idx = _school_like()
    shifted = pred + 5.0
    per_task = task_metrics(pred, y, t_idx, ["regression"] * 3, [1] * 3)["explained_variance"]
    per_task_shifted = task_metrics(shifted, y, t_idx, ["regression"] * 3,
                                    [1] * 3)["explained_variance"]
    np.testing.assert_allclose(per_task, per_task_shifted)  # the old metric: blind to bias
    pooled = run_metrics(pred, y, t_idx, ["regression"] * 3)["pooled_explained_variance"]
    pooled_shifted = run_metrics(shifted, y, t_idx, ["regression"] * 3)["pooled_explained_variance"]
    assert pooled_shifted < pooled - 100


def test_nmse_is_the_test_size_weighted_mean_of_mse_over_target_variance():
    pred, y, t_idx = _school_like(1)
    out = run_metrics(pred, y, t_idx, ["regression"] * 3)
    by_task = [(np.mean((pred[t_idx == t, 0] - y[t_idx == t]) ** 2) / np.var(y[t_idx == t]),
                np.sum(t_idx == t)) for t in range(3)]
    expected = sum(v * n for v, n in by_task) / sum(n for _, n in by_task)
    assert out["nmse"] == pytest.approx(expected)


def test_pooled_rmse_covers_rank_and_regression_tasks_in_target_units():
    pred, y, t_idx = _school_like(2)
    out = run_metrics(pred, y, t_idx, ["rank", "rank", "binary"], target_scale=[2.0, 2.0, 1.0])
    used = t_idx < 2
    expected = np.sqrt(np.mean(((pred[used, 0] - y[used]) * 2.0) ** 2))
    assert set(out) == {"pooled_rmse"}
    assert out["pooled_rmse"] == pytest.approx(expected)


def test_classification_runs_have_no_run_metrics():
    pred, y, t_idx = _school_like()
    assert run_metrics(pred, (y > 1).astype(float), t_idx, ["binary"] * 3) == {}


def test_ndcg_gains_use_the_rating_in_its_own_units():
    """Standardized ratings must be mapped back before the 2^rating - 1 gains."""
    ratings = np.array([0.0, 3.0, 7.0, 10.0, 5.0])
    score = np.array([[0.1], [0.5], [0.2], [0.9], [0.3]])
    t_idx = np.zeros(5, dtype=int)
    raw = task_metrics(score, ratings, t_idx, ["rank"], [1])["ndcg"][0]
    offset, scale = ratings.mean(), ratings.std()
    standardized = task_metrics(score, (ratings - offset) / scale, t_idx, ["rank"], [1],
                                target_scale=scale, target_offset=offset)["ndcg"][0]
    assert standardized == pytest.approx(raw)


def _metrics_record(run: dict | None, main: str):
    t = 3
    return dict(task_names=("a", "b", "c"),
                task_metrics={"rmse": np.array([1.0, 2.0, np.nan]),
                              "explained_variance": np.array([10.0, 20.0, 30.0])},
                run_metrics=run, metric_units={"rmse": "1", "explained_variance": "%",
                                               "pooled_explained_variance": "%", "nmse": "1"},
                main_metric=main, n_parameters=10, n_parameters_estimators=5, n_groups=2,
                assignment=np.array([0, 0, 1]), wall_time_s=1.5, backward_passes=t,
                forward_passes=t, steps=3, adjusted_rand_index=None, variant="real",
                method="mtl", seed=0, dataset="school")


def test_run_metrics_round_trip_and_set_main(tmp_path):
    run = {"pooled_explained_variance": 37.5, "nmse": 0.61}
    ds = store.encode_metrics(**_metrics_record(run, "pooled_explained_variance"))
    assert float(ds["main"]) == 37.5 and ds["main"].attrs["units"] == "%"
    assert ds["nmse"].attrs["role"] == "run_metric" and ds["nmse"].dims == ()
    store.write_metrics(tmp_path, ds)
    back = store.decode(store.read_metrics(tmp_path))
    assert dict(back.run_metrics) == run
    assert back == store.decode(ds)
    # a task metric as main: still the NaN-ignoring mean over tasks
    assert float(store.encode_metrics(**_metrics_record(run, "rmse"))["main"]) == 1.5


def test_files_without_run_metrics_decode_as_before():
    ds = store.encode_metrics(**_metrics_record(None, "rmse"))
    assert store.decode(ds).run_metrics is None


def test_a_main_metric_that_is_neither_kind_is_refused():
    with pytest.raises(ValueError, match="main_metric='pooled_rmse' must be one of"):
        store.encode_metrics(**_metrics_record({"nmse": 0.5}, "pooled_rmse"))


def test_a_name_both_task_and_run_metric_is_refused():
    with pytest.raises(ValueError, match="not both a task and a run metric"):
        store.encode_metrics(**_metrics_record({"rmse": 0.5}, "rmse"))


def test_companions_are_metrics_the_runs_store():
    from selective_sharing.core.metrics import METRIC_TASK_TYPES

    for main, companions in COMPANION_METRICS.items():
        assert main in METRIC_TASK_TYPES
        assert all(c in METRIC_TASK_TYPES for c in companions)


def test_a_run_with_a_validation_split_stores_its_figures_beside_the_test_ones(tmp_path):
    """val_main is the main metric on the validation split, recomputed here from the reloaded
    model's predictions; the test metrics are those of the same model on the test split."""
    from selective_sharing.core import make_config, train
    from selective_sharing.core.inference import predict
    from selective_sharing.core.metrics import split_metrics
    from selective_sharing.datasets import load_dataset

    options = {"n_tasks": 6, "samples_per_task": 40}
    cfg = make_config("synthetic", "mtl", 0, overrides={
        "train.steps": 5, "sharing.warmup_steps": 2, "train.threads": 1,
        "data.val_fraction": 0.25, **{f"data.{k}": v for k, v in options.items()}},
        out=str(tmp_path / "run"))
    run = train(cfg, progress=False)
    m = store.read_metrics(run)
    data = load_dataset("synthetic", seed=0, val_fraction=0.25, **options)
    val_task, val_pooled = split_metrics(predict(run, data.x_val), data, "val")
    assert float(m["val_main"]) == pytest.approx(float(np.nanmean(val_task["rmse"])))
    assert float(m["val_pooled_rmse"]) == pytest.approx(val_pooled["pooled_rmse"])
    assert m["val_main"].attrs["role"] == "run_metric"
    assert m["val_main"].attrs["description"].startswith("validation")
    test_task, _ = split_metrics(predict(run, data.x_test), data, "test")
    np.testing.assert_allclose(m["rmse"].values, test_task["rmse"], rtol=1e-6)
    # without a validation split there are no val_ figures
    plain = make_config("synthetic", "mtl", 0, overrides={
        "train.steps": 5, "sharing.warmup_steps": 2, "train.threads": 1,
        **{f"data.{k}": v for k, v in options.items()}}, out=str(tmp_path / "plain"))
    assert not any(str(v).startswith("val_") for v in store.read_metrics(
        train(plain, progress=False)).data_vars)


def test_val_main_has_the_main_metrics_units(tmp_path):
    from selective_sharing.core.evaluation import _units

    units = _units({"explained_variance": 0}, {"pooled_explained_variance": 1.0,
                                               "val_main": 1.0, "val_nmse": 0.5},
                   "pooled_explained_variance")
    assert units["val_main"] == "%" and units["val_nmse"] == "1"
    assert "val_main" not in _units({"rmse": 0}, {"pooled_rmse": 1.0}, "rmse")
