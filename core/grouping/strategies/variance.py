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

from ..guards import greedy_join
from ..protocols import Proposal, StrategyInput
from ..registry import register_strategy


def default_threshold(distances: np.ndarray, degenerate: np.ndarray) -> float:
    """Mean off-diagonal distance among non-degenerate entities (NaN if fewer than two)."""
    live = np.flatnonzero(~np.asarray(degenerate, dtype=bool))
    if live.size < 2:
        return float("nan")
    sub = distances[np.ix_(live, live)]
    return float(sub.sum() / (live.size * (live.size - 1)))


@register_strategy("variance")
def variance(given: StrategyInput) -> Proposal:
    """Greedily join the farthest groups above a threshold, up to ``max_group_size`` tasks.

    Reads the chosen ``distance``, ``degenerate`` (never joined), ``sizes``, and
    ``config.threshold``, ``config.max_group_size``, ``config.min_groups``. The joins already
    stay within ``max_group_size`` tasks (None: pairs) and ``min_groups`` groups, so the event's
    guards leave the proposal as it is.

    Returns
    -------
    Proposal
        ``condition``: the distances; a pair of groups joins when its average condition is
        > threshold. ``threshold``: the one used (NaN when fewer than two entities can join).
    """
    d, deg, config = given.distance, given.degenerate, given.config
    limit = 2 if config.max_group_size is None else config.max_group_size
    thr = default_threshold(d, deg) if config.threshold is None else float(config.threshold)
    if np.isnan(thr):
        return Proposal(np.arange(given.n_entities, dtype=np.int64), d.copy(), thr)
    labels = greedy_join(
        d, given.sizes, limit, farthest=True, threshold=thr, min_groups=config.min_groups,
        joinable=~deg,
    )  # fmt: skip
    return Proposal(labels, d.copy(), thr)
