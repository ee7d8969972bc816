"""Configuration of the pure grouping pipeline (README, "What a run does", steps 1-3).

Pure: imports the standard library only. ``GroupingConfig.CONSTRAINTS`` declares what each field
accepts (the vocabulary of :mod:`.constraints`); ``__post_init__`` checks them, so a bad value
fails when the config is built, seconds before any training, with the field, the value and the
allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .constraints import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    ConfigError,
    Constraint,
    Interval,
    Names,
    Nullable,
    Options,
    check_fields,
)

#: Values of GroupingConfig.null: no test (the min_silhouette floor) or the edge-permutation null.
NULLS = ("none", "permutation")

#: Factors kept per entity (GroupingConfig.rank; factorize checks its ``rank`` argument with it).
RANK = Interval(int, 1, text="a positive integer (e.g. 4)")


def _strategy_names() -> list[str]:
    # Imported when a config is checked, not at import: the registry imports the strategies,
    # and user-registered names join it after this module is loaded.
    from .registry import STRATEGIES

    return sorted(STRATEGIES)


def _distance_names() -> list[str]:
    from .registry import DISTANCES

    return sorted(DISTANCES)


@dataclass(frozen=True)
class GroupingConfig:
    """How a grouping event turns summed gradients into a partition.

    Attributes
    ----------
    strategy : str
        Name in ``STRATEGIES``: ``"similarity"`` (default), ``"variance"``, ``"kmeans"`` or a
        user-registered one.
    distance : str
        Name in ``DISTANCES`` (``"cosine"``, ``"subspace"``, user-registered) or ``"auto"``:
        compute every name in ``auto_candidates`` and use the one whose silhouette-best
        average-linkage cut scores higher.
    auto_candidates : tuple of str
        Distances compared by ``distance="auto"``.
    rank : int
        Number of gradient factors kept per entity (r of the subspace distance), >= 1.
    threshold : float or None
        ``similarity``: cut the average-linkage tree at this absolute distance instead of the
        silhouette-best cut. ``variance``: join only pairs farther apart than this (None: the
        mean off-diagonal distance). In [0, 2].
    min_silhouette : float
        ``similarity`` with the silhouette-best cut merges nothing when the best silhouette is
        below this, in [-1, 1]. The default, 0.175, was chosen on the synthetic data
        (``reproduce/synthetic_study.py``): the best-cut silhouette at the event was 0.237,
        0.293, 0.292 with 3 planted groups (seeds 0-2) and 0.114, 0.079, 0.081 with no
        structure (30 unrelated tasks); 0.175 is the midpoint of the gap, so structure-free
        tasks are left apart (with 0.1, seed 0's unrelated tasks were merged into 2 groups).
        Silhouette cannot certify "all tasks are one group" (it needs 2 or more groups): on
        data where every task is related it stayed between 0.07 and 0.17.
    max_group_size : int or None
        No group may hold more tasks than this (None: no limit; ``variance`` then uses 2).
    min_groups : int
        Never fewer groups (entities) than this, >= 1.
    patience : int
        A merge happens only after its condition held in this many consecutive events, >= 1.
    null : str
        How ``similarity`` with the silhouette-best cut decides whether the best cut is worth
        merging. ``"none"`` (default): merge when its silhouette reaches ``min_silhouette``.
        ``"permutation"``: an edge-permutation test (:mod:`.null`): merge when the best cut's
        silhouette is significant at level ``null_alpha`` against ``null_samples`` shuffles of
        the chosen distance matrix's off-diagonal values; ``min_silhouette`` is not applied.
        The null keeps the run's own distance distribution and destroys only the block
        structure, so it needs no threshold tuned on other data (README, "Does the floor
        transfer?"). Ignored by the other strategies and under a fixed ``threshold``. Use it
        with ``distance="cosine"`` (a training config refuses it with ``"auto"``; a replay's
        counterfactual may still ask): the test sees only the chosen distance, not the choice
        among ``auto_candidates``; on the 60 calibration runs of ``reproduce/calibration.py``
        (seeds 0-4) it merged 0/30 structure-free runs with cosine but 12/30 with ``auto``
        (where the subspace distance won).
    null_samples : int
        B, the number of shuffles of the permutation null, >= 1 (the smallest p-value it can
        give is 1 / (B + 1)).
    null_alpha : float
        Level of the permutation test, in (0, 1): merge iff p <= ``null_alpha``.
    kmeans_max_k : int
        Upper bound of K for the pooled k-means over factors (K chosen by silhouette), >= 2.
    seed : int
        Seeds k-means and the shuffles of the permutation null. Everything else is
        deterministic.
    """

    strategy: str = "similarity"
    distance: str = "auto"
    auto_candidates: tuple[str, ...] = ("cosine", "subspace")
    rank: int = 4
    threshold: float | None = None
    min_silhouette: float = 0.175
    max_group_size: int | None = None
    min_groups: int = 1
    patience: int = 1
    kmeans_max_k: int = 8
    seed: int = 0
    null: str = "none"
    null_samples: int = 200
    null_alpha: float = 0.05

    # Checked in this order by __post_init__; the first bad field is the one reported.
    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "strategy": Options(_strategy_names),
        "distance": Options(lambda: [*_distance_names(), "auto"]),
        "auto_candidates": Names(_distance_names),
        "rank": RANK,
        "seed": NON_NEGATIVE_INT,
        "threshold": Nullable(Interval(float, 0, 2, text="a distance in [0, 2]"), named=True),
        "min_silhouette": Interval(float, -1, 1),
        "max_group_size": Nullable(POSITIVE_INT, named=True),
        "min_groups": POSITIVE_INT,
        "patience": POSITIVE_INT,
        "kmeans_max_k": Interval(int, 2),
        "null": Options(NULLS),
        "null_samples": Interval(int, 1, text="a positive number of shuffles (e.g. 200)"),
        "null_alpha": Interval(
            float, 0, 1, closed="neither", text="a test level in (0, 1) (e.g. 0.05)"
        ),
    }

    def __post_init__(self) -> None:
        check_fields(self, self.CONSTRAINTS)


__all__ = ["NULLS", "RANK", "ConfigError", "GroupingConfig"]
