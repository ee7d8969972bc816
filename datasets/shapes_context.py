"""shapes_context: generated scenes, one target object among distractors.

Each ``(3, 32, 32)`` RGB scene on a dark noisy background holds 1-3 distractors and one target.
The target is the only object with a white outline, and it is drawn last, so it is never
occluded. Its factors: shape (circle, square, triangle), colour (red, yellow, green, blue),
size (small, medium, large: radius 3, 5, 7 pixels) and position (centre anywhere the object fits).
Distractors draw their factors independently, so they are pure context noise.

Tasks read one factor of the target each; true groups = the factor read (4 groups):

- ``task_set="binary"`` (default): is_circle, is_square | is_red, is_warm (red or yellow) |
  is_large, is_small | is_left, is_top (centre in the left / top half).
- ``task_set="mixed"``: the second task of each factor is multiclass instead: shape (3),
  colour (4), size (3), quadrant (4: top-left, top-right, bottom-left, bottom-right).

Rendering is vectorized numpy (a few hundred ms for the quick sizes). With ``val_fraction > 0``
a seeded random share of the training scenes becomes the validation split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import carve_validation
from .base import MTLData, TaskSpec
from .options import VAL_FRACTION, Int, OneOf, by_profile, check_option, check_options
from .registry import register_dataset

SIZE = 32
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (0.90, 0.12, 0.10),
    "yellow": (0.92, 0.85, 0.12),
    "green": (0.12, 0.78, 0.22),
    "blue": (0.15, 0.30, 0.95),
}
RADII = (3.0, 5.0, 7.0)
FACTORS = ("shape", "colour", "size", "position")


@register_dataset("shapes_context")
def load_shapes_context(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    task_set: str = "binary",
    max_distractors: int = 3,
    val_fraction: float = 0.0,
) -> MTLData:
    """Generate the scenes and their 8 tasks.

    Parameters
    ----------
    profile : {"quick", "full"}
        Default sizes: quick 3000 train / 1000 test scenes, full 20000 / 2000.
    seed : int
        Seeds every factor, position and the background noise.
    data_root, allow_substitute
        Unused (generated data).
    n_train, n_test : int, optional
        Number of scenes; None takes the profile's default.
    task_set : {"binary", "mixed"}
        Eight binary tasks, or four binary and four multiclass.
    max_distractors : int
        Each scene has 1..max_distractors distractors (0 allowed: no distractors).
    val_fraction : float
        Share of the ``n_train`` training scenes held out as the validation split, in
        [0, 0.5]: a random share (at least one scene when > 0) drawn from
        ``default_rng([seed, VAL_STREAM])``, so the scenes and the test split are the same for
        every value (nothing is computed from training data). 0 (default): no validation
        split; ``provenance["val_fraction"]`` records it when > 0, and
        ``extras["factors_val"]`` holds the validation scenes' factors.

    Returns
    -------
    MTLData
        ``x`` ``(n, 3, 32, 32)`` in [0, 1]; ``groups`` ``(8,)`` the factor read;
        ``extras``: ``object_masks_test`` ``(n_test, 32, 32)`` bool (the target's pixels),
        ``task_region`` ``(8,)`` zeros (every task needs region 0: the target object),
        ``factors_train`` / ``factors_test``: dict of ``(n,)`` arrays (shape, colour, size, cx,
        cy).
    """
    generator = check_options(
        "shapes_context",
        n_train=(by_profile(n_train, profile, 3000, 20000), Int(1)),
        n_test=(by_profile(n_test, profile, 1000, 2000), Int(1)),
        task_set=(task_set, OneOf(("binary", "mixed"))),
        max_distractors=(max_distractors, Int(0)),
    )
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, "shapes_context")
    return carve_validation(_generate(seed, generator), val_fraction, seed, per_task=False)


def _generate(seed: int, generator: dict[str, Any]) -> MTLData:
    """:func:`load_shapes_context` on its checked options, recorded in the provenance."""
    n_train, n_test, task_set = generator["n_train"], generator["n_test"], generator["task_set"]
    max_distractors = generator["max_distractors"]
    rng = np.random.default_rng(seed)
    x_tr, f_tr, _ = render_scenes(rng, n_train, max_distractors)
    x_te, f_te, masks_te = render_scenes(rng, n_test, max_distractors)
    tasks, groups = _task_specs(task_set)
    data = MTLData(
        name="shapes_context",
        x_train=x_tr,
        y_train=_targets(f_tr, task_set),
        m_train=np.ones((n_train, len(tasks)), dtype=bool),
        x_test=x_te,
        y_test=_targets(f_te, task_set),
        m_test=np.ones((n_test, len(tasks)), dtype=bool),
        tasks=tasks,
        groups=groups,
        provenance={
            "name": "shapes_context",
            "variant": "synthetic",
            "seed": seed,
            "generator": generator,
        },
        main_metric="accuracy",
        extras={
            "object_masks_test": masks_te,
            "task_region": np.zeros(len(tasks), dtype=np.int64),
            "factors_train": f_tr,
            "factors_test": f_te,
        },
    )
    return data.validate()


def _task_specs(task_set: str) -> tuple[list[TaskSpec], np.ndarray]:
    if task_set == "binary":
        names = ["is_circle", "is_square", "is_red", "is_warm"]
        names += ["is_large", "is_small", "is_left", "is_top"]
        tasks = [TaskSpec(n, "binary") for n in names]
    else:
        tasks = [
            TaskSpec("is_circle", "binary"),
            TaskSpec("shape", "multiclass", len(SHAPES)),
            TaskSpec("is_warm", "binary"),
            TaskSpec("colour", "multiclass", len(COLOURS)),
            TaskSpec("is_large", "binary"),
            TaskSpec("size", "multiclass", len(RADII)),
            TaskSpec("is_left", "binary"),
            TaskSpec("quadrant", "multiclass", 4),
        ]
    return tasks, np.repeat(np.arange(len(FACTORS)), 2).astype(np.int64)


def _targets(f: dict[str, np.ndarray], task_set: str) -> np.ndarray:
    left, top = f["cx"] < SIZE / 2, f["cy"] < SIZE / 2
    warm = f["colour"] <= 1  # red, yellow
    if task_set == "binary":
        cols = [f["shape"] == 0, f["shape"] == 1, f["colour"] == 0, warm]
        cols += [f["size"] == 2, f["size"] == 0, left, top]
    else:
        quadrant = 2 * (~top) + (~left)
        cols = [f["shape"] == 0, f["shape"], warm, f["colour"]]
        cols += [f["size"] == 2, f["size"], left, quadrant]
    return np.stack(cols, axis=1).astype(np.float32)


def _draw_factors(rng, n: int) -> dict[str, np.ndarray]:
    size = rng.integers(0, len(RADII), n)
    radius = np.asarray(RADII)[size]
    # Centres keep the outlined object (a triangle reaches 1.25 * (radius + 1.5)) inside.
    margin = 1.25 * radius + 2.0
    cx = margin + rng.random(n) * (SIZE - 1 - 2 * margin)
    cy = margin + rng.random(n) * (SIZE - 1 - 2 * margin)
    return {
        "shape": rng.integers(0, len(SHAPES), n),
        "colour": rng.integers(0, len(COLOURS), n),
        "size": size,
        "cx": cx,
        "cy": cy,
    }


def _shape_masks(f: dict[str, np.ndarray], grow: float = 0.0) -> np.ndarray:
    """Pixel masks ``(n, SIZE, SIZE)`` of the objects, enlarged by ``grow`` pixels."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    masks = np.zeros((len(f["shape"]), SIZE, SIZE), dtype=bool)
    for shape in range(len(SHAPES)):
        sel = np.flatnonzero(f["shape"] == shape)  # draw each shape only where it is used
        dx = xx[None] - f["cx"][sel, None, None].astype(np.float32)
        dy = yy[None] - f["cy"][sel, None, None].astype(np.float32)
        r = np.asarray(RADII, dtype=np.float32)[f["size"][sel]][:, None, None] + grow
        if shape == 0:
            masks[sel] = dx**2 + dy**2 <= r**2
        elif shape == 1:  # squares and triangles roughly match the circle's area
            masks[sel] = np.maximum(np.abs(dx), np.abs(dy)) <= 0.89 * r
        else:  # upward triangle: apex at cy - h, base at cy + 0.8 h
            h = 1.25 * r
            masks[sel] = (dy >= -h) & (dy <= 0.8 * h) & (np.abs(dx) <= (dy + h) * 0.62)
    return masks


def _paint(images: np.ndarray, masks: np.ndarray, rgb: np.ndarray) -> None:
    """In place: ``images[i, :, mask_i] = rgb[i]``. images ``(n, 3, H, W)``, rgb ``(n, 3)``."""
    i, y, x = np.nonzero(masks)
    images[i, :, y, x] = rgb[i]


def render_scenes(rng, n: int, max_distractors: int):
    """Render ``n`` scenes.

    Returns
    -------
    images : ndarray float32 ``(n, 3, 32, 32)`` in [0, 1]
    factors : dict of str -> ndarray ``(n,)``, the target's factors
    target_masks : ndarray bool ``(n, 32, 32)``
    """
    palette = np.asarray(list(COLOURS.values()), dtype=np.float32)
    images = 0.08 + 0.03 * rng.standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)
    n_distractors = rng.integers(min(1, max_distractors), max_distractors + 1, n)
    for k in range(max_distractors):
        d = _draw_factors(rng, n)
        present = (n_distractors > k)[:, None, None]
        jitter = rng.uniform(-0.06, 0.06, (n, 3)).astype(np.float32)
        _paint(images, _shape_masks(d) & present, palette[d["colour"]] + jitter)
    target = _draw_factors(rng, n)
    mask = _shape_masks(target)
    outline = _shape_masks(target, grow=1.5) & ~mask
    _paint(images, outline, np.ones((n, 3), dtype=np.float32))
    jitter = rng.uniform(-0.06, 0.06, (n, 3)).astype(np.float32)
    _paint(images, mask, palette[target["colour"]] + jitter)
    return np.clip(images, 0.0, 1.0), target, mask
