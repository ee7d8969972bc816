"""Strategy ``variance``: merge entities whose gradients are far apart, so one estimator is
trained on complementary signals.

Greedy: start from singletons; repeatedly join the two current groups with the largest average
pairwise distance, as long as it is > threshold (``config.threshold``; None: the mean
off-diagonal distance of the non-degenerate entities), the joined group holds at most
``max_group_size`` tasks (None: 2, i.e. pairs) and at least ``min_groups`` groups remain.
Ties go to the first pair in row-major order.
"""

from __future__ import annotations

import numpy as np

from ..config import GroupingConfig
from ..guards import apply_guards, greedy_join
from ..registry import register_strategy


def default_threshold(distances: np.ndarray, degenerate: np.ndarray) -> float:
    """Mean off-diagonal distance among non-degenerate entities (NaN if fewer than two)."""
    live = np.flatnonzero(~np.asarray(degenerate, dtype=bool))
    if live.size < 2:
        return float("nan")
    sub = distances[np.ix_(live, live)]
    return float(sub.sum() / (live.size * (live.size - 1)))


@register_strategy("variance")
def variance(
    distances: np.ndarray,
    factors: np.ndarray,
    membership: np.ndarray,
    config: GroupingConfig,
    *,
    degenerate: np.ndarray,
    sizes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Greedily join the farthest groups above a threshold, up to ``max_group_size`` tasks.

    Parameters
    ----------
    distances : (E, E) float64
    factors, membership
        Unused.
    config : GroupingConfig
        Uses ``threshold``, ``max_group_size``, ``min_groups``.
    degenerate : (E,) bool
        Never joined.
    sizes : (E,) int or None
        Tasks per entity (None: 1 each).

    Returns
    -------
    labels : (E,) int64
        Canonical groups, guards applied.
    condition : (E, E) float64
        The distances; a pair of groups joins when its average condition is > threshold.
    threshold : float
        The threshold used (NaN when fewer than two entities can be joined).
    """
    d = np.asarray(distances, dtype=np.float64)
    n = d.shape[0]
    deg = np.asarray(degenerate, dtype=bool)
    sizes = np.ones(n, dtype=np.int64) if sizes is None else np.asarray(sizes, dtype=np.int64)
    limit = 2 if config.max_group_size is None else config.max_group_size
    thr = default_threshold(d, deg) if config.threshold is None else float(config.threshold)
    if np.isnan(thr):
        labels = np.arange(n, dtype=np.int64)
    else:
        labels = greedy_join(
            d,
            sizes,
            limit,
            farthest=True,
            threshold=thr,
            min_groups=config.min_groups,
            joinable=~deg,
        )
    labels = apply_guards(
        labels,
        d,
        max_group_size=limit,
        min_groups=config.min_groups,
        degenerate=deg,
        sizes=sizes,
    )
    return labels, d.copy(), thr
