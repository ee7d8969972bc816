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
    kmeans_max_k : int
        Upper bound of K for the pooled k-means over factors (K chosen by silhouette), >= 2.
    seed : int
        Seeds k-means. Everything else is deterministic.
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
    }

    def __post_init__(self) -> None:
        check_fields(self, self.CONSTRAINTS)


__all__ = ["RANK", "ConfigError", "GroupingConfig"]
