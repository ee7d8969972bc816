"""One grouping event (README, "What a run does", steps 1-3): from the summed window to the
new partition.

``factorize -> distances -> silhouette-best cut per distance -> choice -> pooled k-means ->
strategy -> guards -> hysteresis -> new assignment``. Pure and deterministic: the same inputs give
bit-identical outputs on the same machine, which is what analysis/ relies on to replay an event
from the store.

This module alone applies the guards and hysteresis, to whatever a strategy proposes (built-in or
user-registered), and computes each input a strategy may read once (:class:`.StrategyInput`).
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from .clustering import pooled_kmeans, single_threaded
from .config import GroupingConfig
from .distances import finalize_distances
from .factorize import clean_summed, factorize_clean
from .guards import apply_guards
from .hysteresis import apply_patience, update_streak
from .partition import canonical, compose
from .protocols import Proposal, StrategyInput, Window
from .registry import DISTANCES, STRATEGIES
from .result import EventResult
from .silhouette import average_linkage, best_cut


def _check_inputs(
    summed: np.ndarray, assignment: np.ndarray, streak: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    if summed.ndim != 3:
        raise ValueError(f"summed must have shape (entity, row, col), got shape {summed.shape}")
    n_ent = summed.shape[0]
    a = np.asarray(assignment)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"assignment must be a non-empty 1-D integer array, got {a.dtype} {a.shape}"
        )
    counts = np.bincount(a, minlength=n_ent) if a.min() >= 0 else None
    if counts is None or counts.size != n_ent or not counts.all():
        raise ValueError(
            f"assignment must use every entity 0..{n_ent - 1} of summed (shape {summed.shape}) "
            f"and no other, found values {np.unique(a).tolist()}"
        )
    n_tasks = a.size
    if streak is None:
        return a.astype(np.int64), np.zeros((n_tasks, n_tasks), dtype=np.int64)
    s = np.asarray(streak)
    if s.shape != (n_tasks, n_tasks) or not np.issubdtype(s.dtype, np.integer) or s.min() < 0:
        raise ValueError(
            f"streak must be None or a non-negative integer ({n_tasks}, {n_tasks}) array, "
            f"got {s.dtype} {s.shape}"
        )
    return a.astype(np.int64), s.astype(np.int64)


def _distance(name: str, window: Window) -> np.ndarray:
    """Run a registered distance, check its protocol, force degenerate rows to 1.0."""
    d = np.asarray(DISTANCES[name](window), dtype=np.float64)
    n = window.n_entities
    problem = None
    if d.shape != (n, n):
        problem = f"shape {d.shape}, expected ({n}, {n})"
    elif not np.all(np.isfinite(d)):
        problem = "non-finite values"
    elif not np.allclose(d, d.T, rtol=0, atol=1e-9) or d.min() < -1e-9 or d.max() > 2 + 1e-9:
        problem = f"an asymmetric matrix or values outside [0, 2] (range [{d.min()}, {d.max()}])"
    if problem is not None:
        raise ValueError(
            f"distance {name!r} returned {problem}; a distance must return a "
            "symmetric, finite (E, E) matrix with values in [0, 2]"
        )
    return finalize_distances(d, window.degenerate, 2.0)


def _strategy_input(window: Window, membership: np.ndarray) -> StrategyInput:
    """Every candidate distance with its tree and silhouette-best cut, and the chosen one: the
    distance whose best cut scores higher (strictly: ties keep the earlier candidate)."""
    config = window.config
    names = config.auto_candidates if config.distance == "auto" else (config.distance,)
    distances = {name: _distance(name, window) for name in names}
    trees = {name: average_linkage(d) for name, d in distances.items()}
    cuts = {
        name: best_cut(
            d, trees[name], min_groups=config.min_groups, max_group_size=config.max_group_size,
            sizes=window.sizes,
        )
        for name, d in distances.items()
    }  # fmt: skip
    chosen = names[0]
    for name in names[1:]:
        if cuts[name].silhouette > cuts[chosen].silhouette:
            chosen = name
    shared = {f.name: getattr(window, f.name) for f in fields(Window)}
    return StrategyInput(
        **shared, distances=distances, trees=trees, cuts=cuts, chosen=chosen, membership=membership
    )


def _propose(given: StrategyInput) -> Proposal:
    """Run the configured strategy and check its answer; with one entity there is nothing to
    decide (threshold NaN)."""
    n, name = given.n_entities, given.config.strategy
    if n == 1:
        return Proposal(np.zeros(1, np.int64), np.zeros((1, 1)), float("nan"))
    labels, condition, threshold = STRATEGIES[name](given)
    labels, condition = np.asarray(labels), np.asarray(condition, dtype=np.float64)
    if labels.shape != (n,) or condition.shape != (n, n):
        raise ValueError(
            f"strategy {name!r} returned labels {labels.shape} and condition "
            f"{condition.shape}; expected ({n},) and ({n}, {n})"
        )
    return Proposal(canonical(labels), condition, float(threshold))


def _decide(stored, a, streak_before, config: GroupingConfig) -> EventResult:
    sizes = np.bincount(a, minlength=stored.shape[0]).astype(np.int64)
    clean, degenerate, norms = clean_summed(stored)  # the one float64 copy of the window
    sv, factors = factorize_clean(clean, degenerate, norms, config.rank)
    window = Window(clean, factors, sv, degenerate, sizes, config)
    k, k_labels, membership = pooled_kmeans(
        factors, sv, max_k=config.kmeans_max_k, seed=config.seed
    )
    given = _strategy_input(window, membership)
    labels, condition, threshold = _propose(given)
    proposed = apply_guards(
        labels, given.distance, max_group_size=config.max_group_size,
        min_groups=config.min_groups, degenerate=degenerate, sizes=sizes,
    )  # fmt: skip
    streak_after = update_streak(streak_before, a, proposed)
    entity_labels = apply_patience(a, proposed, streak_after, config.patience)
    assignment_after = canonical(compose(a, entity_labels))
    first_task = np.unique(a, return_index=True)[1]  # lowest task of each entity
    silhouettes = {name: cut.silhouette for name, cut in given.cuts.items()}
    return EventResult(
        summed=stored, assignment_before=a, streak_before=streak_before, singular_values=sv,
        factors=factors, degenerate=degenerate, distances=given.distances, silhouettes=silhouettes,
        chosen_distance=given.chosen, kmeans_k=k, kmeans_labels=k_labels, membership=membership,
        proposed=proposed, condition=condition, threshold=threshold, streak_after=streak_after,
        assignment_after=assignment_after, parent=assignment_after[first_task],
    )  # fmt: skip


def grouping_event(
    summed: np.ndarray,
    assignment: np.ndarray,
    streak: np.ndarray | None,
    config: GroupingConfig,
) -> EventResult:
    """Decide which entities merge, from their summed gradients over the last window.

    Parameters
    ----------
    summed : (E, R, C) float
        Summed gradient signal per entity (float32 from training; computed in float64, stored
        as given, copied).
    assignment : (T,) int
        Entity of each task; uses every entity 0..E-1.
    streak : (T, T) int or None
        Hysteresis state from the previous event (None: zeros).
    config : GroupingConfig

    Returns
    -------
    EventResult
        Inputs, intermediates and outcome. With ``distance="auto"`` the distance whose
        silhouette-best cut scores higher is chosen (ties: first in ``auto_candidates``). With
        E == 1 nothing is decided (threshold NaN); with E == 2 no silhouette exists (-1.0) and the
        strategy's own small-case rule applies (``similarity``: merge only under an explicit
        threshold).

    Notes
    -----
    Runs BLAS and OpenMP on one thread: the matrices are small, so extra threads cost more
    than they give (far more on a busy machine), and the result then does not depend on the
    machine's core count.
    """
    if not isinstance(config, GroupingConfig):
        raise TypeError(f"config must be a GroupingConfig, got {type(config).__name__}")
    stored = np.array(summed, copy=True)  # the caller may reuse its window buffer
    a, streak_before = _check_inputs(stored, assignment, streak)
    with single_threaded():
        return _decide(stored, a, streak_before, config)
