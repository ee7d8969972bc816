"""Fixed, seeded random projections for the trajectory bins (the trajectory bins of an event file).

Each bin's summed signal ``(E, n_in)`` is projected to ``sketch_dim`` dimensions. The projection
is a pure function of ``(n_in, sketch_dim, seed)``, so it is never stored: the seed is, and
analysis rebuilds the same matrix. Two kinds:

- ``dense``: Gaussian entries / sqrt(sketch_dim) (Johnson-Lindenstrauss: squared norms and inner
  products are preserved in expectation). Memory ``n_in * sketch_dim`` float32.
- ``countsketch``: each input coordinate goes to one random bucket with a random sign (also
  unbiased for inner products); memory ``O(n_in)``, for large signals (``all_params``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import csr_matrix

#: ``kind="auto"`` uses ``dense`` up to this many matrix entries (16 MiB of float32).
DENSE_MAX_ENTRIES = 2**22
KINDS = ("auto", "dense", "countsketch")


def _check_dims(n_in: int, sketch_dim: int, seed: int) -> None:
    for name, value in (("n_in", n_in), ("sketch_dim", sketch_dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"invalid {name}={value!r}: {name} must be a positive integer")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"invalid seed={seed!r}: seed must be a non-negative integer")


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


def apply_countsketch(
    x: np.ndarray, bucket: np.ndarray, sign: np.ndarray, sketch_dim: int
) -> np.ndarray:
    """Count-sketch ``x`` ``(..., n_in)`` to ``(..., sketch_dim)``: ``out[b] = sum sign_i x_i`` over
    the inputs i with ``bucket_i == b``."""
    x = np.asarray(x)
    n_in = bucket.shape[0]
    if x.shape[-1] != n_in:
        raise ValueError(f"x must have last dimension n_in={n_in}, got shape {x.shape}")
    op = csr_matrix((sign, (np.arange(n_in), bucket)), shape=(n_in, sketch_dim))
    flat = x.reshape(-1, n_in)
    dtype = np.result_type(flat.dtype, np.float32)
    out = np.asarray(op.T.dot(flat.T.astype(dtype, copy=False))).T
    return out.reshape(x.shape[:-1] + (sketch_dim,)).astype(dtype, copy=False)


def make_sketcher(
    n_in: int, sketch_dim: int, seed: int, kind: str = "auto"
) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``(E, n_in) -> (E, sketch_dim)`` applying a fixed projection.

    Parameters
    ----------
    n_in : int
        Length of each flattened signal.
    sketch_dim : int
    seed : int
        Same seed, same projection.
    kind : {"auto", "dense", "countsketch"}
        ``auto``: dense when ``n_in * sketch_dim <= 2**22``, else countsketch.

    Returns
    -------
    callable
        With attributes ``kind`` (the resolved kind), ``n_in``, ``sketch_dim``, ``seed``.
    """
    if kind not in KINDS:
        raise ValueError(f"invalid kind={kind!r}: kind must be one of {list(KINDS)}")
    _check_dims(n_in, sketch_dim, seed)
    if kind == "auto":
        kind = "dense" if n_in * sketch_dim <= DENSE_MAX_ENTRIES else "countsketch"
    if kind == "dense":
        matrix = dense_projection(n_in, sketch_dim, seed)

        def sketch(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)
            if x.shape[-1] != n_in:
                raise ValueError(f"x must have last dimension n_in={n_in}, got shape {x.shape}")
            return x @ matrix
    else:
        bucket, sign = countsketch_params(n_in, sketch_dim, seed)

        def sketch(x: np.ndarray) -> np.ndarray:
            return apply_countsketch(x, bucket, sign, sketch_dim)

    sketch.kind, sketch.n_in, sketch.sketch_dim, sketch.seed = kind, n_in, sketch_dim, seed
    return sketch
