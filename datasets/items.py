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
- :class:`SubsetItems`: some items of another dataset (a validation split carved out of a
  training split).
- :func:`from_datasets`: your own ``Dataset`` objects plus task specs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import check_labels_left, validation_rows
from .base import TASK_TYPES, DatasetError, MTLData, TaskList, TaskSpec
from .options import SPLIT_OR_VAL, VAL_FRACTION, check_option


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


class SubsetItems:
    """Items ``index`` of another map-style dataset, in that order: item ``i`` is
    ``items[index[i]]``.

    Parameters
    ----------
    items : map-style dataset
        ``len(items)`` and ``items[i] -> (x, y, m)``.
    index : array-like of int
        The items kept.
    labels : (y, m), optional
        The kept items' targets and masks, ``(len(index), n_tasks)`` each, when the caller has
        them; else :meth:`labels` subsets ``items``' labels (:func:`split_labels`).
    """

    def __init__(self, items: Any, index: Sequence[int],
                 labels: tuple[np.ndarray, np.ndarray] | None = None):
        self.items = items
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self._labels = labels

    def __len__(self) -> int:
        return int(self.index.size)

    def __getitem__(self, i: int) -> Any:
        return self.items[int(self.index[i])]

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept items' targets and masks, ``(len(self), n_tasks)`` each."""
        if self._labels is not None:
            return self._labels
        y, m = split_labels(self.items)
        return y[self.index], m[self.index]


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
    val : map-style dataset or None
        The validation split, items as in ``train``; None (the default) when the dataset has
        none. Choices are made on it; trainers train on ``train`` only and ignore it.

    ``y_test``/``m_test`` (and train, val) come from the split's ``labels()`` when it has one,
    else from one pass over its items (then cached). ``y_val``/``m_val`` are None without a
    validation split.
    """

    name: str
    train: Any
    test: Any
    tasks: list[TaskSpec]
    groups: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    main_metric: str = "rmse"
    extras: dict[str, Any] = field(default_factory=dict)
    val: Any = None
    streamed = True  # class attribute: core chooses the DataLoader path on it

    def __post_init__(self) -> None:
        self._labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(_as_numpy(self.train[0][0]).shape)

    @property
    def has_validation(self) -> bool:
        """Whether the dataset has a validation split (``val`` is not None)."""
        return self.val is not None

    def labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(y, m)`` of a whole split (``"train"``, ``"val"`` or ``"test"``), ``(n, n_tasks)``
        each."""
        check_option("split", split, SPLIT_OR_VAL)
        if split == "val" and self.val is None:
            raise DatasetError(f"dataset {self.name!r} has no validation split; load it with "
                               "val_fraction > 0")
        if split not in self._labels:
            self._labels[split] = split_labels(getattr(self, split))
        return self._labels[split]

    y_train = property(lambda self: self.labels("train")[0])
    m_train = property(lambda self: self.labels("train")[1])
    y_test = property(lambda self: self.labels("test")[0])
    m_test = property(lambda self: self.labels("test")[1])
    y_val = property(lambda self: self.labels("val")[0] if self.has_validation else None)
    m_val = property(lambda self: self.labels("val")[1] if self.has_validation else None)

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
        for split in ("train", "test", *(("val",) if self.has_validation else ())):
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
    DataLoader, with the same batches (and so the same events) as the in-memory path. A
    validation split comes along as ``val``."""
    val = ArrayItems(data.x_val, data.y_val, data.m_val) if data.has_validation else None
    return StreamedMTLData(
        name=data.name, train=ArrayItems(data.x_train, data.y_train, data.m_train),
        test=ArrayItems(data.x_test, data.y_test, data.m_test), tasks=list(data.tasks),
        groups=data.groups, provenance=dict(data.provenance), main_metric=data.main_metric,
        extras=dict(data.extras), val=val)


def from_datasets(train: Any, test: Any, tasks: Sequence[TaskSpec | tuple[str, str] | str],
                  *, name: str = "user", groups: Sequence[int] | None = None,
                  main_metric: str | None = None, val_fraction: float = 0.0,
                  seed: int = 0) -> StreamedMTLData:
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
    val_fraction : float
        Share of the ``train`` items held out as the validation split, in [0, 0.5]: a seeded
        random share (at least one item when > 0, always leaving one for training), seen
        through :class:`SubsetItems` (``train`` and ``val`` keep the items' order). Carving
        reads every train label once (``labels()``, or one pass over the items). 0 (the
        default): no validation split, ``train`` is your dataset itself.
    seed : int
        Seeds the validation split (``default_rng([seed, VAL_STREAM])``); unused when
        ``val_fraction`` is 0.

    Returns
    -------
    StreamedMTLData
        Validated; ``provenance`` ``{"name", "variant": "user", "streamed": True, "n_train",
        "n_test"}``, plus ``"n_val"``, ``"val_fraction"`` and ``"seed"`` when
        ``val_fraction > 0``.
    """
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, name)
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
    val = None
    if val_fraction > 0:
        train, val = _carve_items(train, specs, val_fraction, seed, name)
    data = StreamedMTLData(
        name=name, train=train, test=test, tasks=specs,
        groups=None if groups is None else np.asarray(groups, dtype=np.int64),
        provenance={"name": name, "variant": "user", "streamed": True},
        main_metric=main_metric, val=val)
    data.validate()
    data.provenance.update(n_train=len(train), n_test=len(test))
    if val is not None:
        data.provenance.update(n_val=len(val), val_fraction=val_fraction, seed=seed)
    return data


def _carve_items(train: Any, specs: list[TaskSpec], val_fraction: float, seed: int,
                 name: str) -> tuple[SubsetItems, SubsetItems]:
    """``(train, val)``: a seeded random ``val_fraction`` of ``train``'s items as the validation
    split, both :class:`SubsetItems` of ``train`` with their labels."""
    if not hasattr(train, "__len__") or not hasattr(train, "__getitem__"):
        raise DatasetError(f"{name}: train is a {type(train).__name__}; it must be a map-style "
                           "dataset (len(ds) and ds[i] -> (x, y, mask))")
    y, m = split_labels(train)
    if m.ndim != 2 or m.shape[1] != len(specs):
        raise DatasetError(f"{name}: train's masks have shape {m.shape}; expected "
                           f"({len(train)}, {len(specs)}), one entry per task")
    rows = validation_rows(len(train), val_fraction, seed)
    check_labels_left(m, rows, [s.name for s in specs], val_fraction, name)
    keep = np.setdiff1d(np.arange(len(train)), rows)
    return (SubsetItems(train, keep, (y[keep], m[keep])),
            SubsetItems(train, rows, (y[rows], m[rows])))


__all__ = ["ArrayItems", "ImageFileItems", "StreamedMTLData", "SubsetItems", "from_datasets",
           "split_labels", "stream"]
