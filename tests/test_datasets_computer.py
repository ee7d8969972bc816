"""Computer survey: the real lenk_data.mat (skipped when missing) and its substitute."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from selective_sharing.datasets import DataFileNotFoundError, DatasetError, load_dataset
from selective_sharing.datasets.computer import SHA256
from selective_sharing.datasets.paths import resolve_data_root

LENK = resolve_data_root()[0] / "lenk_data.mat"
needs_file = pytest.mark.skipif(not LENK.is_file(), reason=f"{LENK} not available")


@pytest.fixture(scope="module")
def computer():
    return load_dataset("computer")


@needs_file
def test_persons_items_and_types(computer):
    assert computer.n_tasks == 180
    assert {t.type for t in computer.tasks} == {"rank"}
    assert computer.x_train.shape == (180 * 16, 13) and computer.x_test.shape == (180 * 4, 13)
    assert (computer.m_train.sum(axis=0) == 16).all() and (computer.m_test.sum(axis=0) == 4).all()
    assert (computer.m_train.sum(axis=1) == 1).all()
    assert set(np.unique(computer.x_train)) == {-1.0, 1.0}
    assert computer.main_metric == "pooled_rmse" and computer.groups is None
    assert computer.provenance["sha256"] == SHA256 and computer.provenance["variant"] == "real"


@needs_file
def test_rows_are_the_files_person_major_rows(computer):
    raw = scipy.io.loadmat(LENK)
    for p in (0, 93, 179):
        rows = raw["Traindata"][16 * p : 16 * p + 16]
        np.testing.assert_array_equal(computer.x_train[computer.m_train[:, p]], rows[:, 1:14])
        np.testing.assert_allclose(_ratings(computer, computer.y_train[computer.m_train[:, p], p]),
                                   rows[:, 14], atol=1e-5)
        test_rows = raw["Testdata"][4 * p : 4 * p + 4]
        np.testing.assert_allclose(_ratings(computer, computer.y_test[computer.m_test[:, p], p]),
                                   test_rows[:, 14], atol=1e-5)


def _ratings(data, y):
    """Standardized targets back in rating units."""
    return y * data.extras["target_scale"] + data.extras["target_offset"]


@needs_file
def test_ratings_are_standardized_with_training_statistics(computer):
    raw = scipy.io.loadmat(LENK)["Traindata"][:, 14]
    assert computer.extras["target_offset"] == pytest.approx(raw.mean())
    assert computer.extras["target_scale"] == pytest.approx(raw.std())
    y = computer.y_train[computer.m_train]
    assert abs(float(y.mean())) < 1e-5 and float(y.std()) == pytest.approx(1.0, abs=1e-5)


@needs_file
def test_computer_8_is_the_eight_item_survey(computer):
    eight = load_dataset("computer_8")
    same = load_dataset("computer", n_train_items=8)
    assert eight.name == "computer_8" and eight.main_metric == "pooled_rmse"
    np.testing.assert_array_equal(eight.x_train, same.x_train)
    np.testing.assert_array_equal(eight.y_train, same.y_train)
    np.testing.assert_array_equal(eight.y_test, same.y_test)


@needs_file
def test_eight_item_variant_keeps_first_eight(computer):
    small = load_dataset("computer", n_train_items=8)
    assert (small.m_train.sum(axis=0) == 8).all()
    p = 42
    np.testing.assert_array_equal(
        small.x_train[small.m_train[:, p]], computer.x_train[computer.m_train[:, p]][:8]
    )
    np.testing.assert_array_equal(small.x_test, computer.x_test)
    assert small.provenance["n_train_items"] == 8


def test_bad_item_count_names_allowed_values():
    with pytest.raises(DatasetError, match=r"invalid n_train_items=10; allowed values: \(16, 8\)"):
        load_dataset("computer", n_train_items=10)


def test_missing_file_raises_without_substitute(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="'lenk_data.mat' not found"):
        load_dataset("computer", data_root=tmp_path)


def test_substitute_has_segments_as_groups(tmp_path):
    data = load_dataset("computer", data_root=tmp_path, allow_substitute=True, n_segments=4)
    assert data.provenance["variant"] == "substitute"
    assert "NOT the real Computer data" in data.provenance["description"]
    assert data.x_train.shape == (2880, 13) and data.n_tasks == 180
    assert sorted(np.bincount(data.groups)) == [45, 45, 45, 45]
    ratings = _ratings(data, data.y_train[data.m_train])
    assert ratings.min() >= 0 and ratings.max() <= 10
    np.testing.assert_allclose(ratings, np.round(ratings), atol=1e-5)
    # Persons of one segment share part-worths: their ratings correlate more than across.
    y = data.y_train[data.m_train].reshape(180, 16)
    corr = np.corrcoef(y)
    same = data.groups[:, None] == data.groups[None, :]
    off_diagonal = ~np.eye(180, dtype=bool)
    assert corr[same & off_diagonal].mean() > corr[~same].mean() + 0.2
