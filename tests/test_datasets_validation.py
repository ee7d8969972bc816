"""validate_mtl_data: each bad dataset fails with a message naming the array, entry and fix."""

from __future__ import annotations

import numpy as np
import pytest
from selective_sharing.datasets import DatasetError, MTLData, TaskSpec


def _tiny(**changes) -> MTLData:
    rng = np.random.default_rng(0)
    m_train = np.ones((6, 3), dtype=bool)
    m_train[0, 0] = False
    fields = {
        "name": "tiny",
        "x_train": rng.normal(size=(6, 4)).astype(np.float32),
        "y_train": np.array([[0.5, 1, 2]] * 6, dtype=np.float32),
        "m_train": m_train,
        "x_test": rng.normal(size=(2, 4)).astype(np.float32),
        "y_test": np.array([[0.0, 0, 1]] * 2, dtype=np.float32),
        "m_test": np.ones((2, 3), dtype=bool),
        "tasks": [
            TaskSpec("r", "regression"),
            TaskSpec("b", "binary"),
            TaskSpec("c", "multiclass", 3),
        ],
        "groups": np.array([0, 0, 1]),
        "provenance": {"name": "tiny", "variant": "synthetic"},
    }
    fields.update(changes)
    return MTLData(**fields)


def test_valid_tiny_dataset_passes():
    data = _tiny()
    assert data.validate() is data


def test_nan_input_names_array_row_and_fix():
    data = _tiny()
    data.x_train[3, 2] = np.nan
    with pytest.raises(DatasetError, match=r"x_train contains nan at row 3, position \(2,\)"):
        data.validate()
    with pytest.raises(DatasetError, match="inputs must be finite: impute the value or drop"):
        data.validate()


def test_inf_input_in_test_split():
    data = _tiny()
    data.x_test[1, 0] = np.inf
    with pytest.raises(DatasetError, match=r"x_test contains inf at row 1, position \(0,\)"):
        data.validate()


def test_nan_labelled_target_names_task_and_mask_fix():
    data = _tiny()
    data.y_train[2, 0] = np.nan
    with pytest.raises(
        DatasetError,
        match=r"y_train contains nan at labelled entry \(row 2, task 'r', column 0\); fix the "
        r"value or mark the label missing with m_train\[2, 0\] = False",
    ):
        data.validate()


def test_nan_unlabelled_target_must_be_zero():
    data = _tiny()
    data.y_train[0, 0] = np.nan  # m_train[0, 0] is False
    with pytest.raises(DatasetError, match=r"unlabelled entry \(row 0, task 'r', column 0\); "):
        data.validate()


def test_task_without_training_labels_is_named():
    data = _tiny()
    data.m_train[:, 1] = False
    with pytest.raises(
        DatasetError, match=r"task 'b' \(column 1\) has no labelled training samples"
    ):
        data.validate()


def test_bad_binary_target():
    data = _tiny()
    data.y_train[4, 1] = 2.0
    with pytest.raises(
        DatasetError,
        match=r"binary task 'b' has target 2.0 in y_train at row 4, column 1; binary targets "
        r"must be \{0, 1\}",
    ):
        data.validate()


def test_bad_binary_target_ignored_where_unlabelled():
    data = _tiny()
    data.y_train[4, 1] = 2.0
    data.m_train[4, 1] = False
    assert data.validate() is data


@pytest.mark.parametrize("value", [3.0, -1.0, 1.5])
def test_bad_multiclass_target(value):
    data = _tiny()
    data.y_test[1, 2] = value
    with pytest.raises(DatasetError, match=r"integers in \[0, 3\)"):
        data.validate()


def test_shape_mismatch_names_expected_shape():
    data = _tiny(y_train=np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(
        DatasetError, match=r"y_train has shape \(5, 3\), expected \(n, n_tasks\) = \(6, 3\)"
    ):
        data.validate()


def test_dtype_mismatch_suggests_conversion():
    data = _tiny()
    data.x_train = data.x_train.astype(np.float64)
    with pytest.raises(DatasetError, match=r"x_train has dtype float64, expected float32; convert"):
        data.validate()


def test_mask_must_be_bool():
    data = _tiny()
    data.m_test = data.m_test.astype(np.int8)
    with pytest.raises(DatasetError, match="m_test has dtype int8, expected bool"):
        data.validate()


def test_groups_length_must_match_tasks():
    with pytest.raises(DatasetError, match=r"groups has shape \(2,\), expected .* \(3,\)"):
        _tiny(groups=np.array([0, 1])).validate()


def test_provenance_variant_checked():
    with pytest.raises(DatasetError, match=r"provenance\['variant'\] is 'fake'; allowed"):
        _tiny(provenance={"name": "tiny", "variant": "fake"}).validate()


def test_duplicate_task_names():
    tasks = [TaskSpec("r", "regression"), TaskSpec("r", "binary"), TaskSpec("c", "multiclass", 3)]
    with pytest.raises(DatasetError, match=r"task names must be unique; repeated: \['r'\]"):
        _tiny(tasks=tasks).validate()


def test_multiclass_needs_two_classes():
    tasks = [TaskSpec("r", "regression"), TaskSpec("b", "binary"), TaskSpec("c", "multiclass", 1)]
    with pytest.raises(DatasetError, match="multiclass task 'c' has n_classes=1"):
        _tiny(tasks=tasks).validate()


def test_target_scale_must_be_one_positive_number():
    with pytest.raises(DatasetError, match=r"extras\['target_scale'\] is array\(\[1\., 2\.\]\)"):
        _tiny(extras={"target_scale": np.array([1.0, 2.0])}).validate()
    with pytest.raises(DatasetError, match="it must be one finite number"):
        _tiny(extras={"target_scale": 0.0}).validate()


def test_region_masks_must_match_images():
    images = np.zeros((6, 1, 4, 4), dtype=np.float32)
    data = _tiny(
        x_train=images, x_test=images[:2], extras={"region_masks": np.ones((2, 3, 3), bool)}
    )
    with pytest.raises(
        DatasetError, match=r"region_masks'\] has size \(3, 3\) but images are \(4, 4\)"
    ):
        data.validate()
