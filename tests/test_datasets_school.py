"""School: the real MALSAR file (skipped when the data root lacks it) and its substitute."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.io
from selective_sharing.datasets import DataFileNotFoundError, DatasetError, load_dataset
from selective_sharing.datasets.paths import resolve_data_root
from selective_sharing.datasets.school import SHA256

SCHOOL = resolve_data_root()[0] / "school.mat"
needs_file = pytest.mark.skipif(not SCHOOL.is_file(), reason=f"{SCHOOL} not available")


@pytest.fixture(scope="module")
def school():
    return load_dataset("school", seed=0)


@needs_file
def test_tasks_students_and_one_label_per_student(school):
    assert school.n_tasks == 139
    assert school.x_train.shape[1] == 27  # bias column dropped
    assert school.m_train.sum() + school.m_test.sum() == 15362
    assert (school.m_train.sum(axis=1) == 1).all() and (school.m_test.sum(axis=1) == 1).all()
    assert {t.type for t in school.tasks} == {"regression"}
    assert school.main_metric == "pooled_explained_variance" and school.groups is None


@needs_file
def test_hash_verified_and_recorded(school):
    assert school.provenance["variant"] == "real"
    assert school.provenance["sha256"] == SHA256


@needs_file
def test_split_is_75_25_within_each_school(school):
    n_train, n_test = school.m_train.sum(axis=0), school.m_test.sum(axis=0)
    np.testing.assert_array_equal(n_train, np.round(0.75 * (n_train + n_test)).astype(int))
    np.testing.assert_array_equal(n_train + n_test, school.extras["task_sizes"])


@needs_file
def test_school_level_columns_kept_and_constant_within_school(school):
    cols = school.extras["school_level_columns"]
    assert len(cols) > 0
    task = school.m_train.argmax(axis=1)
    for j in cols:
        assert school.x_train[:, j].std() > 0.5  # globally standardized, not erased
        per_task_range = [np.ptp(school.x_train[task == t, j]) for t in range(139)]
        assert max(per_task_range) == 0.0


@needs_file
def test_targets_map_back_to_exam_scores(school):
    raw = scipy.io.loadmat(SCHOOL)["Y"].ravel()
    scale, offset = school.extras["target_scale"], school.extras["target_offset"]
    for t in (0, 57, 138):
        y = np.concatenate(
            [school.y_train[school.m_train[:, t], t], school.y_test[school.m_test[:, t], t]]
        )
        scores = y * scale + offset
        np.testing.assert_allclose(np.sort(scores), np.sort(raw[t].ravel()), atol=1e-3)
    labelled = school.y_train[school.m_train]
    assert abs(labelled.mean()) < 1e-4 and abs(labelled.std() - 1) < 1e-4


@needs_file
def test_split_depends_on_seed(school):
    other = load_dataset("school", seed=1)
    assert not np.array_equal(school.x_train, other.x_train)
    np.testing.assert_array_equal(school.m_train.sum(axis=0), other.m_train.sum(axis=0))


@needs_file
def test_hash_mismatch_names_file_and_both_hashes(tmp_path):
    copy = tmp_path / "school.mat"
    shutil.copyfile(SCHOOL, copy)
    with open(copy, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DatasetError, match=rf"{copy} has sha256 [0-9a-f]{{64}}, expected {SHA256}"):
        load_dataset("school", data_root=tmp_path)


def test_missing_file_error_names_file_and_options(tmp_path):
    with pytest.raises(DataFileNotFoundError) as err:
        load_dataset("school", data_root=tmp_path)
    message = str(err.value)
    assert "'school.mat'" in message and str(tmp_path) in message
    assert "SELECTIVE_SHARING_DATA" in message and "--data-root" in message
    assert "MALSAR" in message
    assert isinstance(err.value, FileNotFoundError)


def test_substitute_is_labelled_and_school_shaped(tmp_path):
    data = load_dataset("school", data_root=tmp_path, allow_substitute=True)
    assert data.provenance["variant"] == "substitute"
    assert "generated substitute, NOT the real School data" in data.provenance["description"]
    assert data.n_tasks == 139 and data.x_train.shape[1] == 27
    assert data.m_train.sum() + data.m_test.sum() == 15362
    assert len(data.extras["school_level_columns"]) == 6


@needs_file
def test_linear_baselines_fit_the_runs_training_rows_and_score_their_test_split(school):
    """The pooled ridge by hand (scikit-learn, the chosen penalty, on every training row of the
    runs' split) gives the stored pooled explained variance."""
    from selective_sharing.core.linear import fit_linear
    from selective_sharing.datasets import load_dataset
    from sklearn.linear_model import Ridge

    with_val = load_dataset("school", seed=0, val_fraction=0.2)
    fit = fit_linear(with_val, "ridge_pooled")
    rows, cols = np.nonzero(school.m_train)  # the runs' training rows: train + val
    model = Ridge(alpha=fit.alpha).fit(school.x_train[rows].astype(float),
                                       school.y_train[rows, cols].astype(float))
    b, t = np.nonzero(school.m_test)
    y = school.y_test[b, t].astype(float)
    err = model.predict(school.x_test[b].astype(float)) - y
    pooled = 100 * (1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2))
    assert fit.run_metrics["pooled_explained_variance"] == pytest.approx(pooled, rel=1e-6)
    assert school.main_metric == "pooled_explained_variance"
