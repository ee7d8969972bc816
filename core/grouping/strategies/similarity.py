"""Strategy ``similarity``: merge entities whose gradients are close (average linkage).

The chosen distance's tree is cut where the silhouette of the partition is highest (default), or
at the absolute distance ``config.threshold``. A silhouette-best cut scoring below
``config.min_silhouette`` merges nothing: the distances show no group structure worth acting on.

Small cases: with E == 2 no cut has a silhouette, so without a threshold nothing merges; with a
threshold the two merge when their distance is <= threshold.

With ``config.null="permutation"`` the silhouette-best cut is merged iff the edge-permutation
test of the event (``given.null_test``, :mod:`..null`) gives p <= ``config.null_alpha``,
instead of comparing the silhouette with ``min_silhouette``: the null keeps the run's own
distance distribution and destroys only block structure.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import cophenet, fcluster
from scipy.spatial.distance import squareform

from ..partition import canonical
from ..protocols import Proposal, StrategyInput
from ..registry import register_strategy


@register_strategy("similarity")
def similarity(given: StrategyInput) -> Proposal:
    """Cut the chosen distance's average-linkage tree at the silhouette-best or a fixed height.

    Reads ``tree`` and ``cut`` of the chosen distance, ``config.threshold`` and
    ``config.min_silhouette``, or ``null_test`` where the permutation null ran (then the cut
    is made iff its p-value <= its ``alpha``, and ``min_silhouette`` is not applied). The
    best cut already respects ``min_groups`` and ``max_group_size`` (it is computed under
    them), so the guards rarely change it.

    Returns
    -------
    Proposal
        ``condition``: the cophenetic distance, the linkage height at which each pair joins; a
        pair is proposed together when its condition is <= ``threshold``. ``threshold``: the
        cut height used, ``config.threshold`` or the midpoint between the merge heights around
        the silhouette-best cut; NaN when nothing is cut (no candidate cut, its silhouette is
        below ``min_silhouette``, or the null's p-value is above ``alpha``).
    """
    config = given.config
    condition = squareform(cophenet(given.tree))
    if config.threshold is not None:
        labels = canonical(fcluster(given.tree, t=float(config.threshold), criterion="distance"))
        return Proposal(labels, condition, float(config.threshold))
    labels, score, height = given.cut
    null = given.null_test
    if null is not None:
        significant = null["p_value"] <= null["alpha"]
        if not significant or not np.isfinite(height):
            return Proposal(np.arange(given.n_entities, dtype=np.int64), condition, float("nan"))
        return Proposal(labels, condition, height)
    if not score >= config.min_silhouette:
        return Proposal(np.arange(given.n_entities, dtype=np.int64), condition, float("nan"))
    return Proposal(labels, condition, height)
