"""The validation split (``val_fraction``) of every loader, from_arrays and from_datasets.

Pinned, per loader: the default (0.0) changes nothing (no val split, the same arrays and
provenance as before the option existed: digests computed with the code before it); the test
split never depends on val_fraction; train + val is the val_fraction=0 train split (rows with
their targets and masks; CelebA excepted: its val split is the official partition 1 and its train
split never changes); per-task minimums for one-dataset-per-task data; provenance; bad values fail
naming the value; ``merged_validation()``; the config path (``--set data.val_fraction=...``).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
from selective_sharing.datasets import (
    ArrayItems,
    DataFileNotFoundError,
    DatasetError,
    MTLData,
    StreamedMTLData,
    TaskSpec,
    from_arrays,
    from_datasets,
    list_datasets,
    load_dataset,
    stream,
    write_celeba_fixture,
    write_omniart_fixture,
)
from selective_sharing.datasets.arrays import arrays_sha256, validation_count, validation_rows
from selective_sharing.datasets.paths import resolve_data_root

DATA_ROOT = resolve_data_root()[0]
HAS_SCHOOL = (DATA_ROOT / "school.mat").is_file()
HAS_LENK = (DATA_ROOT / "lenk_data.mat").is_file()

# Small in-memory configurations, loaded with and without a validation split.
SMALL = {
    "synthetic": dict(n_tasks=6, n_groups=2, samples_per_task=10, test_per_task=5, seed=1),
    "mnist_context": dict(n_train=200, n_test=50, seed=2),
    "shapes_context": dict(n_train=120, n_test=40, seed=3, task_set="mixed"),
}

# arrays_sha256 of (x_train, y_train, m_train, x_test, y_test, m_test) at the default
# val_fraction, computed with the loaders as they were before val_fraction existed (HEAD 80bb672).
DEFAULT_DIGESTS = {
    "synthetic": "aba302c071348af642d9e05a4a957efd35fb16e3eb8605217ff4126679e16552",
    "mnist_context": "bcbe2229aebd28ea71238930a48a98b25e0e624560ef07abbde2112470554119",
    "shapes_context": "fa443a4b23be6d09f11e1321929065f982df1be8d7185c4d33af58bc9e31ffc9",
    "school_real": "44db1270a4dd2bd1e39c95764e53e923bbb1c983e9ea063a7c554b5b401b36f1",
    "school_substitute": "b75673e3568dcac97c2d9a0ac3fc553fd65e95a3418101e4bbe2f06cd8773ff8",
    "arrays": "bf6aef6d187762916c41c8cab1700715971ab0d1abb42e69865668ef7daa8d11",
}
# Computer: inputs and masks only (its target scaling is being changed on purpose elsewhere).
COMPUTER_XM_DIGESTS = {
    "real": "27e4096808327cc6cfbd43b6db3b7f7929e1f7c0992ab142418912b2e1d565c1",
    "substitute": "3b8a890943512d2b256b5ba1ecbef91ef67c50e688c5cc484bfc786d6229dfed",
}
# Streamed fixtures: labels and file names (pixels depend on the JPEG encoder's version).
STREAMED_DIGESTS = {
    "celeba": "f5a44699671cf0f4acdb4928fd97130b97c95dc8a3806d6dd6cfe8cc11803606",
    "omniart": "8499e0e45c50308c3b12e8f9f4f1340ebfe40ed4f916bd4a8c8c9c4c44efd2dd",
}


def _digest(data) -> str:
    return arrays_sha256(*(getattr(data, f"{a}_{s}") for s in ("train", "test") for a in "xym"))


def _streamed_digest(data) -> str:
    files = [np.asarray(getattr(data, s).files, dtype=str) for s in ("train", "test")]
    return arrays_sha256(data.y_train, data.m_train, data.y_test, data.m_test, *files)


def _toy_arrays(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    a = x[:, 0] + 0.1 * rng.normal(size=n)
    a[:5] = np.nan
    return x, {"a": a, "b": (x[:, 1] > 0) * 1.0}, {"a": "regression", "b": "binary"}


def _rows(x, y, m) -> collections.Counter:
    """The multiset of rows (input, targets, mask) of one split."""
    flat = np.asarray(x).reshape(len(x), -1)
    return collections.Counter(a.tobytes() + b.tobytes() + c.tobytes()
                               for a, b, c in zip(flat, y, m))


def _split(data, split: str):
    return tuple(getattr(data, f"{a}_{split}") for a in "xym")


def _check_carved(base: MTLData, carved: MTLData, fraction: float) -> None:
    """What every in-memory loader pins: test untouched, train + val = the old train split,
    disjoint, provenance, merged_validation()."""
    assert not base.has_validation and base.x_val is None and base.m_val is None
    assert carved.has_validation
    for a, b in zip(_split(base, "test"), _split(carved, "test")):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # the test split never moves
    old, train, val = _rows(*_split(base, "train")), _rows(*_split(carved, "train")), \
        _rows(*_split(carved, "val"))
    assert train + val == old  # train ∪ val is the old train split, rows with targets and masks
    assert len(carved.x_train) + len(carved.x_val) == len(base.x_train)  # and disjoint
    assert len(carved.x_val) > 0 and carved.x_val.dtype == base.x_train.dtype
    assert carved.provenance == {**base.provenance, "val_fraction": fraction}
    assert "val_fraction" not in base.provenance
    for key in ("target_offset", "target_scale"):  # computed from the whole training part
        assert carved.extras.get(key) == base.extras.get(key)
    merged = carved.merged_validation()
    assert not merged.has_validation and merged is not carved
    np.testing.assert_array_equal(merged.x_train, np.concatenate([carved.x_train, carved.x_val]))
    np.testing.assert_array_equal(merged.m_train, np.concatenate([carved.m_train, carved.m_val]))
    assert _rows(*_split(merged, "train")) == old
    assert merged.validate() is merged and carved.has_validation  # the original keeps its split


# --- the default changes nothing ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SMALL))
def test_default_arrays_are_the_ones_before_the_option(name):
    data = load_dataset(name, **SMALL[name])
    assert _digest(data) == DEFAULT_DIGESTS[name]
    assert not data.has_validation and "val_fraction" not in data.provenance
    explicit = load_dataset(name, **SMALL[name], val_fraction=0.0)
    assert _digest(explicit) == _digest(data) and explicit.provenance == data.provenance
    assert explicit.extras.keys() == data.extras.keys()


def test_default_school_and_computer_are_the_ones_before_the_option(tmp_path):
    sub = load_dataset("school", data_root=tmp_path, allow_substitute=True)
    assert _digest(sub) == DEFAULT_DIGESTS["school_substitute"] and not sub.has_validation
    comp = load_dataset("computer", data_root=tmp_path, allow_substitute=True)
    xm = arrays_sha256(comp.x_train, comp.m_train, comp.x_test, comp.m_test)
    assert xm == COMPUTER_XM_DIGESTS["substitute"] and not comp.has_validation
    if HAS_SCHOOL:
        real = load_dataset("school")
        assert _digest(real) == DEFAULT_DIGESTS["school_real"]
        assert "val_fraction" not in real.provenance
    if HAS_LENK:
        comp = load_dataset("computer")
        xm = arrays_sha256(comp.x_train, comp.m_train, comp.x_test, comp.m_test)
        assert xm == COMPUTER_XM_DIGESTS["real"] and "val_fraction" not in comp.provenance


def test_default_streamed_and_user_data_are_the_ones_before_the_option(tmp_path):
    celeba = load_dataset("celeba", root=write_celeba_fixture(tmp_path / "c", n_images=40))
    omni = load_dataset("omniart", root=write_omniart_fixture(tmp_path / "o", n=30))
    for name, data in (("celeba", celeba), ("omniart", omni)):
        assert _streamed_digest(data) == STREAMED_DIGESTS[name]
        assert not data.has_validation and data.val is None and data.y_val is None
        assert "val_fraction" not in data.provenance and "n_val" not in data.provenance
    arrays = from_arrays(*_toy_arrays())
    assert _digest(arrays) == DEFAULT_DIGESTS["arrays"] and not arrays.has_validation
    train = ArrayItems(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32),
                       np.ones((4, 1), bool))
    user = from_datasets(train, train, ["t"])
    assert user.train is train and user.val is None
    assert user.provenance == {"name": "user", "variant": "user", "streamed": True,
                               "n_train": 4, "n_test": 4}


# --- in-memory loaders: test split independent, train ∪ val = old train --------------------


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_generated_loaders_carve_val_out_of_train(name, fraction):
    base = load_dataset(name, **SMALL[name])
    carved = load_dataset(name, **SMALL[name], val_fraction=fraction)
    _check_carved(base, carved, fraction)
    if name == "synthetic":  # one dataset per task: the share is drawn per task
        n = SMALL[name]["samples_per_task"]
        assert (carved.m_val.sum(axis=0) == validation_count(n, fraction)).all()
    else:  # multi-output: a random share of the training samples
        assert len(carved.x_val) == validation_count(len(base.x_train), fraction)


def test_val_split_depends_on_the_seed_only_through_its_own_stream():
    a = load_dataset("synthetic", **SMALL["synthetic"], val_fraction=0.3)
    b = load_dataset("synthetic", **SMALL["synthetic"], val_fraction=0.3)
    np.testing.assert_array_equal(a.x_val, b.x_val)  # deterministic
    other = load_dataset("synthetic", **{**SMALL["synthetic"], "seed": 5}, val_fraction=0.3)
    assert not np.array_equal(a.x_val, other.x_val)


def test_per_row_extras_follow_the_rows():
    mnist = load_dataset("mnist_context", **SMALL["mnist_context"], val_fraction=0.25)
    digits = mnist.extras["digits_val"]
    assert digits.shape == (len(mnist.x_val), 2)
    even_left = mnist.task_names.index("even_left")
    np.testing.assert_array_equal(mnist.y_val[:, even_left], digits[:, 0] % 2 == 0)
    assert len(mnist.extras["digits_train"]) == len(mnist.x_train)
    merged = mnist.merged_validation()
    assert "digits_val" not in merged.extras
    np.testing.assert_array_equal(merged.extras["digits_train"],
                                  np.concatenate([mnist.extras["digits_train"], digits]))
    shapes = load_dataset("shapes_context", **SMALL["shapes_context"], val_fraction=0.25)
    factors = shapes.extras["factors_val"]
    shape_task = shapes.task_names.index("shape")
    np.testing.assert_array_equal(shapes.y_val[:, shape_task], factors["shape"])
    assert len(shapes.extras["object_masks_test"]) == len(shapes.x_test)  # test extras untouched


def _school(tmp_path, **options):
    if HAS_SCHOOL:
        return load_dataset("school", **options)
    return load_dataset("school", data_root=tmp_path, allow_substitute=True, **options)


def test_school_val_is_drawn_per_school(tmp_path):
    base, carved = _school(tmp_path, seed=2), _school(tmp_path, seed=2, val_fraction=0.2)
    _check_carved(base, carved, 0.2)
    n_train = base.m_train.sum(axis=0)
    expected = [validation_count(int(n), 0.2) for n in n_train]
    np.testing.assert_array_equal(carved.m_val.sum(axis=0), expected)
    assert (carved.m_val.sum(axis=0) >= 1).all() and (carved.m_train.sum(axis=0) >= 1).all()
    assert (carved.m_val.sum(axis=1) == 1).all()  # each row labelled for its own school only
    # the standardization is the whole training part's: train + val is standardized
    whole = carved.merged_validation().x_train
    np.testing.assert_allclose(whole.mean(axis=0)[whole.std(axis=0) > 0], 0, atol=1e-4)


def test_per_task_minimums(tmp_path):
    # tiny training sets: at least one val row, always one training row left
    for per_task, fraction, n_val in ((2, 0.1, 1), (2, 0.5, 1), (3, 0.5, 2), (5, 0.01, 1)):
        opts = dict(n_tasks=4, n_groups=2, samples_per_task=per_task, test_per_task=2)
        data = load_dataset("synthetic", **opts, val_fraction=fraction)
        assert (data.m_val.sum(axis=0) == n_val).all()
        assert (data.m_train.sum(axis=0) == per_task - n_val).all()
    # a school with a single training student keeps it and gets no validation student
    data = _school(tmp_path, train_fraction=0.01, val_fraction=0.5)
    n_train = data.m_train.sum(axis=0) + data.m_val.sum(axis=0)
    assert (n_train == 1).any() and (data.m_train.sum(axis=0) >= 1).all()
    np.testing.assert_array_equal(data.m_val.sum(axis=0)[n_train == 1], 0)
    assert (data.m_val.sum(axis=0)[n_train >= 2] >= 1).all()
    assert validation_count(1, 0.5) == 0 and validation_count(2, 0.5) == 1
    assert validation_count(0, 0.3) == 0 and validation_count(10, 0.0) == 0


@pytest.mark.parametrize("items", [16, 8])
def test_computer_val_items_come_from_each_persons_training_items(tmp_path, items):
    kwargs = {} if HAS_LENK else {"data_root": tmp_path, "allow_substitute": True}
    base = load_dataset("computer", n_train_items=items, **kwargs)
    carved = load_dataset("computer", n_train_items=items, val_fraction=0.25, **kwargs)
    _check_carved(base, carved, 0.25)
    np.testing.assert_array_equal(carved.m_val.sum(axis=0), validation_count(items, 0.25))
    for p in (0, 77, 179):
        own = _rows(base.x_train[base.m_train[:, p]], base.y_train[base.m_train[:, p]],
                    base.m_train[base.m_train[:, p]])
        val = carved.m_val[:, p]
        assert _rows(carved.x_val[val], carved.y_val[val], carved.m_val[val]) <= own
    if items == 8:  # only the first 8 of the file's 16 items are ever used (the inputs: the
        # ratings are standardized with the statistics of the items used, so they differ)
        full = load_dataset("computer", **kwargs)
        p = 42
        first8 = {row.tobytes() for row in full.x_train[full.m_train[:, p]][:8]}
        val = carved.m_val[:, p]
        assert {row.tobytes() for row in carved.x_val[val]} <= first8


# --- from_arrays / from_datasets --------------------------------------------------------------


def test_from_arrays_random_and_explicit_test_split():
    x, targets, types = _toy_arrays()
    base = from_arrays(x, targets, types, seed=3)
    carved = from_arrays(x, targets, types, seed=3, val_fraction=0.25)
    _check_carved(base, carved, 0.25)
    assert carved.provenance["sha256"] == base.provenance["sha256"]  # the data's fingerprint
    assert len(carved.x_val) == validation_count(len(base.x_train), 0.25)
    assert not {r.tobytes() for r in carved.x_train} & {r.tobytes() for r in carved.x_val}
    xt = np.random.default_rng(9).normal(size=(10, 4))
    test = dict(test_inputs=xt, test_targets={"a": xt[:, 0], "b": (xt[:, 1] > 0) * 1.0})
    base = from_arrays(x, targets, types, **test)
    carved = from_arrays(x, targets, types, **test, val_fraction=0.1)
    _check_carved(base, carved, 0.1)
    assert len(carved.x_val) == 6 and len(carved.x_train) == 54


def test_from_arrays_refuses_a_val_split_that_takes_a_tasks_last_label():
    x = np.arange(8, dtype=float).reshape(4, 2)
    rare = np.array([1.0, np.nan, np.nan, np.nan])
    seed = next(s for s in range(50) if 0 in validation_rows(4, 0.5, s))
    test = dict(test_inputs=x[:2], test_targets={"a": x[:2, 0], "rare": [0.0, 1.0]})
    with pytest.raises(DatasetError, match="val_fraction=0.5 leaves task 'rare' no labelled "
                                           "training sample"):
        from_arrays(x, {"a": x[:, 0], "rare": rare}, "regression", seed=seed, val_fraction=0.5,
                    **test)


def test_from_datasets_carves_val_items_out_of_train():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = np.stack([x[:, 0], (x[:, 1] > 0)], axis=1).astype(np.float32)
    m = np.ones_like(y, dtype=bool)
    train, test = ArrayItems(x[:30], y[:30], m[:30]), ArrayItems(x[30:], y[30:], m[30:])
    tasks = [("r", "regression"), ("b", "binary")]
    base = from_datasets(train, test, tasks)
    data = from_datasets(train, test, tasks, val_fraction=0.2, seed=4)
    assert data.has_validation and len(data.val) == 6 and len(data.train) == 24
    assert data.test is test
    picked = np.concatenate([data.train.index, data.val.index])
    np.testing.assert_array_equal(np.sort(picked), np.arange(30))  # disjoint, together all
    for i in (0, 3):
        np.testing.assert_array_equal(data.val[i][0], x[data.val.index[i]])
    np.testing.assert_array_equal(data.y_val, y[data.val.index])
    np.testing.assert_array_equal(data.m_train, m[data.train.index])
    assert data.provenance == {**base.provenance, "n_train": 24, "n_val": 6,
                               "val_fraction": 0.2, "seed": 4}
    again = from_datasets(train, test, tasks, val_fraction=0.2, seed=4)
    np.testing.assert_array_equal(again.val.index, data.val.index)


def test_stream_carries_the_val_split():
    data = load_dataset("synthetic", **SMALL["synthetic"], val_fraction=0.2)
    streamed = stream(data)
    assert streamed.has_validation and streamed.validate() is streamed
    np.testing.assert_array_equal(streamed.y_val, data.y_val)
    np.testing.assert_array_equal(streamed.inputs("val", [0, 1]), data.x_val[:2])
    plain = stream(load_dataset("synthetic", **SMALL["synthetic"]))
    assert not plain.has_validation and plain.y_val is None and plain.m_val is None
    with pytest.raises(DatasetError, match="has no validation split; load it with val_fraction"):
        plain.labels("val")


# --- streamed loaders -------------------------------------------------------------------------


def test_celeba_val_is_the_official_validation_partition(tmp_path):
    root = write_celeba_fixture(tmp_path / "c", n_images=60)
    base = load_dataset("celeba", root=root)
    data = load_dataset("celeba", root=root, val_fraction=0.2)
    assert data.train.files == base.train.files and data.test.files == base.test.files
    np.testing.assert_array_equal(data.y_train, base.y_train)
    np.testing.assert_array_equal(data.y_test, base.y_test)
    partition = dict(line.split() for line in (root / "list_eval_partition.txt").read_text()
                     .splitlines())
    assert {partition[f] for f in data.val.files} == {"1"}
    n_part1 = sum(p == "1" for p in partition.values())
    assert len(data.val) == min(max(1, round(0.2 * len(base.train))), n_part1)
    assert data.provenance["val_fraction"] == 0.2 and data.provenance["n_val"] == len(data.val)
    assert data.provenance["val_source"] == "official validation partition (1)"
    assert data.validate() is data and data.val[0][0].shape == (3, 32, 32)
    # a subsample of partition 1 when it holds more than asked
    capped = load_dataset("celeba", root=root, max_train=10, val_fraction=0.1)
    assert len(capped.val) == 1 and capped.train.files == \
        load_dataset("celeba", root=root, max_train=10).train.files


def test_celeba_without_a_validation_partition_says_how_to_fix_it(tmp_path):
    root = write_celeba_fixture(tmp_path / "c", n_images=12)
    path = root / "list_eval_partition.txt"
    path.write_text(path.read_text().replace(" 1\n", " 0\n"))
    with pytest.raises(DatasetError, match="lists no image of partition 1.*val_fraction=0"):
        load_dataset("celeba", root=root, val_fraction=0.2)


@pytest.mark.parametrize("with_split", [False, True])
def test_omniart_val_rows_come_from_the_training_rows(tmp_path, with_split):
    root = write_omniart_fixture(tmp_path / "o", n=40, with_split=with_split)
    base = load_dataset("omniart", root=root, seed=1)
    data = load_dataset("omniart", root=root, seed=1, val_fraction=0.25)
    assert data.test.files == base.test.files
    np.testing.assert_array_equal(data.y_test, base.y_test)
    np.testing.assert_array_equal(data.m_test, base.m_test)
    assert sorted(data.train.files + data.val.files) == sorted(base.train.files)
    assert len(data.val) == validation_count(len(base.train), 0.25)
    old = _rows(np.asarray(base.train.files)[:, None], base.y_train, base.m_train)
    new = (_rows(np.asarray(data.train.files)[:, None], data.y_train, data.m_train)
           + _rows(np.asarray(data.val.files)[:, None], data.y_val, data.m_val))
    assert new == old  # targets standardized with the whole training part: unchanged
    np.testing.assert_array_equal(data.extras["task_target_offset"],
                                  base.extras["task_target_offset"])
    assert data.provenance == {**base.provenance, "val_fraction": 0.25, "n_val": len(data.val)}


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_datasets())
@pytest.mark.parametrize("value", [-0.1, 0.6, "0.2", True, float("nan")])
def test_bad_val_fraction_fails_before_reading_data_naming_the_value(name, value, tmp_path):
    # data_root is empty: a check after reading would fail on the missing file instead
    with pytest.raises(DatasetError) as err:
        load_dataset(name, data_root=tmp_path, val_fraction=value)
    assert not isinstance(err.value, DataFileNotFoundError)
    message = str(err.value)
    assert f"dataset {name!r}: invalid val_fraction={value!r}; val_fraction must be a finite " \
           "number >= 0.0 and <= 0.5" in message
    assert "e.g. val_fraction=0.2" in message


@pytest.mark.parametrize("value", [-1, 0.51, "half", None])
def test_bad_val_fraction_of_user_data(value):
    x, targets, types = _toy_arrays()
    with pytest.raises(DatasetError, match=rf"invalid val_fraction={value!r}; .*<= 0.5"):
        from_arrays(x, targets, types, val_fraction=value)
    items = ArrayItems(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32),
                       np.ones((4, 1), bool))
    with pytest.raises(DatasetError, match=rf"invalid val_fraction={value!r}; .*<= 0.5"):
        from_datasets(items, items, ["t"], val_fraction=value)


# --- validation of the val arrays ------------------------------------------------------------


def _with_val(**changes) -> MTLData:
    data = load_dataset("synthetic", **SMALL["synthetic"], val_fraction=0.2)
    for key, value in changes.items():
        setattr(data, key, value)
    return data


def test_val_arrays_are_checked_like_train_and_test():
    data = _with_val()
    data.x_val[2, 1] = np.nan
    with pytest.raises(DatasetError, match=r"x_val contains nan at row 2, position \(1,\)"):
        data.validate()
    data = _with_val()
    data.y_val[0, data.m_val[0].argmax()] = np.inf
    with pytest.raises(DatasetError, match=r"y_val contains inf at labelled entry \(row 0"):
        data.validate()
    data = _with_val()
    data.y_val[0, (~data.m_val[0]).argmax()] = np.nan
    with pytest.raises(DatasetError, match=r"set y_val\[~m_val\] = 0"):
        data.validate()
    with pytest.raises(DatasetError, match=r"m_val has dtype float32, expected bool"):
        _with_val(m_val=_with_val().m_val.astype(np.float32)).validate()
    with pytest.raises(DatasetError, match=r"y_val has shape \(12, 5\), expected \(n, n_tasks\)"):
        _with_val(y_val=np.zeros((12, 5), np.float32)).validate()
    with pytest.raises(DatasetError, match=r"but x_val has \(3,\); train and val inputs must"):
        _with_val(x_val=np.zeros((12, 3), np.float32)).validate()
    with pytest.raises(DatasetError, match=r"x_val given but y_val, m_val None"):
        _with_val(y_val=None, m_val=None).validate()


def test_binary_val_targets_checked():
    data = load_dataset("mnist_context", **SMALL["mnist_context"], val_fraction=0.2)
    data.y_val[1, 3] = 0.5
    with pytest.raises(DatasetError, match=r"target 0.5 in y_val at row 1, column 3"):
        data.validate()


def test_streamed_val_items_are_checked():
    good = ArrayItems(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32),
                      np.ones((4, 1), bool))
    wide = ArrayItems(np.zeros((4, 3), np.float32), np.zeros((4, 1), np.float32),
                      np.ones((4, 1), bool))
    spec = [TaskSpec("t", "regression")]
    with pytest.raises(DatasetError, match=r"train items have x shape \(2,\) but val items"):
        StreamedMTLData("u", good, good, spec, provenance={"name": "u", "variant": "user"},
                        val=wide).validate()
    empty = ArrayItems(np.zeros((0, 2), np.float32), np.zeros((0, 1), np.float32),
                       np.ones((0, 1), bool))
    with pytest.raises(DatasetError, match="the val split has no items"):
        StreamedMTLData("u", good, good, spec, provenance={"name": "u", "variant": "user"},
                        val=empty).validate()
    bad = ArrayItems(np.zeros((4, 2), np.float32), np.full((4, 1), np.nan, np.float32),
                     np.ones((4, 1), bool))
    with pytest.raises(DatasetError, match="y_val contains nan at labelled entry"):
        StreamedMTLData("u", good, good, spec, provenance={"name": "u", "variant": "user"},
                        val=bad).validate()


def test_with_validation_and_merged_validation_contracts():
    base = load_dataset("synthetic", **SMALL["synthetic"])
    carved = base.with_validation([5, 0, 17])
    np.testing.assert_array_equal(carved.x_val, base.x_train[[0, 5, 17]])  # rows keep order
    assert len(carved.x_train) == len(base.x_train) - 3 and not base.has_validation
    with pytest.raises(DatasetError, match="already has a validation split"):
        carved.with_validation([0])
    with pytest.raises(DatasetError, match="val_rows must be distinct indices"):
        base.with_validation([1, 1])
    copy = base.merged_validation()  # no val split: a copy, the same arrays
    assert copy is not base and not copy.has_validation
    assert _digest(copy) == _digest(base) and copy.provenance == base.provenance


# --- the config path --------------------------------------------------------------------------


def test_config_option_reaches_the_loader():
    from selective_sharing.core.config import make_config
    from selective_sharing.core.rundir import load_data

    config = make_config("synthetic", overrides={"data.val_fraction": "0.2"})
    assert config.data.options["val_fraction"] == 0.2
    data = load_data(config, None)
    assert data.has_validation and data.provenance["val_fraction"] == 0.2


@pytest.mark.parametrize("setting, expected", [
    ("data.val_fraction=0.7", "invalid val_fraction=0.7; val_fraction must be a finite number"),
    ("data.val_fraction=-0.1", "invalid val_fraction=-0.1;"),
    ("data.val_fraction=abc", "invalid val_fraction='abc';"),
    ("data.val_fracton=0.2", "unknown option(s) ['val_fracton'] for dataset 'synthetic'"),
])
def test_bad_config_value_fails_before_training(tmp_path, capsys, setting, expected):
    from selective_sharing.core.cli import cli

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        cli(["train", "--dataset", "synthetic", "--out", str(out), "--no-progress",
             "--set", setting])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "DatasetError" in err and expected in err
    if "fracton" in setting:
        assert "'val_fraction'" in err  # the allowed options name the right spelling
    assert not out.exists()  # nothing was written: it failed before the run started
