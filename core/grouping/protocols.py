"""What a distance and a strategy receive and return (README, "What a run does", steps 2-3).

:func:`~.event.grouping_event` computes everything once, the factorized :class:`Window`, then every
candidate distance with its average-linkage tree and silhouette-best cut, and hands a pluggable
function one frozen record of it. A function reads the fields it needs and ignores the rest, so
adding a field never breaks a registered function, and nothing it needs is computed twice (the
best cut that chooses the distance is the one ``similarity`` cuts at).

Protocols
---------
``DistanceFn(window: Window) -> (E, E) float64``
    Symmetric, zero diagonal, finite, values in [0, 2]. ``grouping_event`` checks this and sets
    the rows of degenerate entities to 1.0 whatever the function returned.
``StrategyFn(given: StrategyInput) -> Proposal``
    Any ``(labels, condition, threshold)`` triple works (a :class:`Proposal` is one). Called only
    when E >= 2. The strategy proposes; ``grouping_event`` alone then applies the guards
    (:func:`.guards.apply_guards`) and hysteresis, so a strategy never applies them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .config import GroupingConfig
from .silhouette import Cut


@dataclass(frozen=True, eq=False)
class Window:
    """One event's factorized window: everything a distance may read.

    Attributes
    ----------
    summed : (E, R, C) float64
        The summed gradient signal, degenerate entities zeroed.
    factors : (E, r, C) float64
        Sign-canonical top-r right singular vectors (zero rows where absent).
    singular_values : (E, r) float64
        A factor is present when its singular value is > 0.
    degenerate : (E,) bool
        Entities without signal (zero or non-finite); they never merge.
    sizes : (E,) int64
        Tasks per entity (``max_group_size`` counts tasks, not entities).
    config : GroupingConfig
    """

    summed: np.ndarray
    factors: np.ndarray
    singular_values: np.ndarray
    degenerate: np.ndarray
    sizes: np.ndarray
    config: GroupingConfig

    @property
    def n_entities(self) -> int:
        return int(self.degenerate.shape[0])


class _ReadOnDemand:
    """A field computed the first time it is read: set it to the value, or to a zero-argument
    callable that returns it (called once, on the first read; the value then replaces it).

    ``grouping_event`` hands :attr:`StrategyInput.membership` over this way, so the pooled
    k-means it comes from (20 ms of an event at E=139) runs only when the strategy reads it.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}_value"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # class access: the dataclass default
            return None
        value = obj.__dict__[self.slot]
        if callable(value):
            value = value()
            obj.__dict__[self.slot] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclass(frozen=True, eq=False)
class StrategyInput(Window):
    """Everything a strategy may read: the :class:`Window` plus every distance computed for it.

    Attributes
    ----------
    distances : dict name -> (E, E) float64
        Every candidate distance (both ``auto_candidates``, or the one named).
    trees : dict name -> (E - 1, 4) float64
        Average-linkage tree of each distance (``scipy.cluster.hierarchy.linkage``).
    cuts : dict name -> Cut
        Silhouette-best cut of each tree under the guards' bounds (``min_groups``,
        ``max_group_size``): :func:`.silhouette.best_cut`.
    chosen : str
        The distance the decision uses (the named one, or the auto winner).
    membership : (E, K) float64
        Pooled k-means: each entity's share of factor energy per cluster (rows sum to 1, or 0
        for entities without factors). Computed when first read: pass the array, or a
        zero-argument callable returning it (``grouping_event`` passes one, so strategies that
        never read it, ``similarity`` and ``variance``, do not pay for the k-means).
    null_test : dict or None
        The edge-permutation test of the chosen distance's best cut (:mod:`.null`,
        :func:`~.null.permutation_null`) where ``config.null="permutation"`` applies to the
        event (:func:`~.event.null_applies`); None otherwise.
    """

    distances: dict[str, np.ndarray]
    trees: dict[str, np.ndarray]
    cuts: dict[str, Cut]
    chosen: str
    membership: np.ndarray = _ReadOnDemand()  # type: ignore[assignment]
    null_test: dict | None = None

    @property
    def distance(self) -> np.ndarray:
        """The chosen distance matrix ``(E, E)``."""
        return self.distances[self.chosen]

    @property
    def tree(self) -> np.ndarray:
        """The chosen distance's average-linkage tree ``(E - 1, 4)``."""
        return self.trees[self.chosen]

    @property
    def cut(self) -> Cut:
        """The chosen distance's silhouette-best cut."""
        return self.cuts[self.chosen]


class Proposal(NamedTuple):
    """A strategy's answer, before guards and hysteresis.

    Attributes
    ----------
    labels : (E,) int
        Proposed group of each entity (any integers; made canonical by the event).
    condition : (E, E) float64
        The value the strategy compared for each pair (recorded, for explaining the decision).
    threshold : float
        What ``condition`` was compared with (NaN where nothing applies).
    """

    labels: np.ndarray
    condition: np.ndarray
    threshold: float


DistanceFn = Callable[[Window], np.ndarray]
StrategyFn = Callable[[StrategyInput], "Proposal | tuple[np.ndarray, np.ndarray, float]"]
