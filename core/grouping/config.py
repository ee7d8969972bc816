"""Configuration of the pure grouping pipeline (README, "What a run does", steps 1-3).

Pure: imports numpy only. Validation happens in ``__post_init__`` so a bad value fails when the
config is built, seconds before any training, with the field, the value and the allowed values.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field, the value and the fix."""


def _is_int(value: object) -> bool:
    """Python or numpy integers (values read back from NetCDF attributes are numpy), not bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _bad(field: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"invalid {field}={value!r}: {field} must be {allowed}")


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

    def __post_init__(self) -> None:
        from .registry import DISTANCES, STRATEGIES

        if self.strategy not in STRATEGIES:
            raise _bad("strategy", self.strategy, f"one of {sorted(STRATEGIES)}")
        allowed = sorted(DISTANCES) + ["auto"]
        if self.distance not in allowed:
            raise _bad("distance", self.distance, f"one of {allowed}")
        for name in self.auto_candidates:
            if name not in DISTANCES:
                raise _bad("auto_candidates", self.auto_candidates,
                           f"a tuple of names from {sorted(DISTANCES)}")
        if not _is_int(self.rank) or self.rank < 1:
            raise _bad("rank", self.rank, "a positive integer (e.g. 4)")
        if not _is_int(self.seed) or self.seed < 0:
            raise _bad("seed", self.seed, "a non-negative integer")
        if self.threshold is not None and not (
            _is_real(self.threshold) and 0.0 <= float(self.threshold) <= 2.0
        ):
            raise _bad("threshold", self.threshold, "None or a distance in [0, 2]")
        if not (_is_real(self.min_silhouette) and -1.0 <= float(self.min_silhouette) <= 1.0):
            raise _bad("min_silhouette", self.min_silhouette, "in [-1, 1]")
        if self.max_group_size is not None and (
            not _is_int(self.max_group_size) or self.max_group_size < 1
        ):
            raise _bad("max_group_size", self.max_group_size, "None or a positive integer")
        if not _is_int(self.min_groups) or self.min_groups < 1:
            raise _bad("min_groups", self.min_groups, "a positive integer")
        if not _is_int(self.patience) or self.patience < 1:
            raise _bad("patience", self.patience, "a positive integer")
        if not _is_int(self.kmeans_max_k) or self.kmeans_max_k < 2:
            raise _bad("kmeans_max_k", self.kmeans_max_k, "an integer >= 2")
