"""Linear baselines (core.linear): the closed-form ridge fits against scikit-learn and the normal
equations, the protocol (penalty chosen on validation, refit on train + validation, test scored
once), and their stores as Table 2 reads them."""

from __future__ import annotations

import numpy as np
import pytest

from selective_sharing.core import store
from selective_sharing.core.linear import (
    LINEAR_METHODS,
    LinearBaselineError,
    _Fitter,
    _ridge_path,
    fit_linear,
    write_linear_run,
)
from selective_sharing.datasets import from_arrays


def _one_task_per_sample(seed: int = 0, n_tasks: int = 4, n: int = 60, val_fraction=0.25):
    """Each sample labelled for one task; tasks share weights and differ in intercept."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n * n_tasks, 5))
    task = np.repeat(np.arange(n_tasks), n)
    w = np.array([1.0, -2.0, 0.5, 0.0, 0.0])
    y = x @ w + 3.0 * task + rng.normal(0, 0.5, size=len(x))
    targets = {f"t{t}": np.where(task == t, y, np.nan) for t in range(n_tasks)}
    return from_arrays(x, targets, "regression", seed=seed, name="toy",
                       val_fraction=val_fraction)


def test_ridge_path_matches_scikit_learn_ridge_with_an_intercept():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    alphas = np.array([0.01, 1.0, 100.0])
    w, b = _ridge_path(x, y, alphas)
    for i, a in enumerate(alphas):
        ref = Ridge(alpha=a).fit(x, y)
        np.testing.assert_allclose(w[i], ref.coef_, rtol=1e-9, atol=1e-12)
        assert b[i] == pytest.approx(ref.intercept_)


def test_pooled_with_task_intercepts_solves_the_fixed_effects_ridge():
    """min ||y - X w - b_task||^2 + alpha ||w||^2 with the intercepts unpenalized."""
    data = _one_task_per_sample(val_fraction=0.0)
    alpha = 3.0
    fit = _Fitter("ridge_pooled_intercept", data.x_train, data.y_train, data.m_train,
                  np.array([alpha]))
    b_idx, t_idx = np.nonzero(data.m_train)
    x = data.x_train[b_idx].astype(float)
    onehot = np.eye(data.n_tasks)[t_idx]
    design = np.hstack([x, onehot])
    penalty = np.diag([alpha] * x.shape[1] + [0.0] * data.n_tasks)
    coef = np.linalg.solve(design.T @ design + penalty,
                           design.T @ data.y_train[b_idx, t_idx].astype(float))
    np.testing.assert_allclose(fit.w[0, 0], coef[:x.shape[1]], rtol=1e-8)
    np.testing.assert_allclose(fit.b[0], coef[x.shape[1]:], rtol=1e-8)


def test_the_penalty_is_chosen_on_validation_and_test_is_scored_after_a_refit():
    data = _one_task_per_sample()
    fit = fit_linear(data, "ridge_pooled_intercept")
    assert fit.alpha == min(fit.val_mse, key=fit.val_mse.get)
    # the final model is refitted on train + validation with the chosen penalty
    whole = data.merged_validation()
    ref = _Fitter("ridge_pooled_intercept", whole.x_train, whole.y_train, whole.m_train,
                  np.array([fit.alpha]))
    b_idx, t_idx = np.nonzero(data.m_test)
    err = ref.predict(data.x_test, 0)[b_idx, t_idx] - data.y_test[b_idx, t_idx]
    assert fit.run_metrics["pooled_rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    # shared slopes + task intercepts is the true model here: it beats ignoring the task
    pooled = fit_linear(data, "ridge_pooled")
    assert fit.run_metrics["pooled_rmse"] < 0.7 * pooled.run_metrics["pooled_rmse"]
    assert fit.n_parameters == 5 + data.n_tasks and fit.n_groups == 1


def test_parameter_counts_and_assignments():
    data = _one_task_per_sample()
    per_task = fit_linear(data, "ridge_per_task")
    assert per_task.n_parameters == data.n_tasks * 6 and per_task.n_groups == data.n_tasks
    np.testing.assert_array_equal(per_task.assignment, np.arange(data.n_tasks))
    pooled = fit_linear(data, "ridge_pooled")
    assert pooled.n_parameters == 6 and pooled.n_groups == 1


def test_without_a_validation_split_the_error_says_how_to_get_one():
    data = _one_task_per_sample(val_fraction=0.0)
    with pytest.raises(LinearBaselineError, match="val_fraction > 0"):
        fit_linear(data, "ridge_pooled")


def test_classification_data_is_refused_with_the_reason():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    data = from_arrays(x, {"a": (x[:, 0] > 0) * 1.0}, "binary", val_fraction=0.2)
    with pytest.raises(LinearBaselineError, match="binary tasks"):
        fit_linear(data, "ridge_pooled")


def test_an_unknown_method_names_the_known_ones():
    with pytest.raises(LinearBaselineError, match="ridge_per_task"):
        fit_linear(_one_task_per_sample(), "lasso")


def test_a_stored_baseline_is_a_complete_run_that_table2_reads(tmp_path):
    from selective_sharing.analysis.table import collect_runs, summarize_runs, to_markdown

    data = _one_task_per_sample()
    for method in LINEAR_METHODS:
        write_linear_run(tmp_path / "toy" / method / "seed0", data, fit_linear(data, method),
                         seed=0, profile="quick", dataset="toy")
    manifest = store.read_manifest(tmp_path / "toy" / "ridge_pooled" / "seed0")
    assert manifest["status"] == "complete" and manifest["trained_by"] == "linear_baseline"
    assert manifest["linear"]["refit_on"] == "train + validation"
    runs = collect_runs(tmp_path, ["toy"], ["mtl"], [0], optional_methods=LINEAR_METHODS)
    assert list(runs["method"]) == ["mtl", *LINEAR_METHODS]
    assert list(runs["status"]) == ["missing", "complete", "complete", "complete"]
    md = to_markdown(summarize_runs(runs))
    assert "| ridge_pooled_intercept |" in md
    # a dataset without linear runs gets no linear rows
    other = collect_runs(tmp_path, ["nothing"], ["mtl"], [0], optional_methods=LINEAR_METHODS)
    assert list(other["method"]) == ["mtl"]


def test_linear_runs_load_in_analysis(tmp_path):
    from selective_sharing.analysis import load_run

    data = _one_task_per_sample()
    run = write_linear_run(tmp_path / "r", data, fit_linear(data, "ridge_per_task"), seed=0,
                           profile="quick")
    tree = load_run(run)
    assert float(tree["metrics"]["main"]) == pytest.approx(
        float(np.nanmean(fit_linear(data, "ridge_per_task").task_metrics["rmse"])))
