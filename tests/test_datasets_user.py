"""User-provided data: CelebA and OmniArt folders (through generated fixtures), from_arrays."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selective_sharing.datasets import (
    DatasetError,
    arrays,
    from_arrays,
    load_dataset,
    write_celeba_fixture,
    write_omniart_fixture,
)
from selective_sharing.datasets.fixtures import CELEBA_ATTRIBUTES

pytest.importorskip("PIL")


def test_celeba_fixture_round_trip(tmp_path):
    root = write_celeba_fixture(tmp_path / "celeba", n_images=12, seed=3)
    data = load_dataset("celeba", root=root, image_size=16)
    assert data.task_names == CELEBA_ATTRIBUTES and len(CELEBA_ATTRIBUTES) == 40
    assert data.streamed and len(data.train) == 8 and len(data.test) == 2
    assert data.inputs("train", range(8)).shape == (8, 3, 16, 16)
    x, y, m = data.test[1]
    assert x.shape == (3, 16, 16) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    np.testing.assert_array_equal(y, data.y_test[1])
    assert m.all() and m.shape == (40,)
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "12"
    expected = [[int(v) > 0 for v in line.split()[1:]] for line in lines[2:]]
    partition = [
        int(line.split()[1]) for line in (root / "list_eval_partition.txt").read_text().splitlines()
    ]
    train = [row for row, p in zip(expected, partition) if p == 0]
    np.testing.assert_array_equal(data.y_train, np.asarray(train, dtype=np.float32))
    assert data.provenance["variant"] == "real" and data.main_metric == "accuracy"


def test_celeba_accepts_torchvision_parent_folder(tmp_path):
    write_celeba_fixture(tmp_path / "celeba")
    data = load_dataset("celeba", data_root=tmp_path)  # <data root>/celeba
    assert data.n_tasks == 40
    nested = load_dataset("celeba", root=tmp_path)  # root/celeba, as torchvision has it
    index = range(len(data.train))
    np.testing.assert_array_equal(nested.inputs("train", index), data.inputs("train", index))


def test_celeba_cap_subsamples_with_seed(tmp_path):
    root = write_celeba_fixture(tmp_path / "c", n_images=30)
    a = load_dataset("celeba", root=root, max_train=5, seed=0)
    b = load_dataset("celeba", root=root, max_train=5, seed=1)
    assert len(a.train) == len(b.train) == 5
    assert not np.array_equal(a.y_train, b.y_train)


def test_celeba_missing_directory_names_what_is_missing(tmp_path):
    with pytest.raises(DatasetError, match=r"celeba: directory .* lacks \['img_align_celeba'"):
        load_dataset("celeba", root=tmp_path)


def test_omniart_infers_types_and_missing_labels(tmp_path):
    root = write_omniart_fixture(tmp_path / "omni", n=12)
    data = load_dataset("omniart", root=root, image_size=8)
    kinds = {t.name: (t.type, t.n_classes) for t in data.tasks}
    assert kinds == {
        "artist": ("multiclass", 3),
        "creation_year": ("regression", 1),
        "is_painting": ("binary", 1),
        "school": ("multiclass", 4),
    }
    m = np.concatenate([data.m_train, data.m_test])
    assert m.sum(axis=0).tolist() == [12, 11, 11, 11]
    assert len(data.train) + len(data.test) == 12 and len(data.test) == 2
    assert data.test[0][0].shape == (3, 8, 8)
    assert data.extras["class_names"]["artist"] == ["Claude Monet", "Hokusai", "Rembrandt van Rijn"]


def test_omniart_regression_maps_back_to_years(tmp_path):
    root = write_omniart_fixture(tmp_path / "omni", with_split=True)
    data = load_dataset("omniart", root=root)
    col = data.task_names.index("creation_year")
    years = data.y_test[data.m_test[:, col], col] * data.extras["task_target_scale"][col]
    years = years + data.extras["task_target_offset"][col]
    lines = (root / "attributes.csv").read_text().splitlines()[1:]
    expected = [float(r.split(",")[2]) for r in lines if r.endswith("test") and r.split(",")[2]]
    np.testing.assert_allclose(years, expected, rtol=1e-6)
    assert len(data.test) == 3  # rows 3, 7, 11 of the split column


def test_omniart_tasks_json_overrides(tmp_path):
    overrides = {"school": "ignore", "creation_year": "multiclass"}
    root = write_omniart_fixture(tmp_path / "omni", tasks_json=overrides)
    data = load_dataset("omniart", root=root)
    assert "school" not in data.task_names
    assert data.tasks[data.task_names.index("creation_year")].type == "multiclass"
    bad = tmp_path / "omni" / "tasks.json"
    bad.write_text(json.dumps({"artist": "ordinal"}))
    with pytest.raises(DatasetError, match="column 'artist' has type 'ordinal'; allowed"):
        load_dataset("omniart", root=root)


def test_from_arrays_round_trip_with_explicit_test_split():
    rng = np.random.default_rng(1)
    x, xt = rng.normal(size=(20, 5)), rng.normal(size=(6, 5))
    targets = {"a": rng.normal(size=20), "b": rng.integers(0, 3, 20).astype(float)}
    test = {"a": rng.normal(size=6), "b": np.array([0, 1, 2, 2, 1, np.nan])}
    data = from_arrays(
        x,
        targets,
        {"a": "regression", "b": "multiclass"},
        groups={"a": 0, "b": 1},
        test_inputs=xt,
        test_targets=test,
        name="mine",
    )
    np.testing.assert_array_equal(data.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(data.y_train[:, 0], targets["a"].astype(np.float32))
    np.testing.assert_array_equal(data.m_test[:, 1], [True] * 5 + [False])
    assert data.y_test[5, 1] == 0.0  # missing labels stored as 0, never NaN
    assert data.tasks[1].n_classes == 3 and data.groups.tolist() == [0, 1]
    prov = data.provenance
    assert (
        prov["variant"] == "user" and prov["source"] == "user arrays" and len(prov["sha256"]) == 64
    )
    again = from_arrays(
        x,
        targets,
        {"a": "regression", "b": "multiclass"},
        test_inputs=xt,
        test_targets=test,
        name="mine",
    )
    assert again.provenance["sha256"] == prov["sha256"]


def test_from_arrays_seeded_split_and_nan_mask():
    x = np.arange(40, dtype=float).reshape(20, 2)
    y = np.where(np.arange(20) % 5 == 0, np.nan, 1.0)
    data = from_arrays(x, {"t": y}, "binary", seed=3)
    assert data.x_train.shape == (15, 2) and data.x_test.shape == (5, 2)
    rows = np.concatenate([data.x_train[:, 0], data.x_test[:, 0]]) / 2
    labelled = np.concatenate([data.m_train[:, 0], data.m_test[:, 0]])
    np.testing.assert_array_equal(labelled, rows % 5 != 0)
    other = from_arrays(x, {"t": y}, "binary", seed=4)
    assert not np.array_equal(data.x_test, other.x_test)


def test_from_arrays_labelled_nan_fails_validation():
    with pytest.raises(DatasetError, match="contains nan at labelled entry"):
        from_arrays(
            np.zeros((8, 2)), {"t": [np.nan] + [0.0] * 7}, "regression", mask=np.ones((8, 1))
        )


def test_from_arrays_missing_type_named():
    with pytest.raises(DatasetError, match=r"task_types lacks a type for task\(s\) \['b'\]"):
        from_arrays(np.zeros((8, 2)), {"a": np.zeros(8), "b": np.zeros(8)}, {"a": "regression"})


def test_from_arrays_docstring_example_runs():
    result = doctest.testmod(arrays, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_from_arrays_keeps_mask_and_labelled_targets(n, n_tasks, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((n, n_tasks)) < 0.6
    mask[0] = True  # every task labelled at least once in training
    y = rng.normal(size=(n, n_tasks))
    targets = {f"t{j}": y[:, j] for j in range(n_tasks)}
    data = from_arrays(
        rng.normal(size=(n, 3)),
        targets,
        "regression",
        mask,
        test_inputs=np.zeros((1, 3)),
        test_targets={k: [0.0] for k in targets},
    )
    np.testing.assert_array_equal(data.m_train, mask)
    np.testing.assert_array_equal(data.y_train, np.where(mask, y, 0).astype(np.float32))
