"""Bad data (issue 7, item 2), through ``datasets.from_arrays`` and ``train(config, data=...)``.

Pinned handling:

- NaN or +-Inf in inputs: :class:`DatasetError` at load naming the array (``x_train`` /
  ``x_test``), the row and the fix; nothing is trained or written.
- NaN target with ``mask=None``: a missing label (documented in ``from_arrays``). NaN target
  marked labelled, or +-Inf anywhere: :class:`DatasetError` naming the array and the task.
- A task with no labelled training sample (all NaN, all masked out, or labelled only in the
  test split): :class:`DatasetError` naming the task.
- Constant tasks. A constant regression target or a single-class binary task still has a
  non-zero gradient (the task learns its offset; BCE pushes the logit on, with a vanishing but
  non-zero gradient), so it is an ordinary entity: it may merge, and every distance and
  condition is finite. A task whose gradient is exactly zero (a constant ``rank`` task with
  ``rank_mse_weight=0``: no ordered pair, no rating loss) is flagged ``degenerate`` in every
  event, sits at distance 1.0 from every other entity and never merges. Its undefined metrics
  (Spearman of a constant ranking, explained variance of a constant target) are NaN.
- Very different sample counts (5 vs 500 per task) train; every event is finite; the loss
  history is NaN exactly on the steps whose batch held none of the task's samples.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from selective_sharing.core import make_config, store
from selective_sharing.core.training import train
from selective_sharing.datasets import DatasetError, from_arrays

SHORT = {"train.steps": 60, "warmup_steps": 20, "regroup_every": 10, "train.threads": 1}


def related_tasks(n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inputs ``(n, 8)`` and six regression targets in two groups of three."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    wa, wb = rng.normal(size=8), rng.normal(size=8)
    targets = {f"a{i}": x @ (wa * (1 + 0.2 * i)) + 0.1 * rng.normal(size=n) for i in range(3)}
    targets |= {f"b{i}": x @ (wb * (1 + 0.2 * i)) + 0.1 * rng.normal(size=n) for i in range(3)}
    return x, targets


def assert_events_finite(run) -> list[xr.Dataset]:
    """Every float in every event is finite (NaN only where the schema allows: threshold)."""
    events = [store.read_event(p) for p in store.list_events(run)]
    assert events
    for ev in events:
        for name, var in ev.data_vars.items():
            if var.dtype.kind == "f" and name != "threshold":
                assert np.isfinite(var.values).all(), (ev.attrs["index"], name)
    return events


# ----------------------------------------------------------------------------- at load


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_input_is_an_error_naming_the_array(value) -> None:
    x, targets = related_tasks(40)
    x[7, 3] = value
    with pytest.raises(
        DatasetError,
        match=rf"x_(train|test) contains {value} at row \d+, "
        r"position \(3,\); inputs must be finite",
    ):
        from_arrays(x, targets, "regression", name="bad")


def test_nan_target_is_a_missing_label_unless_marked_labelled() -> None:
    x, targets = related_tasks(40)
    targets["a1"][5] = np.nan
    data = from_arrays(x, targets, "regression", name="gap", test_fraction=0.25)
    assert data.m_train[:, 1].sum() + data.m_test[:, 1].sum() == 39
    mask = np.ones((40, 6), dtype=bool)
    with pytest.raises(
        DatasetError,
        match=r"y_(train|test) contains nan at labelled entry "
        r"\(row \d+, task 'a1', column 1\)",
    ):
        from_arrays(x, targets, "regression", mask=mask, name="gap")


@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["inf", "-inf"])
def test_infinite_target_is_an_error_naming_the_task(value) -> None:
    x, targets = related_tasks(40)
    targets["b2"][9] = value
    with pytest.raises(
        DatasetError,
        match=rf"y_(train|test) contains {value} at labelled "
        r"entry \(row \d+, task 'b2', column 5\)",
    ):
        from_arrays(x, targets, "regression", name="inf")


def test_data_corrupted_after_loading_fails_before_anything_is_written(tmp_path) -> None:
    x, targets = related_tasks(80)
    data = from_arrays(x, targets, "regression", name="late")
    data.x_train[3, 0] = np.nan  # e.g. a user's in-place preprocessing gone wrong
    cfg = make_config("late", "ss_similarity", 0, overrides=SHORT, out=str(tmp_path / "run"))
    with pytest.raises(DatasetError, match=r"x_train contains nan at row 3, position \(0,\)"):
        train(cfg, data=data, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["all_nan", "all_masked", "only_in_test"])
def test_task_without_labelled_samples_is_an_error_naming_it(how) -> None:
    x, targets = related_tasks(40)
    kwargs: dict = {}
    if how == "all_nan":
        targets["b0"][:] = np.nan
    elif how == "all_masked":
        mask = {k: np.ones(40, dtype=bool) for k in targets}
        mask["b0"][:] = False
        kwargs["mask"] = mask
    else:
        targets["b0"][:] = np.nan
        test_targets = {k: v[:10].copy() for k, v in related_tasks(10, seed=1)[1].items()}
        kwargs |= {"test_inputs": x[:10], "test_targets": test_targets}
    with pytest.raises(
        DatasetError,
        match=r"task 'b0' \(column 3\) has no labelled training "
        r"samples.*label at least one training sample for it or drop the task",
    ):
        from_arrays(x, targets, "regression", name="empty", **kwargs)


# ----------------------------------------------------------------------------- in training


def test_constant_and_zero_gradient_tasks(tmp_path) -> None:
    x, targets = related_tasks(300)
    types = {k: "regression" for k in targets}
    targets |= {
        "const": np.full(300, 2.5),
        "one_class": np.zeros(300),
        "flat_rank": np.full(300, 3.0),
    }
    types |= {"const": "regression", "one_class": "binary", "flat_rank": "rank"}
    data = from_arrays(x, targets, types, name="constant")
    overrides = {**SHORT, "train.rank_mse_weight": 0.0}
    cfg = make_config(
        "constant", "ss_similarity", 0, overrides=overrides, out=str(tmp_path / "run")
    )
    run = train(cfg, data=data, progress=False)
    names = data.task_names
    flat, const, one = (names.index(n) for n in ("flat_rank", "const", "one_class"))
    for ev in assert_events_finite(run):
        before = ev["assignment_before"].values
        after = ev["assignment_after"].values
        degenerate = ev["degenerate"].values
        # the zero-gradient task is flagged, 1.0 from everyone, and stays alone
        assert degenerate[before[flat]] and degenerate.sum() == 1
        d = ev["distances"].values[:, before[flat]]
        assert np.all(np.delete(d, before[flat], axis=1) == 1.0)
        assert np.sum(after == after[flat]) == 1
        # constant targets and a single class still carry a gradient: ordinary entities
        assert not degenerate[before[const]] and not degenerate[before[one]]
    history = store.read_history(run)
    norms = history["grad_norm"].values
    assert np.all(norms[:, flat] == 0) and np.all(norms[:, one] > 0)
    # a single class: the gradient vanishes (seen while the task has its own estimator: the
    # norm is its entity's)
    assert norms[19, one] < 0.1 * norms[0, one]
    metrics = store.read_metrics(run)
    assert np.isnan(metrics["spearman"].values[flat])  # a constant ranking has none
    assert np.isnan(metrics["explained_variance"].values[const])
    assert np.isfinite(metrics["rmse"].values[const]) and metrics["accuracy"].values[one] == 1


def test_very_different_sample_counts_train_with_finite_events(tmp_path) -> None:
    rng = np.random.default_rng(0)
    counts = [5, 500, 500, 500]
    task = np.repeat(np.arange(len(counts)), counts)
    x = rng.normal(size=(task.size, 8)).astype(np.float32)
    y = (x * rng.normal(size=(len(counts), 8))[task]).sum(axis=1)
    targets = {f"t{k}": np.where(task == k, y, np.nan) for k in range(len(counts))}
    data = from_arrays(x, targets, "regression", name="uneven")
    assert data.m_train[:, 0].sum() < 5 < data.m_train[:, 1].sum()
    overrides = {**SHORT, "batch_size": 64}
    cfg = make_config("uneven", "ss_similarity", 0, overrides=overrides, out=str(tmp_path / "r"))
    run = train(cfg, data=data, progress=False)
    assert_events_finite(run)
    history = store.read_history(run)
    loss = history["loss"].values
    # NaN only where a step's batch held no sample of the task: often for 5 samples, never
    # for 500
    assert np.isfinite(loss[:, 1:]).all()
    assert 0 < np.isnan(loss[:, 0]).sum() < loss.shape[0]
    assert np.isfinite(store.read_metrics(run)["rmse"].values).all()
