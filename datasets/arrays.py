"""User-provided arrays -> :class:`MTLData`, and small array helpers the loaders share.

:func:`from_arrays`, on a shop's samples with a price (some missing) and a sold flag:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(40, 3))
>>> price = x @ [1.0, 2.0, 0.0]
>>> price[:5] = np.nan  # five samples without a price
>>> data = from_arrays(x, {"price": price, "sold": (x[:, 0] > 0) * 1.0},
...                    {"price": "regression", "sold": "binary"}, name="shop")
>>> data.x_train.shape, data.x_test.shape, data.task_names
((30, 3), (10, 3), ['price', 'sold'])
>>> int(data.m_train[:, 0].sum() + data.m_test[:, 0].sum())
35
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from .base import TASK_TYPES, DatasetError, MTLData, TaskSpec
from .options import VAL_FRACTION, Real, check_option

#: Second word of the validation split's seed, ``numpy.random.default_rng([seed, VAL_STREAM])``:
#: a stream of its own, so carving the validation rows never perturbs a loader's own draws (its
#: train/test split, generated data, subsamples).
VAL_STREAM = 7661


def one_task_mask(task_index: np.ndarray, n_tasks: int) -> np.ndarray:
    """Mask of "one dataset per task" data: each sample labelled for its own task only.

    Parameters
    ----------
    task_index : ndarray of int, shape ``(n,)``
    n_tasks : int

    Returns
    -------
    ndarray of bool, shape ``(n, n_tasks)``
    """
    mask = np.zeros((len(task_index), n_tasks), dtype=bool)
    mask[np.arange(len(task_index)), task_index] = True
    return mask


def scatter_targets(values: np.ndarray, task_index: np.ndarray, n_tasks: int) -> np.ndarray:
    """Targets ``(n, n_tasks)`` float32 holding ``values[i]`` in column ``task_index[i]``, 0
    elsewhere (masked-out targets are 0, never NaN)."""
    y = np.zeros((len(task_index), n_tasks), dtype=np.float32)
    y[np.arange(len(task_index)), task_index] = values
    return y


def one_task_splits(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_tasks: int,
) -> dict[str, np.ndarray]:
    """The six split arrays of :class:`MTLData` (``x_train=``, ``y_train=``, ``m_train=``, ...)
    for "one dataset per task" data: ``train`` / ``test`` are ``(x, target, task_index)``, each
    sample labelled for its own task only (:func:`scatter_targets`, :func:`one_task_mask`)."""
    arrays = {}
    for split, (x, target, task) in (("train", train), ("test", test)):
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = scatter_targets(target, task, n_tasks)
        arrays[f"m_{split}"] = one_task_mask(task, n_tasks)
    return arrays


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, ...]:
    """Standardize columns with the *training* mean and std (constant columns keep scale 1).

    Returns ``(train, test, mean, std)`` with float32 arrays.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    scale = lambda a: ((a - mean) / std).astype(np.float32)
    return scale(train), scale(test), mean.astype(np.float32), std.astype(np.float32)


def validation_count(n: int, val_fraction: float) -> int:
    """How many of ``n`` training rows the validation split takes: ``round(val_fraction * n)``,
    but at least 1 when ``val_fraction > 0`` and ``n >= 2``, and always leaving at least one
    training row (so 0 when ``val_fraction == 0`` or ``n < 2``)."""
    if val_fraction <= 0 or n < 2:
        return 0
    return min(max(round(val_fraction * n), 1), n - 1)


def validation_rows(n: int, val_fraction: float, seed: int,
                    task_index: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of the training rows that form the validation split.

    Parameters
    ----------
    n : int
        Number of training rows.
    val_fraction : float
        Share held out (:func:`validation_count`).
    seed : int
        The dataset's seed; the rows are drawn from ``default_rng([seed, VAL_STREAM])``.
    task_index : ndarray of int, shape ``(n,)``, optional
        One dataset per task: each row's task. Given, every task gives
        ``validation_count(n_t, val_fraction)`` of its own ``n_t`` rows (tasks in ascending
        order); None, a random share of all ``n`` rows.
    """
    rng = np.random.default_rng([seed, VAL_STREAM])
    if task_index is None:
        return np.sort(rng.permutation(n)[:validation_count(n, val_fraction)])
    task_index = np.asarray(task_index)
    rows = [np.zeros(0, dtype=np.int64)]
    for t in np.unique(task_index):
        own = np.flatnonzero(task_index == t)
        rows.append(rng.permutation(own)[:validation_count(own.size, val_fraction)])
    return np.sort(np.concatenate(rows))


def check_labels_left(m_train: np.ndarray, val_rows: np.ndarray, task_names: list[str],
                      val_fraction: float, dataset: str) -> None:
    """Raise :class:`DatasetError` when moving ``val_rows`` to the validation split leaves a
    task that had labelled training samples without any."""
    before = m_train.any(axis=0)
    after = np.delete(m_train, val_rows, axis=0).any(axis=0)
    lost = np.flatnonzero(before & ~after)
    if lost.size:
        raise DatasetError(
            f"dataset {dataset!r}: val_fraction={val_fraction} leaves task "
            f"{task_names[lost[0]]!r} no labelled training sample (its labelled rows all went "
            "to the validation split); lower val_fraction or label more training samples of it"
        )


def carve_validation(data: MTLData, val_fraction: float, seed: int, *,
                     per_task: bool) -> MTLData:
    """``data`` with a validation split carved out of its training part (a loader's last step).

    ``val_fraction == 0`` returns ``data`` itself, unchanged. Otherwise the rows of
    :func:`validation_rows` (per task for one-dataset-per-task data, ``per_task=True``: each
    training row labelled for exactly one task) move to ``x_val``/``y_val``/``m_val``
    (:meth:`MTLData.with_validation`), ``provenance["val_fraction"]`` records the share, and the
    result is validated. Everything the loader computed from the training part (standardization,
    target offset and scale) was computed before, on train + val, so no array changes with
    ``val_fraction`` beyond the rows' move.
    """
    if val_fraction == 0:
        return data
    task_index = None
    if per_task:
        if not (data.m_train.sum(axis=1) == 1).all():
            raise DatasetError(f"dataset {data.name!r}: a per-task validation split needs each "
                               "training row labelled for exactly one task")
        task_index = data.m_train.argmax(axis=1)
    rows = validation_rows(data.x_train.shape[0], val_fraction, seed, task_index)
    check_labels_left(data.m_train, rows, data.task_names, val_fraction, data.name)
    carved = data.with_validation(rows)
    carved.provenance["val_fraction"] = val_fraction
    return carved.validate()


def arrays_sha256(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes: a content fingerprint."""
    digest = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.shape}{arr.dtype.str}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _task_types(task_types, names: list[str]) -> dict[str, str]:
    if isinstance(task_types, str):
        task_types = {n: task_types for n in names}
    missing = [n for n in names if n not in task_types]
    if missing:
        raise DatasetError(f"task_types lacks a type for task(s) {missing}; give one per task")
    for n in names:
        if task_types[n] not in TASK_TYPES:
            raise DatasetError(f"task_types[{n!r}]={task_types[n]!r}; allowed types: {TASK_TYPES}")
    return dict(task_types)


def _stack(values: Mapping[str, np.ndarray], names: list[str], n: int, label: str) -> np.ndarray:
    if set(values) != set(names):
        raise DatasetError(
            f"{label} has tasks {sorted(values)}, expected the tasks of targets: {sorted(names)}"
        )
    columns = [np.asarray(values[k], dtype=np.float64).reshape(-1) for k in names]
    for k, col in zip(names, columns):
        if col.shape[0] != n:
            raise DatasetError(f"{label}[{k!r}] has {col.shape[0]} values, expected {n}")
    return np.stack(columns, axis=1)


def _mask(mask, y: np.ndarray, names: list[str], label: str) -> np.ndarray:
    if mask is None:
        return ~np.isnan(y)  # NaN targets are missing labels; +-Inf is left for validation
    if isinstance(mask, Mapping):
        return _stack(mask, names, y.shape[0], label).astype(bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != y.shape:
        raise DatasetError(f"{label} has shape {mask.shape}, expected (n, n_tasks) = {y.shape}")
    return mask


def _groups(groups, names: list[str]) -> np.ndarray | None:
    if groups is None:
        return None
    if isinstance(groups, Mapping):
        missing = [n for n in names if n not in groups]
        if missing:
            raise DatasetError(f"groups lacks a group for task(s) {missing}")
        groups = [groups[n] for n in names]
    return np.asarray(groups, dtype=np.int64)


def _n_classes(y: np.ndarray, m: np.ndarray, types: list[str]) -> list[int]:
    counts = []
    for col, kind in enumerate(types):
        labelled = y[m[:, col], col]
        finite = labelled[np.isfinite(labelled)]
        top = int(finite.max()) + 1 if kind == "multiclass" and finite.size else 1
        counts.append(max(top, 2) if kind == "multiclass" else 1)
    return counts


def from_arrays(
    inputs: np.ndarray,
    targets: Mapping[str, np.ndarray],
    task_types: Mapping[str, str] | str,
    mask: Mapping[str, np.ndarray] | np.ndarray | None = None,
    groups: Mapping[str, int] | Sequence[int] | None = None,
    *,
    test_inputs: np.ndarray | None = None,
    test_targets: Mapping[str, np.ndarray] | None = None,
    test_mask: Mapping[str, np.ndarray] | np.ndarray | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    name: str = "custom",
    main_metric: str | None = None,
    val_fraction: float = 0.0,
) -> MTLData:
    """Build a validated :class:`MTLData` from your own arrays.

    Parameters
    ----------
    inputs : array-like, shape ``(n, n_features)`` or ``(n, channels, height, width)``
    targets : dict of str -> array-like, each shape ``(n,)``
        One entry per task, in task order. NaN marks a missing label when ``mask`` is None.
        Binary targets are 0/1; multiclass targets are class indices 0..K-1 (K is inferred as
        the largest labelled index + 1, at least 2).
    task_types : dict of str -> str, or str
        ``"regression"``, ``"binary"``, ``"multiclass"`` or ``"rank"`` per task, or one type
        for all tasks.
    mask : dict of str -> array-like of bool, or array-like ``(n, n_tasks)``, optional
        True where a task is labelled. Default: ``~isnan(target)``.
    groups : dict of str -> int, or sequence of int ``(n_tasks,)``, optional
        True task groups, if known (used for the adjusted Rand index).
    test_inputs, test_targets, test_mask : optional
        An explicit test split in the same formats. When omitted, a seeded random
        ``test_fraction`` of the samples is held out.
    test_fraction : float
        Share of samples held out when no test split is given, in (0, 1).
    seed : int
        Seeds the train/test split (and, from a stream of its own, the validation split).
    name : str
        Dataset name recorded in provenance.
    main_metric : str, optional
        Default: ``"accuracy"`` if any task is binary/multiclass, else ``"rmse"``.
    val_fraction : float
        Share of the training samples (the given ones, or those left by the random test split)
        held out as the validation split, in [0, 0.5]: a seeded random share
        (:func:`validation_rows`; at least one sample when > 0, always leaving one for
        training). 0 (the default): no validation split, and every array is what it was
        before the option existed. The test split never depends on it, and train + val is the
        train split of ``val_fraction=0``.

    Returns
    -------
    MTLData
        With ``provenance = {"name", "variant": "user", "source": "user arrays", "sha256",
        "seed"}`` (and ``"val_fraction"`` when > 0); the hash fingerprints the arrays' contents
        (the whole training part and the test split, so it does not change with
        ``val_fraction``). The variant is ``"user"``, as for
        :func:`~selective_sharing.datasets.from_datasets`: data the user supplied, neither a
        verified real dataset file nor generated by this project.
    """
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, name)
    names = list(targets)
    types = _task_types(task_types, names)
    x = np.asarray(inputs, dtype=np.float32)
    y = _stack(targets, names, x.shape[0], "targets")
    m = _mask(mask, y, names, "mask")
    test = (test_inputs, test_targets, test_mask)
    splits = _splits(x, y, m, names, test, test_fraction, seed, name)
    data = _assemble(name, names, [types[n] for n in names], splits, groups, seed, main_metric)
    return carve_validation(data, val_fraction, seed, per_task=False)


def _splits(x, y, m, names: list[str], test: tuple, test_fraction: float, seed: int, name: str):
    """``[(x, y, m) train, (x, y, m) test]``: the given test split ``test = (inputs, targets,
    mask)``, or a random one (:func:`_random_split`) when its inputs are None."""
    test_inputs, test_targets, test_mask = test
    if test_inputs is None:
        if test_targets is not None or test_mask is not None:
            raise DatasetError("test_targets/test_mask given without test_inputs")
        return _random_split(x, y, m, test_fraction, seed, name)
    if test_targets is None:
        raise DatasetError("test_inputs given without test_targets")
    xt = np.asarray(test_inputs, dtype=np.float32)
    yt = _stack(test_targets, names, xt.shape[0], "test_targets")
    return [(x, y, m), (xt, yt, _mask(test_mask, yt, names, "test_mask"))]


def _assemble(name: str, names: list[str], type_list: list[str], splits: list, groups,
              seed: int, main_metric: str | None) -> MTLData:
    """The validated :class:`MTLData` of :func:`from_arrays`: unlabelled targets zeroed, class
    counts inferred from both splits, the arrays' hash in the provenance."""
    y_all = np.concatenate([s[1] for s in splits])
    n_classes = _n_classes(y_all, np.concatenate([s[2] for s in splits]), type_list)
    (x_tr, y_tr, m_tr), (x_te, y_te, m_te) = [
        (xs, np.where(ms, ys, 0.0).astype(np.float32), ms) for xs, ys, ms in splits
    ]
    classification = any(t in ("binary", "multiclass") for t in type_list)
    data = MTLData(
        name=name,
        x_train=x_tr,
        y_train=y_tr,
        m_train=m_tr,
        x_test=x_te,
        y_test=y_te,
        m_test=m_te,
        tasks=[TaskSpec(n, t, k) for n, t, k in zip(names, type_list, n_classes)],
        groups=_groups(groups, names),
        provenance={
            "name": name,
            "variant": "user",
            "source": "user arrays",
            "sha256": arrays_sha256(x_tr, y_tr, m_tr, x_te, y_te, m_te),
            "seed": seed,
        },
        main_metric=main_metric or ("accuracy" if classification else "rmse"),
    )
    return data.validate()


def _random_split(
    x: np.ndarray, y: np.ndarray, m: np.ndarray, test_fraction: float, seed: int, name: str
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``[(x, y, m) train, (x, y, m) test]``: a seeded random ``test_fraction`` held out, each
    split in the samples' original order."""
    check_option("test_fraction", test_fraction, Real(0.0), name)
    order = np.random.default_rng(seed).permutation(x.shape[0])
    n_test = round(test_fraction * x.shape[0])
    if not 0 < n_test < x.shape[0]:
        raise DatasetError(
            f"test_fraction={test_fraction} leaves {n_test} of {x.shape[0]} samples for "
            "testing; it must leave at least one sample in each split"
        )
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return [(x[i], y[i], m[i]) for i in (train, test)]
