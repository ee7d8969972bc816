"""The edge-permutation null of the silhouette-best cut (issue 13, part 5; opt-in with
``GroupingConfig(null="permutation")``).

Is the best cut's silhouette larger than the distances would give without group structure?
The null shuffles the E(E-1)/2 off-diagonal values of the event's own distance matrix (one
permutation, applied symmetrically, zero diagonal) and computes the best-cut silhouette of the
shuffled matrix's average-linkage tree, under the same guards (``min_groups``,
``max_group_size``, ``sizes``). A shuffle keeps the run's own distance distribution (every
value, so its scale, spread and skew) and destroys only the block structure (which pairs are
close together), so the test needs no silhouette floor tuned on other data: the p-value
``(1 + #{T_b >= T}) / (1 + B)`` compares the event with itself (README, "Does the floor
transfer?").

Deterministic: the shuffles are drawn from ``np.random.default_rng([seed, key, 7907])`` with
``key`` a checksum of the event's stored window, so replaying a stored event draws the same
shuffles and gives the same bits.
"""

from __future__ import annotations

import zlib

import numpy as np

from .silhouette import average_linkage, best_cut

#: Third entry of the shuffles' seed sequence: keeps them apart from other draws seeded by
#: ``GroupingConfig.seed`` (k-means).
NULL_STREAM = 7907

#: Keys of the mapping :func:`permutation_null` returns (``EventResult.null_test``).
NULL_TEST_KEYS = ("p_value", "statistic", "samples", "alpha", "key", "silhouettes")


def window_key(summed: np.ndarray) -> int:
    """The shuffles' key of an event: the CRC-32 of its stored window's bytes.

    The decision does not know its step, but it knows its window, which every stored event
    records exactly; so the key is a stable function of the recorded inputs and differs
    between events (two events with the same window would be the same decision anyway).

    Parameters
    ----------
    summed : (E, R, C) array
        The window as stored (``EventResult.summed``).

    Returns
    -------
    int
        In [0, 2**32).
    """
    return zlib.crc32(np.ascontiguousarray(summed).view(np.uint8).reshape(-1))


def shuffled_distances(distances: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw of the null: the off-diagonal values of ``distances`` permuted.

    The upper triangle's E(E-1)/2 values are shuffled and mirrored, the diagonal is zero: the
    draw keeps the matrix's own distance distribution and destroys only its block structure.

    Parameters
    ----------
    distances : (E, E) float64
        Symmetric, zero diagonal.
    rng : numpy.random.Generator

    Returns
    -------
    (E, E) float64
        Symmetric, zero diagonal, the same multiset of off-diagonal values.
    """
    n = distances.shape[0]
    rows, cols = np.triu_indices(n, 1)
    values = rng.permutation(distances[rows, cols])
    out = np.zeros((n, n), dtype=np.float64)
    out[rows, cols] = values
    out[cols, rows] = values
    return out


def permutation_null(
    distances: np.ndarray,
    statistic: float,
    *,
    samples: int,
    alpha: float,
    seed: int,
    key: int,
    min_groups: int = 1,
    max_group_size: int | None = None,
    sizes: np.ndarray | None = None,
) -> dict:
    """Edge-permutation test of a silhouette-best cut.

    The null keeps the run's own distance distribution and destroys only block structure
    (module docstring): each of the ``samples`` draws is :func:`shuffled_distances`, scored by
    the best-cut silhouette of its average-linkage tree under the same guards as the event.
    Call it on one thread (``grouping_event`` does) for the same bits on every machine.

    Parameters
    ----------
    distances : (E, E) float64
        The event's chosen distance matrix (symmetric, zero diagonal).
    statistic : float
        T, the best-cut silhouette of ``distances``' own tree (computed by the caller, under
        the same guards).
    samples : int
        B, the number of shuffles (>= 1).
    alpha : float
        The test level, recorded with the result (the caller compares ``p_value`` with it).
    seed, key : int
        The shuffles come from ``np.random.default_rng([seed, key, NULL_STREAM])``:
        ``GroupingConfig.seed`` and :func:`window_key` of the event.
    min_groups, max_group_size, sizes
        The guards' bounds, as :func:`.silhouette.best_cut` takes them.

    Returns
    -------
    dict
        ``p_value`` (float, ``(1 + #{T_b >= T}) / (1 + B)``), ``statistic`` (T), ``samples``
        (B), ``alpha``, ``key`` and ``silhouettes`` ((B,) float64, the T_b in draw order;
        -1.0 where a shuffled tree has no admissible cut).
    """
    rng = np.random.default_rng([int(seed), int(key), NULL_STREAM])
    null = np.empty(int(samples), dtype=np.float64)
    for b in range(int(samples)):
        shuffled = shuffled_distances(distances, rng)
        cut = best_cut(
            shuffled, average_linkage(shuffled), min_groups=min_groups,
            max_group_size=max_group_size, sizes=sizes,
        )  # fmt: skip
        null[b] = cut.silhouette
    exceed = int(np.count_nonzero(null >= statistic))
    return {
        "p_value": (1 + exceed) / (1 + int(samples)),
        "statistic": float(statistic),
        "samples": int(samples),
        "alpha": float(alpha),
        "key": int(key),
        "silhouettes": null,
    }


def null_quantiles(null_test: dict, qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict:
    """Quantiles of a recorded null's silhouettes (for explaining a decision).

    Parameters
    ----------
    null_test : dict
        ``EventResult.null_test``.
    qs : tuple of float

    Returns
    -------
    dict float -> float
        ``numpy.quantile`` (linear interpolation) of the B null silhouettes at each q.
    """
    values = np.asarray(null_test["silhouettes"], dtype=np.float64)
    return {q: float(np.quantile(values, q)) for q in qs}


__all__ = [
    "NULL_STREAM",
    "NULL_TEST_KEYS",
    "null_quantiles",
    "permutation_null",
    "shuffled_distances",
    "window_key",
]
