"""OmniArt-style art collections: a user-provided CSV of attributes plus images.

Layout under ``root`` (or ``<data root>/omniart``)::

    attributes.csv   header row; an "image" column (file name under images/), an optional
                     "split" column ("train" / "test"), every other column is a task
    images/          the image files
    tasks.json       optional: {"column": "regression" | "binary" | "multiclass" | "ignore"}

Task types, unless ``tasks.json`` says otherwise: columns whose values are all 0/1 are
``binary``; all numeric, ``regression``; anything else ``multiclass`` (classes sorted; names in
``extras["class_names"]``). Empty cells and NA/NaN/None/null are missing labels (mask False).
Regression targets are standardized per task with training statistics;
``extras["task_target_scale"]`` / ``extras["task_target_offset"]`` ``(n_tasks,)`` map them back
(not the scalar ``target_scale`` of one-unit datasets: columns here have different units).
Without a split column, a seeded random ``test_fraction`` of the rows is the test set. With
``val_fraction > 0`` a seeded random share of the training rows (from a random stream of its own)
becomes the validation split; the regression statistics are computed on the whole training part
(train + val) first, so no target changes with ``val_fraction``.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from .arrays import check_labels_left, validation_rows
from .base import TASK_TYPES, DatasetError, TaskSpec
from .celeba import resolve_root
from .items import ImageFileItems, StreamedMTLData
from .options import VAL_FRACTION, Int, Real, by_profile, check_option
from .paths import sha256
from .registry import register_dataset

REQUIRED = ("attributes.csv", "images")
MISSING = {"", "na", "nan", "none", "null"}


@register_dataset("omniart")
def load_omniart(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    root: str | os.PathLike | None = None,
    image_size: int = 32,
    test_fraction: float = 0.2,
    max_samples: int | None = None,
    val_fraction: float = 0.0,
) -> StreamedMTLData:
    """Load an OmniArt-style directory (see the module docstring for the layout), streamed:
    images are decoded when an item is read, never all at once.

    Parameters
    ----------
    profile : {"quick", "full"}
        quick reads at most 2000 rows (seeded subsample); full reads all.
    seed : int
        Seeds the subsample and the split (when the CSV has no split column).
    data_root : optional
        Used when ``root`` is None: the folder ``<data root>/omniart``.
    allow_substitute : bool
        Unused: there is no substitute.
    root : str or path-like, optional
        The collection's folder.
    image_size : int
        Images are centre-cropped and resized to ``(3, image_size, image_size)``.
    test_fraction : float
        Share of rows held out when there is no split column.
    max_samples : int, optional
        Cap on rows read; None takes the profile's default.
    val_fraction : float
        Share of the training rows (those not in the test split, whether the split column or
        ``test_fraction`` chose it) held out as the validation split, in [0, 0.5]: a random
        share (at least one row when > 0, always leaving one) drawn from
        ``default_rng([seed, VAL_STREAM])``, so the subsample and the test split are the same
        for every value. Regression offsets and scales use the whole training part (train +
        val). 0 (default): no validation split; when > 0 ``provenance`` records
        ``val_fraction`` and ``n_val``.
    """
    image_size = check_option("image_size", image_size, Int(4), "omniart")
    test_fraction = check_option("test_fraction", test_fraction, Real(0.01, 0.99), "omniart")
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, "omniart")
    cap = by_profile(max_samples, profile, 2000, None)
    folder = resolve_root(root, data_root, "omniart", REQUIRED, "omniart")
    csv_path = folder / "attributes.csv"
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DatasetError(f"{csv_path}: no data rows below the header")
    columns = list(rows[0])
    if "image" not in columns:
        raise DatasetError(f"{csv_path}: no 'image' column; found columns {columns}")
    rng = np.random.default_rng(seed)
    if cap is not None and len(rows) > check_option("max_samples", cap, Int(2), "omniart"):
        rows = [rows[i] for i in np.sort(rng.choice(len(rows), size=cap, replace=False))]
    return _assemble(folder, rows, columns, rng, seed, test_fraction, image_size, val_fraction)


def _assemble(folder, rows: list[dict[str, str]], columns: list[str], rng: np.random.Generator,
              seed: int, test_fraction: float, image_size: int,
              val_fraction: float = 0.0) -> StreamedMTLData:
    """The validated dataset of :func:`load_omniart` from the CSV's (subsampled) ``rows``:
    task types, the split (``rng`` draws it when there is no split column), targets, and the
    validation rows carved out of the training rows when ``val_fraction > 0``."""
    csv_path = folder / "attributes.csv"
    overrides = _read_overrides(folder / "tasks.json")
    task_columns = [c for c in columns if c not in ("image", "split")]
    task_columns = [c for c in task_columns if overrides.get(c) != "ignore"]
    is_test = _split(rows, "split" in columns, test_fraction, rng, csv_path)
    specs, y, m, class_names = _targets(rows, task_columns, overrides, csv_path)
    offset, scale = _standardize_regression(y, m, ~is_test, specs)
    y = np.where(m, y, 0.0).astype(np.float32)
    classification = any(s.type in ("binary", "multiclass") for s in specs)
    names = np.asarray([r["image"] for r in rows], dtype=object)
    is_val = np.zeros(len(rows), dtype=bool)
    if val_fraction > 0:
        train_rows = np.flatnonzero(~is_test)
        picked = validation_rows(train_rows.size, val_fraction, seed)
        check_labels_left(m[train_rows], picked, [s.name for s in specs], val_fraction, "omniart")
        is_val[train_rows[picked]] = True
    train, test, val = (
        ImageFileItems(folder / "images", list(names[sel]), y[sel], m[sel], image_size)
        for sel in (~is_test & ~is_val, is_test, is_val))
    data = StreamedMTLData(
        name="omniart",
        train=train,
        test=test,
        tasks=specs,
        groups=None,
        provenance={
            "name": "omniart",
            "variant": "real",
            "root": str(folder),
            "attributes_sha256": sha256(csv_path),
            "seed": seed,
            "task_types": {s.name: s.type for s in specs},
            "streamed": True,
        },
        main_metric="accuracy" if classification else "explained_variance",
        extras={
            "task_target_offset": offset,
            "task_target_scale": scale,
            "class_names": class_names,
        },
        val=val if val_fraction > 0 else None,
    )
    if val_fraction > 0:
        data.provenance.update(val_fraction=val_fraction, n_val=len(val))
    return data.validate()


def _read_overrides(path) -> dict[str, str]:
    if not path.exists():
        return {}
    overrides = json.loads(path.read_text())
    allowed = (*TASK_TYPES, "ignore")
    for column, kind in overrides.items():
        if kind not in allowed or kind == "rank":
            raise DatasetError(
                f"{path}: column {column!r} has type {kind!r}; allowed: "
                f"{[a for a in allowed if a != 'rank']}"
            )
    return overrides


def _split(rows, has_split: bool, test_fraction: float, rng, csv_path) -> np.ndarray:
    """Boolean ``(n,)``: True for test rows."""
    if has_split:
        values = [r["split"].strip().lower() for r in rows]
        bad = sorted(set(values) - {"train", "test"})
        if bad:
            raise DatasetError(f"{csv_path}: split column has {bad}; allowed: 'train', 'test'")
        return np.asarray(values) == "test"
    n_test = max(1, round(test_fraction * len(rows)))
    is_test = np.zeros(len(rows), dtype=bool)
    is_test[rng.permutation(len(rows))[:n_test]] = True
    return is_test


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _targets(rows, columns, overrides, csv_path):
    """Task specs, targets ``(n, T)`` float64, mask ``(n, T)`` and class names per task."""
    y = np.zeros((len(rows), len(columns)))
    m = np.zeros((len(rows), len(columns)), dtype=bool)
    specs, class_names = [], {}
    for j, col in enumerate(columns):
        raw = [r[col].strip() for r in rows]
        m[:, j] = [v.lower() not in MISSING for v in raw]
        present = [v for v, ok in zip(raw, m[:, j]) if ok]
        numeric = all(_is_number(v) for v in present)
        inferred = "multiclass"
        if numeric and {float(v) for v in present} <= {0.0, 1.0}:
            inferred = "binary"
        elif numeric:
            inferred = "regression"
        kind = overrides.get(col, inferred)
        if kind in ("binary", "regression") and not numeric:
            raise DatasetError(
                f"{csv_path}: column {col!r} is declared {kind} but holds non-numeric values, "
                f"e.g. {next(v for v in present if not _is_number(v))!r}"
            )
        if kind == "multiclass":
            classes = sorted(set(present), key=lambda v: (float(v), v) if numeric else (0, v))
            if len(classes) < 2:
                raise DatasetError(
                    f"{csv_path}: column {col!r} has {len(classes)} class(es) {classes}; a task "
                    'needs at least 2 (mark it {"' + col + '": "ignore"} in tasks.json)'
                )
            index = {c: i for i, c in enumerate(classes)}
            y[m[:, j], j] = [index[v] for v in present]
            class_names[col] = classes
            specs.append(TaskSpec(col, "multiclass", len(classes)))
        else:
            y[m[:, j], j] = [float(v) for v in present]
            specs.append(TaskSpec(col, kind))
    return specs, y, m, class_names


def _standardize_regression(y, m, train, specs) -> tuple[np.ndarray, np.ndarray]:
    """In place on ``y``: regression columns minus training mean, over training std."""
    offset = np.zeros(len(specs), dtype=np.float32)
    scale = np.ones(len(specs), dtype=np.float32)
    for j, spec in enumerate(specs):
        values = y[m[:, j] & train, j]
        if spec.type != "regression" or values.size == 0:
            continue
        offset[j] = values.mean()
        scale[j] = values.std() if values.std() > 0 else 1.0
        y[:, j] = (y[:, j] - offset[j]) / scale[j]
    return offset, scale
