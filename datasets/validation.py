"""Checks every :class:`~selective_sharing.datasets.base.MTLData` passes before training.

A bad dataset must fail at load time with a message that names the array, the first offending
entry and the fix, not as a NaN loss an hour into a run. Imports numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import TASK_TYPES, VARIANTS, DatasetError, TaskSpec

if TYPE_CHECKING:
    from .base import MTLData


def validate_mtl_data(data: MTLData) -> None:
    """Raise :class:`DatasetError` if ``data`` is inconsistent.

    The validation split (``x_val``, ``y_val``, ``m_val``: all three or none) passes the train
    and test splits' checks, with the same messages naming its arrays. Checks, in order: task
    specs; shapes (inputs ``(n, n_features)`` or ``(n, c, h, w)``,
    targets and masks ``(n, n_tasks)`` with ``n`` matching the inputs); dtypes (float32 inputs
    and targets, bool masks); finite inputs and finite targets (labelled or not: masked-out
    targets must be 0, never NaN, because ``nan * 0`` is still NaN in a masked loss); every task
    labelled on at least one training sample; binary targets in {0, 1} and multiclass targets
    integers in ``[0, n_classes)`` where labelled; ``groups`` of shape ``(n_tasks,)``;
    provenance with ``name`` and ``variant`` in ``VARIANTS``; the optional extras
    ``region_masks`` / ``task_region``.
    """
    where = f"dataset {data.name!r}"
    _check_tasks(data.tasks, where)
    n_tasks = len(data.tasks)
    splits = ("train", "test", *_val_split(data, where))
    for split in splits:
        x, y, m = (getattr(data, f"{a}_{split}") for a in "xym")
        _check_split(x, y, m, split, n_tasks, where)
    for split in splits[1:]:
        x = getattr(data, f"x_{split}")
        if data.x_train.shape[1:] != x.shape[1:]:
            raise DatasetError(
                f"{where}: x_train has sample shape {data.x_train.shape[1:]} but x_{split} has "
                f"{x.shape[1:]}; train and {split} inputs must have the same per-sample shape"
            )
    for split in splits:
        x, y, m = (getattr(data, f"{a}_{split}") for a in "xym")
        _check_finite_inputs(x, f"x_{split}", where)
        _check_targets(y, m, data.tasks, split, where)
    _check_labelled(data.m_train, data.tasks, where)
    _check_groups(data.groups, n_tasks, where)
    _check_provenance(data.provenance, where)
    _check_extras(data, where)


def validate_streamed(data, shapes: dict[str, tuple[int, ...]]) -> None:
    """The checks of :func:`validate_mtl_data` that need no inputs, for a
    :class:`~.items.StreamedMTLData` whose first items have x shapes ``shapes`` per split
    (``"val"`` too when it has a validation split): task specs, labels (of splits that hold them
    in memory), groups and provenance."""
    where = f"dataset {data.name!r}"
    _check_tasks(data.tasks, where)
    splits = ("train", "test", *(("val",) if "val" in shapes else ()))
    for split in splits[1:]:
        if shapes["train"] != shapes[split]:
            raise DatasetError(
                f"{where}: train items have x shape {shapes['train']} but {split} items "
                f"{shapes[split]}; train and {split} inputs must have the same shape")
    for split in splits:
        if hasattr(getattr(data, split), "labels"):
            y, m = data.labels(split)
            for arr, label, dtype in ((y, f"y_{split}", np.float32), (m, f"m_{split}", np.bool_)):
                if arr.shape != (len(getattr(data, split)), len(data.tasks)) or arr.dtype != dtype:
                    raise DatasetError(
                        f"{where}: {split}.labels() gives {label} of shape {arr.shape} and dtype "
                        f"{arr.dtype}; expected ({len(getattr(data, split))}, {len(data.tasks)}) "
                        f"{np.dtype(dtype).name}")
            _check_targets(y, m, data.tasks, split, where)
            if split == "train":
                _check_labelled(m, data.tasks, where)
    _check_groups(data.groups, len(data.tasks), where)
    _check_provenance(data.provenance, where)


def _val_split(data: MTLData, where: str) -> tuple[str, ...]:
    """``("val",)`` when ``data`` has a validation split, ``()`` when it has none; raise when
    only some of ``x_val``, ``y_val``, ``m_val`` are given."""
    given = [a for a in ("x_val", "y_val", "m_val") if getattr(data, a, None) is not None]
    if given and len(given) < 3:
        missing = [a for a in ("x_val", "y_val", "m_val") if a not in given]
        raise DatasetError(
            f"{where}: {', '.join(given)} given but {', '.join(missing)} None; a validation "
            "split needs x_val, y_val and m_val together (all None: no validation split)"
        )
    return ("val",) if given else ()


def _check_tasks(tasks: list[TaskSpec], where: str) -> None:
    if len(tasks) == 0:
        raise DatasetError(f"{where}: tasks is empty; a dataset needs at least one TaskSpec")
    names = [getattr(t, "name", None) for t in tasks]
    for i, t in enumerate(tasks):
        if not isinstance(t, TaskSpec):
            raise DatasetError(f"{where}: tasks[{i}] is {type(t).__name__}, expected TaskSpec")
        if t.type not in TASK_TYPES:
            raise DatasetError(
                f"{where}: task {t.name!r} has type={t.type!r}; allowed types: {TASK_TYPES}"
            )
        if t.type == "multiclass" and t.n_classes < 2:
            raise DatasetError(
                f"{where}: multiclass task {t.name!r} has n_classes={t.n_classes}; "
                "multiclass needs n_classes >= 2 (use type='binary' for two classes "
                "coded 0/1, or drop a constant task)"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{where}: task names must be unique; repeated: {duplicates}")


def _check_split(x, y, m, split: str, n_tasks: int, where: str) -> None:
    for arr, label in ((x, f"x_{split}"), (y, f"y_{split}"), (m, f"m_{split}")):
        if not isinstance(arr, np.ndarray):
            raise DatasetError(f"{where}: {label} is {type(arr).__name__}, expected numpy.ndarray")
    if x.ndim not in (2, 4):
        raise DatasetError(
            f"{where}: x_{split} has shape {x.shape}; inputs must be (n, n_features) "
            "or (n, channels, height, width)"
        )
    for arr, label in ((y, f"y_{split}"), (m, f"m_{split}")):
        if arr.shape != (x.shape[0], n_tasks):
            raise DatasetError(
                f"{where}: {label} has shape {arr.shape}, expected (n, n_tasks) = "
                f"({x.shape[0]}, {n_tasks}) to match x_{split} and the {n_tasks} tasks"
            )
    for arr, label, dtype in (
        (x, f"x_{split}", np.float32),
        (y, f"y_{split}", np.float32),
        (m, f"m_{split}", np.bool_),
    ):
        if arr.dtype != dtype:
            raise DatasetError(
                f"{where}: {label} has dtype {arr.dtype}, expected {np.dtype(dtype)}; "
                f"convert with {label}.astype(numpy.{np.dtype(dtype).name})"
            )


def _first_bad(bad: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _check_finite_inputs(x: np.ndarray, label: str, where: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        index = _first_bad(bad)
        raise DatasetError(
            f"{where}: {label} contains {x[index]} at row {index[0]}, position {index[1:]}; "
            "inputs must be finite: impute the value or drop the sample"
        )


def _check_targets(y: np.ndarray, m: np.ndarray, tasks: list[TaskSpec], split: str, where: str):
    label = f"y_{split}"
    finite = np.isfinite(y)
    if not finite[m].all():
        row, col = _first_bad(~finite & m)
        raise DatasetError(
            f"{where}: {label} contains {y[row, col]} at labelled entry (row {row}, task "
            f"{tasks[col].name!r}, column {col}); fix the value or mark the label missing with "
            f"m_{split}[{row}, {col}] = False (and set {label}[{row}, {col}] = 0)"
        )
    if not finite.all():
        row, col = _first_bad(~finite)
        raise DatasetError(
            f"{where}: {label} contains {y[row, col]} at unlabelled entry (row {row}, task "
            f"{tasks[col].name!r}, column {col}); masked-out targets must be 0, never NaN/Inf "
            f"(nan * 0 is nan in a masked loss): set {label}[~m_{split}] = 0"
        )
    for col, task in enumerate(tasks):
        values = y[m[:, col], col]
        if task.type == "binary":
            bad = (values != 0) & (values != 1)
            allowed = "{0, 1}"
        elif task.type == "multiclass":
            bad = (values != np.round(values)) | (values < 0) | (values >= task.n_classes)
            allowed = f"integers in [0, {task.n_classes})"
        else:
            continue
        if bad.any():
            row = int(np.flatnonzero(m[:, col])[np.argmax(bad)])
            raise DatasetError(
                f"{where}: {task.type} task {task.name!r} has target {y[row, col]} in {label} "
                f"at row {row}, column {col}; {task.type} targets must be {allowed}"
            )


def _check_labelled(m_train: np.ndarray, tasks: list[TaskSpec], where: str) -> None:
    counts = m_train.sum(axis=0)
    if (counts == 0).any():
        col = int(np.argmin(counts))
        raise DatasetError(
            f"{where}: task {tasks[col].name!r} (column {col}) has no labelled training "
            "samples (m_train[:, column] is all False); label at least one training sample "
            "for it or drop the task"
        )


def _check_groups(groups, n_tasks: int, where: str) -> None:
    if groups is None:
        return
    if not isinstance(groups, np.ndarray) or groups.shape != (n_tasks,):
        shape = getattr(groups, "shape", type(groups).__name__)
        raise DatasetError(
            f"{where}: groups has shape {shape}, expected a numpy array of shape "
            f"(n_tasks,) = ({n_tasks},), or None when the dataset has no true groups"
        )
    if not np.issubdtype(groups.dtype, np.integer) or (groups < 0).any():
        raise DatasetError(
            f"{where}: groups must be non-negative integers (dtype {groups.dtype}, "
            f"values {np.unique(groups)[:10].tolist()})"
        )


def _check_provenance(provenance, where: str) -> None:
    if not isinstance(provenance, dict) or "name" not in provenance:
        raise DatasetError(
            f"{where}: provenance must be a dict with at least 'name' and 'variant'; "
            f"found {provenance!r}"
        )
    variant = provenance.get("variant")
    if variant not in VARIANTS:
        raise DatasetError(
            f"{where}: provenance['variant'] is {variant!r}; allowed: {VARIANTS} "
            "(real and substitute numbers must never be mixed silently)"
        )


def _check_extras(data: MTLData, where: str) -> None:
    # Metrics map regression/rank predictions back with one scalar: y * scale + offset.
    for key in ("target_scale", "target_offset"):
        value = data.extras.get(key)
        if value is not None and not (
            np.ndim(value) == 0 and np.isfinite(value) and (key == "target_offset" or value > 0)
        ):
            raise DatasetError(
                f"{where}: extras[{key!r}] is {value!r}; it must be one finite number "
                f"({'> 0, ' if key == 'target_scale' else ''}the same for every task)"
            )
    regions = data.extras.get("region_masks")
    task_region = data.extras.get("task_region")
    if regions is not None:
        regions = np.asarray(regions)
        if data.input_kind != "image" or regions.ndim != 3 or regions.dtype != np.bool_:
            raise DatasetError(
                f"{where}: extras['region_masks'] must be a bool array (n_regions, height, "
                f"width) on image data; found dtype {regions.dtype}, shape {regions.shape}"
            )
        if regions.shape[1:] != data.x_train.shape[2:]:
            raise DatasetError(
                f"{where}: extras['region_masks'] has size {regions.shape[1:]} but images are "
                f"{data.x_train.shape[2:]}"
            )
    if task_region is not None:
        task_region = np.asarray(task_region)
        n_regions = regions.shape[0] if regions is not None else None
        if task_region.shape != (data.n_tasks,) or (
            n_regions is not None and ((task_region < 0) | (task_region >= n_regions)).any()
        ):
            raise DatasetError(
                f"{where}: extras['task_region'] must have shape (n_tasks,) = "
                f"({data.n_tasks},) with values in [0, n_regions); found shape "
                f"{task_region.shape}, values {np.unique(task_region).tolist()}"
            )
