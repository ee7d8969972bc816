"""PyTorch view of :class:`MTLData`. torch is imported only when this adapter is used, so
``import selective_sharing.datasets`` (and analysis/, which must work without torch) stays
torch-free: ``MTLTorchDataset`` is built on first access through a module ``__getattr__``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .base import DatasetError
from .options import SPLIT_OR_VAL, check_option

if TYPE_CHECKING:
    from .base import MTLData



def _split_arrays(data: MTLData, split: str):
    check_option("split", split, SPLIT_OR_VAL)
    if split == "val" and not data.has_validation:
        raise DatasetError(f"dataset {data.name!r} has no validation split; load it with "
                           "val_fraction > 0 (e.g. load_dataset(name, val_fraction=0.2))")
    return getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), getattr(data, f"m_{split}")


def as_tensors(data: MTLData, split: str = "train") -> tuple[Any, Any, Any]:
    """Whole split (``"train"``, ``"val"`` or ``"test"``) as tensors ``(x, y, m)``: x ``(n, ...)`` float32, y ``(n, n_tasks)``
    float32, m ``(n, n_tasks)`` bool. Shares memory with the numpy arrays (no copy), for
    full-batch training."""
    import torch

    return tuple(torch.from_numpy(a) for a in _split_arrays(data, split))


@functools.cache
def _build_class() -> type:
    import torch
    from torch.utils.data import Dataset

    class MTLTorchDataset(Dataset):
        """Map-style dataset over one split of an :class:`MTLData`.

        Parameters
        ----------
        data : MTLData
        split : {"train", "val", "test"}
            ``"val"``: the validation split of data loaded with ``val_fraction > 0``.

        Items are ``(x, y, m)`` tensors: x ``data.input_shape`` float32, y ``(n_tasks,)``
        float32, m ``(n_tasks,)`` bool. The default collate stacks them into batches.
        """

        def __init__(self, data: MTLData, split: str = "train") -> None:
            self.data = data
            self.split = split
            self.x, self.y, self.m = (torch.from_numpy(a) for a in _split_arrays(data, split))

        def __len__(self) -> int:
            return self.x.shape[0]

        def __getitem__(self, index):
            return self.x[index], self.y[index], self.m[index]

    # Resolvable as torch_adapter.MTLTorchDataset, so DataLoader workers can pickle instances.
    MTLTorchDataset.__module__ = __name__
    MTLTorchDataset.__qualname__ = "MTLTorchDataset"
    return MTLTorchDataset


def __getattr__(name: str):
    if name == "MTLTorchDataset":
        return _build_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
