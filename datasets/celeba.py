"""CelebA: 40 binary face attributes, from a user-provided directory (torchvision layout).

Expected files under ``root`` (or ``root/celeba``, torchvision's own folder)::

    img_align_celeba/000001.jpg ...
    list_attr_celeba.txt     line 1: image count; line 2: the 40 attribute names;
                             then "000001.jpg -1  1 ..." (40 values in {-1, 1})
    list_eval_partition.txt  "000001.jpg 0" (0 train, 1 validation, 2 test)

Train = partition 0, test = partition 2. With ``val_fraction > 0`` the validation split comes
from CelebA's own validation partition (1), not from the training images: the dataset ships the
split its protocol selects models on, and using it keeps the train split the official partition
0 at every setting. So here, unlike the other loaders, the train split itself never changes with
``val_fraction`` (train + val is partition 0's subsample plus partition 1's, not the
``val_fraction=0`` train split), and ``val_fraction`` sets the validation split's *size*,
``round(val_fraction * n_train)`` images (at least 1), a seeded subsample of partition 1 (all of
it when it holds fewer). Images are centre-cropped to a square and downscaled to
``image_size`` with PIL (imported lazily), one at a time when an item is read: the loader
returns :class:`~.items.StreamedMTLData` (training reads it through a DataLoader with workers),
so memory does not grow with the number of images. Attributes -1/1 become targets 0/1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import DatasetError, TaskSpec
from .arrays import VAL_STREAM
from .items import ImageFileItems, StreamedMTLData
from .options import VAL_FRACTION, Int, by_profile, check_option
from .paths import resolve_data_root, sha256
from .registry import register_dataset

REQUIRED = ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt")
SOURCE = "CelebA (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html), torchvision layout"


def read_image(path: Path, size: int):
    """One image as ``(3, size, size)`` float32 in [0, 1]: centre square crop, then resize."""
    try:
        from PIL import Image
    except ImportError as err:
        raise DatasetError(
            f"reading {path} needs Pillow; install it with `pip install pillow`"
        ) from err
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            # Image.Resampling appeared in Pillow 9.1; the bare constant works everywhere.
            bilinear = getattr(Image, "Resampling", Image).BILINEAR
            img = img.crop(box).resize((size, size), bilinear)
            return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    except FileNotFoundError:
        raise DatasetError(f"image file {path} not found (listed in the annotations)") from None
    except OSError as err:
        raise DatasetError(f"cannot read image file {path}: {err}") from err


def resolve_root(option_root, data_root, subdir: str, required, dataset: str) -> Path:
    """``option_root`` if given, else ``<data root>/<subdir>``; accept a nested ``<subdir>``
    folder (torchvision's layout); raise naming the missing entries otherwise."""
    if option_root is not None:
        base, how = Path(option_root).expanduser(), "given as option root"
    else:
        data_dir, _ = resolve_data_root(data_root)
        base, how = data_dir / subdir, "the data root's subfolder"
    for candidate in (base, base / subdir):
        if all((candidate / name).exists() for name in required):
            return candidate
    missing = [n for n in required if not (base / n).exists()]
    raise DatasetError(
        f"{dataset}: directory {base} ({how}) lacks {missing}. Expected {list(required)}; "
        f"pass the folder with load_dataset({dataset!r}, root=DIR), or put it at "
        f"<data root>/{subdir} (data root: --data-root or SELECTIVE_SHARING_DATA)."
    )


def _read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    names = lines[1].split()
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DatasetError(
                f"{path}, line {number}: {len(parts) - 1} values, expected {len(names)} "
                f"(one per attribute named on line 2)"
            )
        files.append(parts[0])
        rows.append([int(v) for v in parts[1:]])
    values = np.asarray(rows, dtype=np.int64).reshape(-1, len(names))
    if not np.isin(values, (-1, 1)).all():
        raise DatasetError(f"{path}: attribute values must be -1 or 1; found {np.unique(values)}")
    return names, files, (values > 0).astype(np.float32)


def _read_partition(path: Path) -> dict[str, int]:
    return {
        f: int(p)
        for f, p in (line.split() for line in path.read_text().splitlines() if line.strip())
    }


def _partition_items(folder: Path, files: list[str], targets: np.ndarray,
                     partition: dict[str, int], part: int, cap: int | None, label: str,
                     rng: np.random.Generator, image_size: int) -> ImageFileItems:
    """The images of partition ``part`` (0 train, 2 test), at most ``cap`` of them (a seeded
    subsample; ``label`` names the cap's option in the error for a bad one)."""
    idx = np.asarray([i for i, f in enumerate(files) if partition.get(f) == part], dtype=int)
    if idx.size == 0:
        raise DatasetError(
            f"celeba: no image of partition {part} in {folder / 'list_eval_partition.txt'}"
        )
    if cap is not None and idx.size > check_option(label, cap, Int(1), "celeba"):
        idx = np.sort(rng.choice(idx, size=cap, replace=False))
    y = targets[idx]
    return ImageFileItems(folder / "img_align_celeba", [files[i] for i in idx], y,
                          np.ones(y.shape, dtype=bool), image_size)


@register_dataset("celeba")
def load_celeba(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    root: str | os.PathLike | None = None,
    image_size: int = 32,
    max_train: int | None = None,
    max_test: int | None = None,
    val_fraction: float = 0.0,
) -> StreamedMTLData:
    """Load CelebA from a directory, as a streamed dataset (images decoded per item).

    Parameters
    ----------
    profile : {"quick", "full"}
        Default subsample: quick at most 2000 train / 500 test images; full all of them
        (162,770 train images; streamed, so memory does not grow with the count).
    seed : int
        Seeds the subsample (when there are more images than ``max_train`` / ``max_test``).
    data_root : optional
        Used when ``root`` is None: the folder ``<data root>/celeba``.
    allow_substitute : bool
        Unused: there is no substitute; a missing directory is an error.
    root : str or path-like, optional
        The CelebA folder.
    image_size : int
        Output side length in pixels.
    max_train, max_test : int, optional
        Cap on the images per split; None takes the profile's default (None under full:
        no cap).
    val_fraction : float
        In [0, 0.5]. > 0: a validation split of ``round(val_fraction * n_train)`` images (at
        least 1) from the official validation partition (1), a subsample drawn from
        ``default_rng([seed, VAL_STREAM])`` when the partition holds more (see the module
        docstring: the train and test splits are the same for every value). 0 (default): no
        validation split. When > 0, ``provenance`` records ``val_fraction``, ``n_val`` and
        ``val_source``.
    """
    image_size = check_option("image_size", image_size, Int(4), "celeba")
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, "celeba")
    max_train = by_profile(max_train, profile, 2000, None)
    max_test = by_profile(max_test, profile, 500, None)
    folder = resolve_root(root, data_root, "celeba", REQUIRED, "celeba")
    attr_path = folder / "list_attr_celeba.txt"
    names, files, targets = _read_attributes(attr_path)
    partition = _read_partition(folder / "list_eval_partition.txt")
    rng = np.random.default_rng(seed)
    train, test = (
        _partition_items(folder, files, targets, partition, part, cap, label, rng, image_size)
        for part, cap, label in ((0, max_train, "max_train"), (2, max_test, "max_test"))
    )
    val = None
    if val_fraction > 0:
        n_val = max(1, round(val_fraction * len(train)))
        val = _validation_items(folder, files, targets, partition, n_val, seed, image_size)
    data = _dataset(folder, names, train, test, seed, image_size, val)
    if val is not None:
        data.provenance.update(val_fraction=val_fraction, n_val=len(val),
                               val_source="official validation partition (1)")
    return data


def _validation_items(folder: Path, files: list[str], targets: np.ndarray,
                      partition: dict[str, int], n_val: int, seed: int,
                      image_size: int) -> ImageFileItems:
    """``n_val`` images of the validation partition (1), a seeded subsample when it holds more
    (from a random stream of its own: the train/test subsamples stay the same)."""
    idx = np.asarray([i for i, f in enumerate(files) if partition.get(f) == 1], dtype=int)
    if idx.size == 0:
        raise DatasetError(
            f"celeba: val_fraction > 0 takes the validation split from partition 1, but "
            f"{folder / 'list_eval_partition.txt'} lists no image of partition 1; mark some "
            "images 1 there, or load with val_fraction=0"
        )
    if idx.size > n_val:
        idx = np.sort(np.random.default_rng([seed, VAL_STREAM]).choice(idx, n_val, replace=False))
    y = targets[idx]
    return ImageFileItems(folder / "img_align_celeba", [files[i] for i in idx], y,
                          np.ones(y.shape, dtype=bool), image_size)


def _dataset(folder: Path, names: list[str], train: ImageFileItems, test: ImageFileItems,
             seed: int, image_size: int, val: ImageFileItems | None = None) -> StreamedMTLData:
    """The validated CelebA dataset: 40 binary tasks, provenance with the annotations' hash."""
    data = StreamedMTLData(
        name="celeba",
        train=train,
        test=test,
        tasks=[TaskSpec(n, "binary") for n in names],
        groups=None,
        provenance={
            "name": "celeba",
            "variant": "real",
            "root": str(folder),
            "attributes_sha256": sha256(folder / "list_attr_celeba.txt"),
            "seed": seed,
            "image_size": image_size,
            "n_train": len(train),
            "n_test": len(test),
            "streamed": True,
        },
        main_metric="accuracy",
        val=val,
    )
    return data.validate()
