"""Strategy ``kmeans``: entities whose dominant factor cluster is the same are grouped (the
literal reading of "tasks whose gradients belong to the same factor cluster").

The dominant cluster is the argmax of the entity's membership (lowest cluster on ties). When the
pooled k-means could not be fit (K == 1: fewer than 3 factor vectors), nothing merges: one
cluster is no evidence of shared structure.
"""

from __future__ import annotations

import numpy as np

from ..config import GroupingConfig
from ..guards import apply_guards
from ..partition import canonical
from ..registry import register_strategy


@register_strategy("kmeans")
def kmeans(
    distances: np.ndarray,
    factors: np.ndarray,
    membership: np.ndarray,
    config: GroupingConfig,
    *,
    degenerate: np.ndarray,
    sizes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Group entities by their dominant factor cluster.

    Parameters
    ----------
    distances : (E, E) float64
        Used only by the guards (to split oversized groups).
    factors : (E, r, C) float64
        Unused.
    membership : (E, K) float64
        Share of each entity's factor energy per cluster.
    config : GroupingConfig
        Uses ``max_group_size``, ``min_groups``.
    degenerate : (E,) bool
        Stay singletons (as entities without any factor).
    sizes : (E,) int or None
        Tasks per entity (None: 1 each).

    Returns
    -------
    labels : (E,) int64
        Canonical groups, guards applied.
    condition : (E, E) float64
        ``1 - membership_a . membership_b`` clipped to [0, 1], zero diagonal: 0 when both put
        all their energy into one same cluster, 1 when they share no cluster.
    threshold : float
        NaN (no threshold applies).
    """
    m = np.asarray(membership, dtype=np.float64)
    n = m.shape[0]
    no_signal = np.asarray(degenerate, dtype=bool) | ~(m.sum(axis=1) > 0)
    labels = np.argmax(m, axis=1) if m.shape[1] >= 2 else np.arange(n) + 1
    labels = np.where(no_signal, -1 - np.arange(n), labels)  # unique labels: singletons
    labels = apply_guards(
        canonical(labels),
        distances,
        max_group_size=config.max_group_size,
        min_groups=config.min_groups,
        degenerate=no_signal,
        sizes=sizes,
    )
    condition = 1.0 - np.clip(m @ m.T, 0.0, 1.0)
    np.fill_diagonal(condition, 0.0)
    return labels, condition, float("nan")
