"""Synthetic grouped regression (Kang et al. 2011 recipe and the GO-MTL overlap variant)."""

from __future__ import annotations

import numpy as np
import pytest
from selective_sharing.datasets import DatasetError, load_dataset


def _cosine(w: np.ndarray) -> np.ndarray:
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return w @ w.T


def test_each_sample_labelled_for_exactly_one_task():
    data = load_dataset("synthetic", samples_per_task=50, test_per_task=100)
    assert data.x_train.shape == (30 * 50, 21) and data.x_test.shape == (30 * 100, 21)
    assert (data.m_train.sum(axis=1) == 1).all() and (data.m_test.sum(axis=1) == 1).all()
    assert (data.m_train.sum(axis=0) == 50).all() and (data.m_test.sum(axis=0) == 100).all()
    assert np.bincount(data.groups).tolist() == [10, 10, 10]
    assert data.main_metric == "rmse"


def test_planted_groups_share_a_weight_direction():
    data = load_dataset("synthetic", seed=3)
    cos = _cosine(data.extras["true_weights"])
    same = data.groups[:, None] == data.groups[None, :]
    assert cos[same].min() > np.abs(cos[~same]).max()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overlap_variant_true_group_is_dominant_basis(seed):
    data = load_dataset("synthetic", variant="overlap", seed=seed)
    codes = data.extras["basis_codes"]
    np.testing.assert_array_equal(codes.argmax(axis=1), data.groups)
    assert (np.count_nonzero(codes, axis=1) <= 2).all()
    assert (np.count_nonzero(codes, axis=1) == 2).any()
    assert data.provenance["generator"]["variant"] == "overlap"


def test_inputs_standardized_targets_standardized_globally():
    data = load_dataset("synthetic")
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1, atol=1e-5)
    labelled = data.y_train[data.m_train]
    assert abs(labelled.mean()) < 1e-5 and abs(labelled.std() - 1) < 1e-5
    # One global scale (a float) maps every task back to generator units.
    assert isinstance(data.extras["target_scale"], float) and data.extras["target_scale"] > 0


def test_noise_zero_targets_are_exactly_linear_per_task():
    data = load_dataset("synthetic", noise=0.0)
    for t in (0, 17):
        rows = data.m_train[:, t]
        x = np.hstack([data.x_train[rows], np.ones((rows.sum(), 1), np.float32)])
        _, residual, *_ = np.linalg.lstsq(x, data.y_train[rows, t], rcond=None)
        assert residual.sum() < 1e-6 * rows.sum()


def test_noise_is_relative_to_signal_std():
    data = load_dataset("synthetic", noise=0.3, samples_per_task=4000, n_tasks=3, n_groups=1)
    for t in range(3):
        rows = data.m_train[:, t]
        x = np.hstack([data.x_train[rows], np.ones((rows.sum(), 1), np.float32)])
        y = data.y_train[rows, t].astype(np.float64)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        fit = x @ coef
        assert (y - fit).std() / fit.std() == pytest.approx(0.3, abs=0.02)


def test_provenance_records_generator_options():
    data = load_dataset("synthetic", seed=5, noise=0.2)
    prov = data.provenance
    assert prov["variant"] == "synthetic" and prov["seed"] == 5
    assert prov["generator"]["noise"] == 0.2 and prov["generator"]["samples_per_task"] == 50


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("variant", "gauss", r"invalid variant='gauss'; allowed values: \('kang', 'overlap'\)"),
        ("n_groups", 31, r"invalid n_groups=31; n_groups must be an int >= 1 and <= 30"),
        ("noise", -1.0, r"invalid noise=-1.0; noise must be a finite number >= 0.0"),
        ("samples_per_task", 1.5, r"invalid samples_per_task=1.5; samples_per_task must be an int"),
    ],
)
def test_bad_options_fail_with_allowed_values(option, value, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset("synthetic", **{option: value})
