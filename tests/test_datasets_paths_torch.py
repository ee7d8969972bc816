"""Data-root resolution and file hashing; the torch adapter."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from selective_sharing.datasets import DataFileNotFoundError, find_data_file, load_dataset, sha256
from selective_sharing.datasets.paths import ENV_VAR, default_data_root, resolve_data_root


def test_default_root_is_shared_data_beside_checkout():
    repo_root = __import__("pathlib").Path(__file__).resolve().parents[1]
    assert default_data_root() == repo_root.parent / "shared" / "data"


def test_root_precedence_argument_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == (tmp_path / "arg", "argument")
    assert resolve_data_root() == (tmp_path / "env", "environment")
    monkeypatch.delenv(ENV_VAR)
    assert resolve_data_root() == (default_data_root(), "default")


def test_environment_root_is_used_by_loaders(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(DataFileNotFoundError, match=rf"from \${ENV_VAR}"):
        load_dataset("school")


def test_find_data_file_error_and_success(tmp_path):
    with pytest.raises(DataFileNotFoundError) as err:
        find_data_file("x.bin", tmp_path, source_hint="the X archive")
    assert "'x.bin'" in str(err.value) and "the X archive" in str(err.value)
    assert "--data-root" in str(err.value) and ENV_VAR in str(err.value)
    (tmp_path / "x.bin").write_bytes(b"abc")
    assert find_data_file("x.bin", tmp_path, source_hint="") == tmp_path / "x.bin"
    assert sha256(tmp_path / "x.bin") == hashlib.sha256(b"abc").hexdigest()


def test_torch_dataset_items_and_batches():
    torch = pytest.importorskip("torch")
    from selective_sharing.datasets import MTLTorchDataset, as_tensors

    data = load_dataset("mnist_context", n_train=40, n_test=10)
    ds = MTLTorchDataset(data, split="test")
    assert len(ds) == 10 and isinstance(ds, torch.utils.data.Dataset)
    x, y, m = ds[3]
    assert x.shape == (1, 28, 56) and y.shape == (8,) and m.shape == (8,)
    assert x.dtype == torch.float32 and y.dtype == torch.float32 and m.dtype == torch.bool
    xb, yb, mb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 1, 28, 56) and yb.shape == mb.shape == (4, 8)
    np.testing.assert_array_equal(yb.numpy(), data.y_test[:4])
    xs, _ys, ms = as_tensors(data, "train")
    assert xs.shape == (40, 1, 28, 56) and ms.dtype == torch.bool
    with pytest.raises(ValueError, match=r"has no validation split; load it with val_fraction"):
        MTLTorchDataset(data, split="val")
    with pytest.raises(ValueError, match=r"invalid split='dev'; allowed: \('train', 'val', "):
        MTLTorchDataset(data, split="dev")
    held = load_dataset("mnist_context", n_train=40, n_test=10, val_fraction=0.25)
    val = MTLTorchDataset(held, split="val")
    assert len(val) == held.x_val.shape[0] == 10
    np.testing.assert_array_equal(val[2][1].numpy(), held.y_val[2])
    xv, yv, mv = as_tensors(held, "val")
    assert xv.shape[0] == yv.shape[0] == mv.shape[0] == 10


def test_torch_dataset_pickles_for_workers():
    pytest.importorskip("torch")
    import pickle

    from selective_sharing.datasets import MTLTorchDataset

    ds = MTLTorchDataset(load_dataset("synthetic", n_tasks=3, n_groups=1))
    clone = pickle.loads(pickle.dumps(ds))
    assert type(clone) is type(ds) and len(clone) == len(ds) == 150
