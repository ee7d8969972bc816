"""Fixed, seeded random projections for the trajectory bins (the trajectory bins of an event file).

Each bin's summed signal ``(E, n_in)`` is projected to ``sketch_dim`` dimensions. The projection
is a pure function of ``(n_in, sketch_dim, seed, kind)``, so it is never stored: the seed and the
resolved kind are, and :func:`dense_projection` / :func:`countsketch_params` rebuild it.
:mod:`selective_sharing.core.capture` applies it with torch during training. Two kinds:

- ``dense``: Gaussian entries / sqrt(sketch_dim) (Johnson-Lindenstrauss: squared norms and inner
  products are preserved in expectation). Memory ``n_in * sketch_dim`` float32.
- ``countsketch``: each input coordinate goes to one random bucket with a random sign (also
  unbiased for inner products); memory ``O(n_in)``, for large signals (``all_params``).
"""

from __future__ import annotations

import numpy as np

from .constraints import NON_NEGATIVE_INT, POSITIVE_INT, check

#: ``kind="auto"`` uses ``dense`` up to this many matrix entries (16 MiB of float32).
DENSE_MAX_ENTRIES = 2**22
#: Values of ``SharingConfig.sketch_kind``: ``auto`` resolves by :func:`resolve_kind`.
KINDS: tuple[str, ...] = ("auto", "dense", "countsketch")


def _check_dims(n_in: int, sketch_dim: int, seed: int) -> None:
    # Plain ValueError: these are function arguments (a config's values arrive already checked).
    check("n_in", n_in, POSITIVE_INT, error=ValueError)
    check("sketch_dim", sketch_dim, POSITIVE_INT, error=ValueError)
    check("seed", seed, NON_NEGATIVE_INT, error=ValueError)


def dense_projection(n_in: int, sketch_dim: int, seed: int) -> np.ndarray:
    """Gaussian projection matrix ``(n_in, sketch_dim)`` float32, entries N(0, 1/sketch_dim)."""
    _check_dims(n_in, sketch_dim, seed)
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n_in, sketch_dim), dtype=np.float32)
    return matrix / np.float32(np.sqrt(sketch_dim))


def countsketch_params(n_in: int, sketch_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket ``(n_in,)`` int64 in ``[0, sketch_dim)`` and sign ``(n_in,)`` float32 (+1/-1)."""
    _check_dims(n_in, sketch_dim, seed)
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, sketch_dim, size=n_in, dtype=np.int64)
    sign = (2 * rng.integers(0, 2, size=n_in) - 1).astype(np.float32)
    return bucket, sign


def resolve_kind(kind: str, n_in: int, sketch_dim: int) -> str:
    """The projection kind to build: ``kind`` itself, or for ``"auto"`` ``dense`` when the matrix
    ``(n_in, sketch_dim)`` has at most :data:`DENSE_MAX_ENTRIES` entries, else ``countsketch``.

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"invalid sketch_kind={kind!r}: sketch_kind must be one of {list(KINDS)}")
    if kind != "auto":
        return kind
    return "dense" if n_in * sketch_dim <= DENSE_MAX_ENTRIES else "countsketch"
