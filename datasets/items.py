"""Streamed data: datasets read item by item through a torch ``DataLoader`` instead of arrays.

:class:`StreamedMTLData` is the counterpart of :class:`~.base.MTLData` for data larger than
memory: its ``train`` and ``test`` splits are map-style datasets (``len(ds)``, ``ds[i]`` ->
``(x, y, mask)``), which training reads through a ``DataLoader`` with worker processes and a
seeded, checkpointed sampler. Any ``torch.utils.data.Dataset`` of such items qualifies; the
ones here need no torch (``DataLoader``'s default collate turns their numpy items into
tensors), so this module keeps ``datasets/`` torch-free.

- :class:`ImageFileItems`: images decoded from files per item (CelebA, OmniArt); the labels, small,
  are held in memory.
- :class:`ArrayItems`: in-memory arrays seen as items (tests; data that fits but must be
  streamed the same way).
- :func:`from_datasets`: your own ``Dataset`` objects plus task specs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import TASK_TYPES, DatasetError, MTLData, TaskList, TaskSpec
from .options import SPLIT, check_option


class ArrayItems:
    """Rows of in-memory arrays as ``(x, y, m)`` items (``x[i]`` float32, ``y[i]``, ``m[i]``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, m: np.ndarray):
        self.x, self.y, self.m = x, y, m

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x[i], self.y[i], self.m[i]

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """All targets and masks, ``(n, n_tasks)`` each, without reading any input."""
        return self.y, self.m


class ImageFileItems:
    """Images decoded from files on access: item ``i`` is ``(read_image(paths[i], size), y[i],
    m[i])``; nothing is decoded up front, so memory does not grow with the number of images.

    Parameters
    ----------
    folder : path
        Folder the file names are relative to.
    files : sequence of str
        One file name per item.
    y, m : ndarray ``(n, n_tasks)``
        float32 targets (0 where unlabelled) and bool label mask.
    image_size : int
        Images are centre-cropped to a square and resized to ``(3, image_size, image_size)``.
    """

    def __init__(self, folder: str | os.PathLike, files: Sequence[str], y: np.ndarray,
                 m: np.ndarray, image_size: int):
        if not (len(files) == len(y) == len(m)):
            raise DatasetError(f"{len(files)} image files but {len(y)} target rows and {len(m)} "
                               "mask rows: give one row per image")
        self.folder, self.files = Path(folder), list(files)
        self.y = np.ascontiguousarray(y, dtype=np.float32)
        self.m = np.ascontiguousarray(m, dtype=bool)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from .celeba import read_image

        return read_image(self.folder / self.files[i], self.image_size), self.y[i], self.m[i]

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        return self.y, self.m


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def split_labels(items: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y, m)`` of every item: from ``items.labels()`` when it has one, else by reading every
    item once (inputs included)."""
    if hasattr(items, "labels"):
        y, m = items.labels()
        return np.asarray(y, dtype=np.float32), np.asarray(m, dtype=bool)
    rows = [items[i] for i in range(len(items))]
    return (np.stack([_as_numpy(r[1]) for r in rows]).astype(np.float32),
            np.stack([_as_numpy(r[2]) for r in rows]).astype(bool))


@dataclass
class StreamedMTLData(TaskList):
    """A multi-task dataset whose splits are map-style datasets of ``(x, y, mask)`` items.

    Attributes
    ----------
    name : str
    train, test : map-style datasets
        ``len(ds)`` and ``ds[i] -> (x, y, m)``: x float32 ``input_shape``; y ``(n_tasks,)``
        float32 (0 where unlabelled); m ``(n_tasks,)`` bool. numpy arrays or tensors; a
        ``torch.utils.data.Dataset`` qualifies. Picklable, so DataLoader workers can use them.
    tasks, groups, provenance, main_metric, extras
        As in :class:`~.base.MTLData`.

    ``y_test``/``m_test`` (and train) come from the split's ``labels()`` when it has one, else
    from one pass over its items (then cached).
    """

    name: str
    train: Any
    test: Any
    tasks: list[TaskSpec]
    groups: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    main_metric: str = "rmse"
    extras: dict[str, Any] = field(default_factory=dict)
    streamed = True  # class attribute: core chooses the DataLoader path on it

    def __post_init__(self) -> None:
        self._labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(_as_numpy(self.train[0][0]).shape)

    def labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(y, m)`` of a whole split, ``(n, n_tasks)`` each."""
        check_option("split", split, SPLIT)
        if split not in self._labels:
            self._labels[split] = split_labels(getattr(self, split))
        return self._labels[split]

    y_train = property(lambda self: self.labels("train")[0])
    m_train = property(lambda self: self.labels("train")[1])
    y_test = property(lambda self: self.labels("test")[0])
    m_test = property(lambda self: self.labels("test")[1])

    def inputs(self, split: str, index: Sequence[int]) -> np.ndarray:
        """The inputs of items ``index`` of a split, stacked: ``(len(index), *input_shape)``."""
        items = getattr(self, split)
        return np.stack([_as_numpy(items[int(i)][0]) for i in index]).astype(np.float32)

    def validate(self) -> StreamedMTLData:
        """Check the splits (map-style, non-empty, first item a well-formed ``(x, y, mask)``),
        the labels of splits that hold them in memory (``labels()``), the task specs, groups and
        provenance; raise :class:`DatasetError` naming the offending value. Inputs are not all
        read: a non-finite pixel surfaces as a non-finite loss naming the step and task."""
        from .validation import validate_streamed

        shapes = {}
        for split in ("train", "test"):
            items = getattr(self, split)
            if not hasattr(items, "__getitem__") or not hasattr(items, "__len__"):
                raise DatasetError(f"{self.name}: {split} is a {type(items).__name__}; it must be a "
                                   "map-style dataset (len(ds) and ds[i] -> (x, y, mask))")
            if len(items) == 0:
                raise DatasetError(f"{self.name}: the {split} split has no items")
            item = items[0]
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise DatasetError(f"{self.name}: {split}[0] is a {type(item).__name__}; items must "
                                   "be (x, y, mask) triples")
            x, y, m = (_as_numpy(v) for v in item)
            if x.dtype != np.float32 or x.ndim not in (1, 3) or not np.isfinite(x).all():
                raise DatasetError(f"{self.name}: {split}[0]'s x has dtype {x.dtype} and shape "
                                   f"{x.shape}; x must be finite float32, (n_features,) or "
                                   "(C, H, W)")
            if y.shape != (self.n_tasks,) or m.shape != (self.n_tasks,) or m.dtype != np.bool_:
                raise DatasetError(
                    f"{self.name}: {split}[0] has y {y.shape} and mask {m.shape} {m.dtype}; both "
                    f"must be ({self.n_tasks},) (one entry per task), the mask bool")
            shapes[split] = x.shape
        validate_streamed(self, shapes)
        return self


def stream(data: MTLData) -> StreamedMTLData:
    """The same data as :class:`StreamedMTLData` over :class:`ArrayItems`: trained through a
    DataLoader, with the same batches (and so the same events) as the in-memory path."""
    return StreamedMTLData(
        name=data.name, train=ArrayItems(data.x_train, data.y_train, data.m_train),
        test=ArrayItems(data.x_test, data.y_test, data.m_test), tasks=list(data.tasks),
        groups=data.groups, provenance=dict(data.provenance), main_metric=data.main_metric,
        extras=dict(data.extras))


def from_datasets(train: Any, test: Any, tasks: Sequence[TaskSpec | tuple[str, str] | str],
                  *, name: str = "user", groups: Sequence[int] | None = None,
                  main_metric: str | None = None) -> StreamedMTLData:
    """Your own map-style datasets of ``(x, y, mask)`` items as training data.

    Parameters
    ----------
    train, test : map-style datasets (e.g. ``torch.utils.data.Dataset``)
        Items ``(x, y, mask)``: x float32 ``(C, H, W)`` or ``(n_features,)``; y ``(n_tasks,)``
        float32 with 0 where unlabelled; mask ``(n_tasks,)`` bool. Give them a
        ``labels() -> (y, mask)`` method returning all targets without decoding inputs, or the
        labels are read once by iterating the split.
    tasks : sequence
        ``TaskSpec``, ``(name, type)`` or a name (regression), one per task.
    name : str
        Recorded in the manifest; a name without a registered profile gets the generic defaults
        of its input kind (images: mini-batches and the CNN trunk).
    groups : sequence of int, optional
        True groups, if known (for the adjusted Rand index).
    main_metric : str, optional
        Default: ``accuracy`` if any task is a classification, else ``rmse``.
    """
    specs = []
    for i, t in enumerate(tasks):
        if isinstance(t, TaskSpec):
            specs.append(t)
        elif isinstance(t, str):
            specs.append(TaskSpec(t, "regression"))
        elif isinstance(t, tuple) and len(t) == 2 and t[1] in TASK_TYPES:
            specs.append(TaskSpec(t[0], t[1]))
        else:
            raise DatasetError(f"invalid tasks[{i}]={t!r}: give a TaskSpec, (name, type) with "
                               f"type in {list(TASK_TYPES)}, or a name")
    if main_metric is None:
        classify = any(s.type in ("binary", "multiclass") for s in specs)
        main_metric = "accuracy" if classify else "rmse"
    data = StreamedMTLData(
        name=name, train=train, test=test, tasks=specs,
        groups=None if groups is None else np.asarray(groups, dtype=np.int64),
        provenance={"name": name, "variant": "user", "streamed": True},
        main_metric=main_metric)
    data.validate()
    data.provenance.update(n_train=len(train), n_test=len(test))
    return data


__all__ = ["ArrayItems", "ImageFileItems", "StreamedMTLData", "from_datasets", "split_labels",
           "stream"]
