"""Strategy ``similarity``: merge entities whose gradients are close (average linkage).

The tree is cut where the silhouette of the partition is highest (default), or at the absolute
distance ``config.threshold``. A silhouette-best cut scoring below ``config.min_silhouette``
merges nothing: the distances show no group structure worth acting on.

Small cases: with E == 2 no cut has a silhouette, so without a threshold nothing merges; with a
threshold the two merge when their distance is <= threshold.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import cophenet, fcluster, linkage
from scipy.spatial.distance import squareform

from ..config import GroupingConfig
from ..guards import apply_guards
from ..partition import canonical
from ..registry import register_strategy
from ..silhouette import best_cut


@register_strategy("similarity")
def similarity(
    distances: np.ndarray,
    factors: np.ndarray,
    membership: np.ndarray,
    config: GroupingConfig,
    *,
    degenerate: np.ndarray,
    sizes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Average-linkage agglomeration cut at the silhouette-best or a fixed height.

    Parameters
    ----------
    distances : (E, E) float64
    factors : (E, r, C) float64
        Unused.
    membership : (E, K) float64
        Unused.
    config : GroupingConfig
        Uses ``threshold``, ``min_silhouette``, ``max_group_size``, ``min_groups``.
    degenerate : (E,) bool
        Degenerate entities stay singletons.
    sizes : (E,) int or None
        Tasks per entity, for ``max_group_size`` (None: 1 each).

    Returns
    -------
    labels : (E,) int64
        Canonical groups, guards applied.
    condition : (E, E) float64
        Cophenetic distance: the linkage height at which each pair joins. A pair is merged
        (before guards) when its condition is <= the returned threshold.
    threshold : float
        The cut height used: ``config.threshold``, or the midpoint between the merge heights
        around the silhouette-best cut; NaN when nothing is cut (no candidate, or silhouette
        below ``min_silhouette``).
    """
    d = np.asarray(distances, dtype=np.float64)
    n = d.shape[0]
    if n < 2:
        return np.zeros(n, dtype=np.int64), np.zeros((n, n)), float("nan")
    tree = linkage(squareform(d, checks=False), method="average")
    condition = squareform(cophenet(tree))
    if config.threshold is None:
        labels, score, height = best_cut(
            d,
            tree,
            min_groups=config.min_groups,
            max_group_size=config.max_group_size,
            sizes=sizes,
        )
        if not score >= config.min_silhouette:
            labels, height = np.arange(n, dtype=np.int64), float("nan")
    else:
        labels = canonical(fcluster(tree, t=float(config.threshold), criterion="distance"))
        height = float(config.threshold)
    labels = apply_guards(
        labels,
        d,
        max_group_size=config.max_group_size,
        min_groups=config.min_groups,
        degenerate=degenerate,
        sizes=sizes,
    )
    return labels, condition, height
