"""Step 5: truncated SVD of each entity's summed gradient, ``S[e] = U diag(sigma) V^T``.

The rows of ``V^T`` (the *gradient factors*) are directions of the shared representation that an
entity's tasks pull on; ``sigma`` are their strengths.

How: each entity's small Gram matrix (``min(R, C)`` square) is formed, scaled to unit trace
(unit Frobenius norm of the entity's matrix), and only its top-r eigenpairs are computed (LAPACK
``dsyevr``). On a 2-core CPU this is 4-5x faster than a full ``np.linalg.svd`` of every
(64, 128) matrix, and what it loses is precision in the *small* singular values (relative error
about 1e-8 of ``sigma_max``, versus 1e-16): below the precision of the float32 gradients it is
computed from. Factors weaker than ``RANK_RTOL * sigma_max`` count as absent (zero row, zero
sigma).

The eigen-solve is most of an event's cost (about 40 ms of 139 ``dsyevr`` calls at E=139, each
~0.27 ms, mostly the level-2 tridiagonal reduction, which is bound by BLAS call overhead at
n=64). Measured alternatives that were not taken (issue 16): ``np.linalg.eigh`` batched (all
eigenvectors) is 2x slower; ``ssyevr`` (float32) only 25% faster; a tridiagonal reduction
followed by ``dstebz``/``dstein`` and a numpy back-transform is no faster; a batched
Chebyshev-filtered subspace iteration (block 8, 24 filter degrees, which already costs more
than 10 ms) still left residuals of 4e-7 on planted windows and 2e-4 on structure-free ones,
whose top eigenvalues are only ~1% apart, so it would fall back to LAPACK almost everywhere.

Decision rules 2 and 3 (:mod:`.version`) form the Gram matrices from the window as it is and
scale them afterwards; rule 1 scaled a copy of the window first (``legacy=True``). The two
differ by roundings only.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from .config import RANK
from .constraints import check

#: An entity is degenerate when its Frobenius norm is at most this times max(1, largest norm).
DEGENERATE_RTOL = 1e-12
#: Factors with sigma <= RANK_RTOL * sigma_max are treated as absent (rank deficiency).
RANK_RTOL = 1e-6


def sign_canonical(vectors: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry is positive (first one on ties).

    Parameters
    ----------
    vectors : (..., C) float
        Rows to orient; zero rows stay zero.

    Returns
    -------
    (..., C) float
        A copy with the sign of a singular vector fixed, so results do not depend on LAPACK.
    """
    v = np.asarray(vectors, dtype=np.float64)
    idx = np.argmax(np.abs(v), axis=-1)[..., None]
    sign = np.sign(np.take_along_axis(v, idx, axis=-1))
    return v * np.where(sign == 0, 1.0, sign)


#: Rule 2 forms the Gram matrices unscaled when every live norm lies in this range (far from
#: float64 overflow and underflow of the squared entries), else it scales first, as rule 1.
_UNSCALED_NORMS = (1e-100, 1e100)


def _top_eigen(gram: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenvalues ``(L, k)`` (ascending, as LAPACK returns them) and eigenvectors
    ``(L, n, k)`` of the symmetric matrices ``gram`` ``(L, n, n)``, k = min(rank, n)."""
    n_mat, n = gram.shape[:2]
    k = min(rank, n)
    eigval = np.empty((n_mat, k))
    eigvec = np.empty((n_mat, n, k))
    for i in range(n_mat):
        w, z, _, _, info = lapack.dsyevr(gram[i], compute_v=1, range="I", il=n - k + 1, iu=n)
        if info != 0:  # pragma: no cover - LAPACK failure on a finite symmetric matrix
            raise np.linalg.LinAlgError(f"dsyevr failed with info={info}")
        eigval[i], eigvec[i] = w[:k], z[:, :k]
    return eigval, eigvec


def _factors_from_eigen(
    eigval: np.ndarray, eigvec: np.ndarray, mats: np.ndarray, wide: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (of the unit-norm matrices) and sign-canonical right singular vectors
    from the Gram eigenpairs; ``mats`` ``(L, R, C)`` are the matrices (any positive scale per
    matrix: the left-to-right step renormalizes)."""
    # dsyevr returns ascending eigenvalues; the largest come last.
    sigma = np.sqrt(np.clip(eigval[:, ::-1], 0.0, None))
    vecs = eigvec[:, :, ::-1].transpose(0, 2, 1)  # (L, k, n)
    keep = sigma > RANK_RTOL * sigma[:, :1]
    sigma = np.where(keep, sigma, 0.0)
    if wide:  # vecs are left singular vectors: v = u^T m / sigma, renormalized
        vecs = vecs @ mats
        norms = np.linalg.norm(vecs, axis=2)
        vecs = vecs / np.where(keep, norms, 1.0)[:, :, None]
    vecs = np.where(keep[:, :, None], vecs, 0.0)
    return sigma, sign_canonical(vecs)


def _top_factors(unit: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``rank`` singular values ``(L, k)`` and right singular vectors ``(L, k, C)`` of the
    unit-norm matrices ``unit`` ``(L, R, C)``, k = min(rank, R, C) (rule 1)."""
    wide = unit.shape[1] <= unit.shape[2]
    gram = unit @ unit.transpose(0, 2, 1) if wide else unit.transpose(0, 2, 1) @ unit
    eigval, eigvec = _top_eigen(gram, rank)
    return _factors_from_eigen(eigval, eigvec, unit, wide)


def _top_factors_unscaled(
    mats: np.ndarray, norms: np.ndarray, rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_top_factors` of ``mats / norms`` (rule 2) without forming that copy: the Gram
    matrices of ``mats`` ``(L, R, C)`` are divided by ``norms ** 2`` ``(L,)`` instead."""
    wide = mats.shape[1] <= mats.shape[2]
    gram = mats @ mats.transpose(0, 2, 1) if wide else mats.transpose(0, 2, 1) @ mats
    gram /= (norms * norms)[:, None, None]
    eigval, eigvec = _top_eigen(gram, rank)
    return _factors_from_eigen(eigval, eigvec, mats, wide)


def clean_summed(summed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 copy of the summed gradients with degenerate entities zeroed, and the mask.

    One copy, made in place afterwards: on a shared VM a fresh multi-megabyte temporary costs
    about as much in page faults as the arithmetic on it. Non-finite entities are found from
    their squared norms (NaN or inf), and only those are scanned element by element (a squared
    norm can also overflow on finite values): one pass over the window fewer than an
    ``isfinite`` of all of it, same outputs.

    Parameters
    ----------
    summed : (E, R, C) float

    Returns
    -------
    clean : (E, R, C) float64
        A new array; zero rows for degenerate entities.
    degenerate : (E,) bool
        Non-finite, or Frobenius norm <= ``DEGENERATE_RTOL * max(1, largest norm)``.
    norms : (E,) float64
        Frobenius norms (0 for non-finite entities).
    """
    x = np.asarray(summed)
    clean = x.astype(np.float64, copy=True)
    squares = np.einsum("erc,erc->e", clean, clean)  # per entity: the others do not change it
    finite = np.isfinite(squares)
    if not finite.all():
        suspect = np.flatnonzero(~finite)
        finite[suspect] = np.isfinite(x[suspect]).all(axis=(1, 2))
        clean[~finite] = 0.0
        squares[~finite] = 0.0
    norms = np.sqrt(squares)
    scale = max(1.0, float(norms.max(initial=0.0)))
    degenerate = (~finite) | (norms <= DEGENERATE_RTOL * scale)
    clean[degenerate] = 0.0
    return clean, degenerate, norms


def _check(x: np.ndarray, rank: int) -> None:
    if x.ndim != 3 or min(x.shape[1:], default=0) < 1:
        raise ValueError(
            f"summed must have shape (entity, row, col) with row, col >= 1, got {x.shape}"
        )
    check("rank", rank, RANK, error=ValueError)


def factorize_clean(
    clean: np.ndarray, degenerate: np.ndarray, norms: np.ndarray, rank: int, *,
    legacy: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`factorize` on the outputs of :func:`clean_summed` (which it does not modify):
    ``(singular_values (E, r), factors (E, r, C))``.

    ``legacy=True`` computes as decision rule 1 (:mod:`.version`): a unit-norm copy of the
    window first. The default (rules 2 and 3) forms the Gram matrices of the window itself and
    divides them by the squared norms, the same numbers to rounding without the copy (about
    2.5 ms of a 9 MB window at E=139); windows with norms beyond 1e+-100 (never float32
    gradients) are scaled first as in rule 1, where the squared entries could overflow or
    underflow.
    """
    _check(clean, rank)
    n_ent, _, cols = clean.shape
    singular_values = np.zeros((n_ent, rank))
    factors = np.zeros((n_ent, rank, cols))
    live = np.flatnonzero(~degenerate)
    if live.size:
        live_norms = norms[live]
        low, high = _UNSCALED_NORMS
        if not legacy and low < live_norms.min() and live_norms.max() < high:
            mats = clean if live.size == n_ent else clean[live]
            sigma, vecs = _top_factors_unscaled(mats, live_norms, rank)
        else:
            # Unit-norm scaling keeps the Gram matrices far from overflow/underflow at any scale.
            unit = clean[live]  # a copy (fancy index), scaled in place
            unit /= live_norms[:, None, None]
            sigma, vecs = _top_factors(unit, rank)
        singular_values[live, : sigma.shape[1]] = sigma * live_norms[:, None]
        factors[live, : sigma.shape[1]] = vecs
    return singular_values, factors


def factorize(
    summed: np.ndarray, rank: int, *, legacy: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` factors of every entity's summed gradient.

    Parameters
    ----------
    summed : (E, R, C) float
        Summed gradient signal per entity (any float dtype; computed in float64).
    rank : int
        Number of factors r kept per entity, >= 1.
    legacy : bool
        Compute as decision rule 1 (see :func:`factorize_clean`).

    Returns
    -------
    singular_values : (E, r) float64
        Descending; 0 where the entity's rank is lower than r, and for degenerate entities.
    factors : (E, r, C) float64
        Unit rows of V^T, sign-canonical (largest-|.| entry positive); zero rows where the
        singular value is 0.
    degenerate : (E,) bool
        Non-finite or zero (Frobenius norm <= 1e-12 * max(1, largest norm)) entities; all their
        outputs are zero, never NaN.
    """
    x = np.asarray(summed)
    _check(x, rank)
    clean, degenerate, norms = clean_summed(x)
    singular_values, factors = factorize_clean(clean, degenerate, norms, rank, legacy=legacy)
    return singular_values, factors, degenerate
