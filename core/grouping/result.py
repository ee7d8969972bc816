"""The record of one grouping event: everything the decision was made from and everything it
computed, so analysis/ can replay it bit-for-bit (every event records what the decision needs).

Conventions
-----------
- A *partition* of tasks is an ``assignment`` array ``(n_tasks,)`` of entity indices.
  Entities are numbered canonically: in the order of their lowest task index
  (see :func:`selective_sharing.core.grouping.partition.canonical`).
- E = number of entities before the event, T = number of tasks, r = factors kept,
  C = columns of the signal (the shared representation dimension for ``first_layer``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class EventResult:
    """Inputs, intermediates and outcome of one grouping event.

    Attributes
    ----------
    summed : (E, R, C) float32
        Input: the window's summed gradient signal per entity.
    assignment_before : (T,) int64
        Input: entity of each task before the event.
    streak_before : (T, T) int64
        Input: hysteresis state, consecutive events in which each task pair was proposed together.
    singular_values : (E, r) float64
        Top-r singular values of each entity's summed gradient (0 where the rank is lower).
    factors : (E, r, C) float64
        Top-r right singular vectors (rows of V^T), sign-canonical (largest-|.| entry positive).
    degenerate : (E,) bool
        Entities whose summed gradient is (numerically) zero; they are never merged.
    distances : dict name -> (E, E) float64
        Every computed distance matrix (both auto candidates, or the one named).
    silhouettes : dict name -> float
        Silhouette score of the silhouette-best average-linkage cut for each distance
        (-1.0 where no cut with 2 <= k <= E-1 exists).
    chosen_distance : str
        The distance the strategy used.
    kmeans_k : int or None
        K of the pooled k-means over factors (chosen by silhouette; 1 when fewer than 3 factors).
    kmeans_labels : (E, r) int64 or None
        Cluster of each factor (-1 for factors with zero singular value).
    membership : (E, K) float64 or None
        Each entity's share of factor weight (sigma^2) per cluster; rows sum to 1 (0 if degenerate).
        The three k-means fields are None in a result of ``grouping_event(..., record=False)``
        whose strategy did not read ``membership``, until ``complete_record`` fills them in.
    proposed : (E,) int64
        The strategy's labels (after guards, before hysteresis), canonical.
    condition : (E, E) float64
        The value the strategy's condition compared for each pair: the chosen distance
        (for ``similarity``: cophenetic linkage height at which the pair joins).
    threshold : float
        The cut / threshold the condition was compared with (NaN where none applies).
    streak_after : (T, T) int64
        Hysteresis state after the event.
    assignment_after : (T,) int64
        Entity of each task after the event (canonical).
    parent : (E,) int64
        Index of the entity after the event that each entity before it went into.
    null_test : dict or None
        The edge-permutation test of the best cut (``GroupingConfig.null="permutation"``,
        :func:`~.null.permutation_null`): ``p_value``, ``statistic`` (the best-cut silhouette
        T), ``samples`` (B), ``alpha``, ``key`` (the shuffles' seed entry) and
        ``silhouettes`` ((B,) float64, the null's best-cut silhouettes). None where no test
        ran (``null="none"``, the default; events stored before the option existed).
        Keyword-only, default None.
    """

    summed: np.ndarray
    assignment_before: np.ndarray
    streak_before: np.ndarray
    singular_values: np.ndarray
    factors: np.ndarray
    degenerate: np.ndarray
    distances: dict[str, np.ndarray]
    silhouettes: dict[str, float]
    chosen_distance: str
    kmeans_k: int | None
    kmeans_labels: np.ndarray | None
    membership: np.ndarray | None
    proposed: np.ndarray
    condition: np.ndarray
    threshold: float
    streak_after: np.ndarray
    assignment_after: np.ndarray
    parent: np.ndarray
    null_test: dict | None = field(default=None, kw_only=True)

    @property
    def n_entities_before(self) -> int:
        return int(self.summed.shape[0])

    @property
    def n_entities_after(self) -> int:
        return int(self.assignment_after.max()) + 1 if self.assignment_after.size else 0

    @property
    def merged(self) -> bool:
        return self.n_entities_after < self.n_entities_before
