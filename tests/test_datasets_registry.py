"""Every registered dataset, picked up automatically: loads (quick profile), validates, has
consistent shapes and provenance, and is deterministic per seed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from selective_sharing.datasets import (
    DATASETS,
    VARIANTS,
    DatasetError,
    MTLData,
    dataset_options,
    list_datasets,
    load_dataset,
    register_dataset,
    write_celeba_fixture,
    write_omniart_fixture,
)
from selective_sharing.datasets.paths import resolve_data_root

# Datasets read from a user directory get a generated fixture in the real format.
FIXTURES = {
    "celeba": lambda tmp: {"root": write_celeba_fixture(tmp / "celeba")},
    "omniart": lambda tmp: {"root": write_omniart_fixture(tmp / "omniart")},
}
# Real files under the data root; the registry test falls back to the labelled substitute.
REAL_FILES = {"school": "school.mat", "computer": "lenk_data.mat"}
GENERATED = {"synthetic", "mnist_context", "shapes_context"}
# Real data whose split the file fixes (computer) or that is smaller than the quick caps.
SEED_INVARIANT_WHEN_REAL = {"computer", "computer_8", "celeba"}


def _load(name: str, tmp_path, seed: int = 0) -> MTLData:
    options = FIXTURES[name](tmp_path) if name in FIXTURES else {}
    return load_dataset(name, profile="quick", seed=seed, allow_substitute=True, **options)


def _x(data, split: str) -> np.ndarray:
    """The split's inputs: the array, or every item of a streamed split read and stacked."""
    if data.streamed:
        return data.inputs(split, range(len(getattr(data, split))))
    return getattr(data, f"x_{split}")


def _arrays(data: MTLData) -> list[np.ndarray]:
    return [_x(data, "train"), data.y_train, data.m_train, _x(data, "test"), data.y_test,
            data.m_test]


@pytest.mark.parametrize("name", list_datasets())
def test_loads_valid_and_consistent(name, tmp_path):
    data = _load(name, tmp_path)
    assert data.validate() is data
    assert data.name == name
    assert data.provenance["name"] == name
    assert data.provenance["profile"] == "quick"
    # Provenance goes into every run's manifest.json: it must be plain JSON.
    assert json.loads(json.dumps(data.provenance)) == data.provenance
    n_tasks = data.n_tasks
    for x, y, m in (
        (_x(data, "train"), data.y_train, data.m_train),
        (_x(data, "test"), data.y_test, data.m_test),
    ):
        assert y.shape == m.shape == (x.shape[0], n_tasks)
        assert not np.isnan(y).any()
    assert _x(data, "train").shape[1:] == _x(data, "test").shape[1:] == data.input_shape
    assert data.groups is None or data.groups.shape == (n_tasks,)
    assert isinstance(data.main_metric, str) and data.main_metric
    # Contract with core.metrics: one scalar maps predictions back to original units.
    scale = data.extras.get("target_scale", 1.0)
    assert isinstance(scale, float) and scale > 0


@pytest.mark.parametrize("name", list_datasets())
def test_provenance_variant(name, tmp_path):
    variant = _load(name, tmp_path).provenance["variant"]
    assert variant in VARIANTS
    if name in GENERATED:
        assert variant == "synthetic"
    elif name in REAL_FILES:
        root, _ = resolve_data_root()
        expected = "real" if (root / REAL_FILES[name]).is_file() else "substitute"
        assert variant == expected
    elif name in FIXTURES:
        assert variant == "real"


@pytest.mark.parametrize("name", list_datasets())
def test_deterministic_per_seed(name, tmp_path):
    first, second = _load(name, tmp_path / "a"), _load(name, tmp_path / "b")
    for a, b in zip(_arrays(first), _arrays(second)):
        np.testing.assert_array_equal(a, b)
    other = _load(name, tmp_path / "c", seed=1)
    same = all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(_arrays(first), _arrays(other))
    )
    if name in SEED_INVARIANT_WHEN_REAL and first.provenance["variant"] == "real":
        assert same, f"{name}: the real data's split must not depend on the seed"
    else:
        assert not same, f"{name}: seed 1 gave the same arrays as seed 0"


def test_unknown_name_lists_registered():
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'; registered datasets: \[") as e:
        load_dataset("nope")
    for name in list_datasets():
        assert repr(name) in str(e.value)


def test_unknown_option_names_it_and_the_allowed():
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['nosie'\] for dataset") as e:
        load_dataset("synthetic", nosie=0.2)
    assert "'noise'" in str(e.value) and "'samples_per_task'" in str(e.value)


def test_profile_must_be_quick_or_full():
    with pytest.raises(DatasetError, match=r"invalid profile='medium'.*\('quick', 'full'\)"):
        load_dataset("synthetic", profile="medium")


def test_dataset_options_read_from_signature():
    options = dataset_options("synthetic")
    assert options["noise"] == 0.1 and options["n_tasks"] == 30
    assert "seed" not in options and "profile" not in options


def test_register_dataset_requires_common_arguments():
    with pytest.raises(TypeError, match="lacks the keyword arguments"):

        @register_dataset("bad_loader_for_test")
        def _bad(*, profile="quick"):
            raise AssertionError("never called")

    assert "bad_loader_for_test" not in DATASETS


def test_user_registered_dataset_is_loadable():
    @register_dataset("tiny_for_test")
    def _tiny(*, profile="quick", seed=0, data_root=None, allow_substitute=False, size=4):
        return load_dataset("synthetic", seed=seed, n_tasks=2, n_groups=1, samples_per_task=size)

    try:
        data = load_dataset("tiny_for_test", size=3)
        assert data.m_train.sum(axis=0).tolist() == [3, 3]
    finally:
        DATASETS.pop("tiny_for_test")


def test_import_does_not_load_torch_core_or_analysis():
    code = (
        "import sys, selective_sharing.datasets as d; d.load_dataset('synthetic'); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(("
        "'selective_sharing.core', 'selective_sharing.analysis'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
