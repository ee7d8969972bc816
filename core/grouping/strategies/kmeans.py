"""Strategy ``kmeans``: entities whose dominant factor cluster is the same are grouped (the
literal reading of "tasks whose gradients belong to the same factor cluster").

The dominant cluster is the argmax of the entity's membership (lowest cluster on ties). When the
pooled k-means could not be fit (K == 1: fewer than 3 factor vectors), nothing merges: one
cluster is no evidence of shared structure.
"""

from __future__ import annotations

import numpy as np

from ..partition import canonical
from ..protocols import Proposal, StrategyInput
from ..registry import register_strategy


@register_strategy("kmeans")
def kmeans(given: StrategyInput) -> Proposal:
    """Group entities by their dominant factor cluster.

    Reads ``membership`` and ``degenerate`` only: entities without any factor energy (all
    degenerate ones among them) stay singletons.

    Returns
    -------
    Proposal
        ``condition``: ``1 - membership_a . membership_b`` clipped to [0, 1], zero diagonal: 0
        when both put all their energy into one same cluster, 1 when they share no cluster.
        ``threshold``: NaN (no threshold applies).
    """
    m = np.asarray(given.membership, dtype=np.float64)
    n = m.shape[0]
    no_signal = given.degenerate | ~(m.sum(axis=1) > 0)
    labels = np.argmax(m, axis=1) if m.shape[1] >= 2 else np.arange(n) + 1
    labels = np.where(no_signal, -1 - np.arange(n), labels)  # unique labels: singletons
    condition = 1.0 - np.clip(m @ m.T, 0.0, 1.0)
    np.fill_diagonal(condition, 0.0)
    return Proposal(canonical(labels), condition, float("nan"))
