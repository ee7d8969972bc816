"""Write tiny fixture directories in the real on-disk formats, so the user-data loaders are
tested end to end without the real (large, licensed) data. Needs Pillow (imported lazily)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]


def _write_jpeg(path: Path, rng: np.random.Generator, width: int, height: int) -> None:
    from PIL import Image

    # A smooth colour gradient plus noise: compresses to a few hundred bytes.
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, 3)
    pixels = ramp + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=85)


def write_celeba_fixture(root: str | os.PathLike, n_images: int = 12, seed: int = 0) -> Path:
    """Write a tiny CelebA folder in torchvision's layout and the exact annotation formats.

    Parameters
    ----------
    root : str or path-like
        Folder to create (or fill).
    n_images : int
        Number of images, >= 3; partitions cycle train x4, validation, test (the last image
        is forced into the test partition if the cycle gave none).
    seed : int
        Seeds the attribute values and pixels.

    Returns
    -------
    Path
        ``root``, holding ``img_align_celeba/000001.jpg ...``, ``list_attr_celeba.txt`` and
        ``list_eval_partition.txt``.
    """
    if n_images < 3:
        raise ValueError(f"n_images={n_images}: the fixture needs >= 3 images (one per split)")
    root = Path(root)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = [f"{i + 1:06d}.jpg" for i in range(n_images)]
    values = rng.choice([-1, 1], size=(n_images, len(CELEBA_ATTRIBUTES)))
    partition = np.resize([0, 0, 0, 0, 1, 2], n_images)
    if not (partition == 2).any():
        partition[-1] = 2
    for name in files:  # the real images are 178 x 218; these keep the aspect, tiny
        _write_jpeg(root / "img_align_celeba" / name, rng, 36, 44)
    # Real layout: count, names separated by spaces (trailing space), values as "%2d".
    lines = [str(n_images), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = [f"{f} {p}" for f, p in zip(files, partition)]
    (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return root


def write_omniart_fixture(
    root: str | os.PathLike,
    n: int = 12,
    seed: int = 0,
    *,
    with_split: bool = False,
    tasks_json: dict[str, str] | None = None,
) -> Path:
    """Write a tiny OmniArt-style folder: ``attributes.csv``, ``images/*.jpg``.

    Columns: ``image``; ``artist`` (3 names: multiclass); ``creation_year`` (numeric:
    regression; row 0 empty); ``is_painting`` (0/1: binary; row 1 "NA"); ``school``
    (multiclass; row 2 empty); and ``split`` when ``with_split`` (every 4th row "test").

    Parameters
    ----------
    root : str or path-like
    n : int
        Number of rows/images, >= 6.
    seed : int
    with_split : bool
        Add the optional split column.
    tasks_json : dict, optional
        Written as ``tasks.json`` (type overrides) when given.

    Returns
    -------
    Path
        ``root``.
    """
    if n < 6:
        raise ValueError(f"n={n}: the fixture needs >= 6 rows")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    artists = ["Rembrandt van Rijn", "Claude Monet", "Hokusai"]
    schools = ["Dutch", "French", "Japanese", "Italian"]
    header = ["image", "artist", "creation_year", "is_painting", "school"]
    header += ["split"] if with_split else []
    rows = []
    for i in range(n):
        name = f"art_{i:04d}.jpg"
        _write_jpeg(root / "images" / name, rng, int(rng.integers(20, 40)), 30)
        row = [name, artists[i % 3], f"{rng.uniform(1500, 1900):.1f}", str(i % 2)]
        row += [schools[(3 * i + seed) % len(schools)]]
        row += ["test" if i % 4 == 3 else "train"] if with_split else []
        rows.append(row)
    rows[0][2], rows[1][3], rows[2][4] = "", "NA", ""
    with open(root / "attributes.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    if tasks_json is not None:
        (root / "tasks.json").write_text(json.dumps(tasks_json))
    return root
