"""One grouping event (README, "What a run does", steps 1-3): from the summed window to the
new partition.

``factorize -> distances -> silhouette-best cut per distance -> choice -> pooled k-means ->
strategy -> guards -> hysteresis -> new assignment``. Pure and deterministic: the same inputs give
bit-identical outputs on the same machine, which is what analysis/ relies on to replay an event
from the store.

This module alone applies the guards and hysteresis, to whatever a strategy proposes (built-in or
user-registered), and computes each input a strategy may read once (:class:`.StrategyInput`).

The pooled k-means (the ``kmeans_*`` and ``membership`` fields) is part of the decision only for
strategies that read ``membership``; ``grouping_event(..., record=False)`` leaves it out for the
others (a training step needs only the partition) and :func:`complete_record` adds it later,
exactly as ``record=True`` computes it. Older stored events are replayed with the decision rule
they were decided by (:mod:`.version`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace

import numpy as np

from .clustering import TIE_TOLERANCE, pooled_kmeans, single_threaded
from .config import GroupingConfig
from .distances import RULE1_DISTANCES, finalize_distances
from .factorize import clean_summed, factorize_clean
from .guards import apply_guards
from .hysteresis import apply_patience, update_streak
from .null import permutation_null, window_key
from .partition import canonical, compose
from .protocols import Proposal, StrategyInput, Window
from .registry import DISTANCES, STRATEGIES
from .result import EventResult
from .silhouette import average_linkage, best_cut
from .version import DECISION_RULE_VERSION, check_rule

#: Private attribute of an EventResult decided with ``record=False``: ``(kmeans_max_k, seed,
#: rule)``, what :func:`complete_record` needs besides the result's factors (not a dataclass
#: field, so the store and ``dataclasses.fields`` do not see it).
_PENDING = "_pending_kmeans"


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


def _distance(name: str, window: Window, rule: int) -> np.ndarray:
    """Run a registered distance, check its protocol, force degenerate rows to 1.0."""
    fn = DISTANCES[name]
    if rule == 1:
        fn = RULE1_DISTANCES.get(fn, fn)
    d = np.asarray(fn(window), dtype=np.float64)
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


def _tie_tolerance(rule: int) -> float:
    """The k-means tie tolerance of a decision rule (:mod:`.version`: 0 before rule 3)."""
    return TIE_TOLERANCE if rule >= 3 else 0.0


class _PooledKMeans:
    """The event's pooled k-means, computed on the first call and kept."""

    def __init__(self, window: Window, rule: int) -> None:
        self.window = window
        self.rule = rule
        self.result: tuple[int, np.ndarray, np.ndarray] | None = None

    def __call__(self) -> tuple[int, np.ndarray, np.ndarray]:
        if self.result is None:
            w, config = self.window, self.window.config
            self.result = pooled_kmeans(
                w.factors, w.singular_values, max_k=config.kmeans_max_k, seed=config.seed,
                tie_tolerance=_tie_tolerance(self.rule),
            )  # fmt: skip
        return self.result

    def membership(self) -> np.ndarray:
        return self()[2]


def null_applies(config: GroupingConfig, n_entities: int) -> bool:
    """Whether an event with ``config`` and ``n_entities`` entities runs the permutation null:
    ``null="permutation"``, strategy ``similarity`` with the silhouette-best cut (no
    ``threshold``) and E >= 3 (with fewer no cut has a silhouette and nothing merges).

    Parameters
    ----------
    config : GroupingConfig
    n_entities : int

    Returns
    -------
    bool
    """
    return (
        config.null == "permutation" and config.strategy == "similarity"
        and config.threshold is None and n_entities >= 3
    )  # fmt: skip


def _strategy_input(
    window: Window, membership: np.ndarray | Callable[[], np.ndarray], rule: int, key: int | None
) -> StrategyInput:
    """Every candidate distance with its tree and silhouette-best cut, and the chosen one: the
    distance whose best cut scores higher (strictly: ties keep the earlier candidate).
    ``membership``: the array, or a callable computing it when first read. ``key``: the
    window's :func:`.null.window_key` where :func:`null_applies` (the permutation null of the
    chosen distance's best cut is then computed), else None."""
    config = window.config
    names = config.auto_candidates if config.distance == "auto" else (config.distance,)
    distances = {name: _distance(name, window, rule) for name in names}
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
    null_test = None
    if key is not None:
        null_test = permutation_null(
            distances[chosen], cuts[chosen].silhouette, samples=config.null_samples,
            alpha=config.null_alpha, seed=config.seed, key=key, min_groups=config.min_groups,
            max_group_size=config.max_group_size, sizes=window.sizes,
        )  # fmt: skip
    shared = {f.name: getattr(window, f.name) for f in fields(Window)}
    return StrategyInput(
        **shared, distances=distances, trees=trees, cuts=cuts, chosen=chosen,
        membership=membership, null_test=null_test,
    )  # fmt: skip


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


def _decide(
    stored, a, streak_before, config: GroupingConfig, record: bool, rule: int
) -> EventResult:
    sizes = np.bincount(a, minlength=stored.shape[0]).astype(np.int64)
    clean, degenerate, norms = clean_summed(stored)  # the one float64 copy of the window
    sv, factors = factorize_clean(clean, degenerate, norms, config.rank, legacy=rule == 1)
    window = Window(clean, factors, sv, degenerate, sizes, config)
    kmeans = _PooledKMeans(window, rule)
    if record:  # in the order the decision always ran it (the result does not depend on it)
        kmeans()
    key = window_key(stored) if null_applies(config, stored.shape[0]) else None
    given = _strategy_input(window, kmeans.membership, rule, key)
    labels, condition, threshold = _propose(given)
    proposed = apply_guards(
        labels, given.distance, max_group_size=config.max_group_size,
        min_groups=config.min_groups, degenerate=degenerate, sizes=sizes,
    )  # fmt: skip
    streak_after = update_streak(streak_before, a, proposed)
    if config.patience == 1:  # update_streak gave every proposed pair >= 1: all are ready
        entity_labels = canonical(proposed)  # = apply_patience's answer, without its pair graph
    else:
        entity_labels = apply_patience(a, proposed, streak_after, config.patience)
    assignment_after = canonical(compose(a, entity_labels))
    first_task = np.unique(a, return_index=True)[1]  # lowest task of each entity
    silhouettes = {name: cut.silhouette for name, cut in given.cuts.items()}
    k, k_labels, membership = kmeans.result or (None, None, None)
    result = EventResult(
        summed=stored, assignment_before=a, streak_before=streak_before, singular_values=sv,
        factors=factors, degenerate=degenerate, distances=given.distances, silhouettes=silhouettes,
        chosen_distance=given.chosen, kmeans_k=k, kmeans_labels=k_labels, membership=membership,
        proposed=proposed, condition=condition, threshold=threshold, streak_after=streak_after,
        assignment_after=assignment_after, parent=assignment_after[first_task],
        null_test=given.null_test,
    )  # fmt: skip
    if k is None:
        object.__setattr__(result, _PENDING, (config.kmeans_max_k, config.seed, rule))
    return result


def grouping_event(
    summed: np.ndarray,
    assignment: np.ndarray,
    streak: np.ndarray | None,
    config: GroupingConfig,
    *,
    record: bool = True,
    rule: int = DECISION_RULE_VERSION,
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
    record : bool
        True (default): the complete record, pooled k-means included. False: what the decision
        needs only; the k-means fields (``kmeans_k``, ``kmeans_labels``, ``membership``) are
        None unless the strategy read ``membership`` (``kmeans`` does, ``similarity`` and
        ``variance`` do not). :func:`complete_record` fills them in later, bit-identical to
        ``record=True``; every other field is the same either way. The k-means is 5, 9, 26 and
        177 ms of CPU at E = 10, 40, 139, 500 (``reproduce/bench_decision.py``, a loaded 2-core
        machine), about a quarter of a complete record.
    rule : int
        The decision rule to apply (:mod:`.version`): the current one by default; a replay
        passes the rule the stored event was decided by (1 for events stored without one).

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
    With ``config.null="permutation"`` (``similarity``, silhouette-best cut, E >= 3) the best
    cut is merged iff its edge-permutation p-value is <= ``config.null_alpha``
    (:mod:`.null`: the null keeps the run's own distance distribution and destroys only block
    structure); ``min_silhouette`` is then not applied, and ``null_test`` records the test.
    The shuffles are seeded by ``config.seed`` and a checksum of the window, so a replay draws
    the same ones. The default ``null="none"`` decides exactly as before (same rule number).
    The null costs B average-linkage trees and best cuts: with B=200, an event with
    ``record=False`` took 0.14 s at E=24 and 0.69 s at E=139 (3 planted groups; 0.003 and
    0.012 s without the null) on the shared 2-core machine.

    Runs BLAS and OpenMP on one thread: the matrices are small, so extra threads cost more
    than they give (far more on a busy machine), and the result then does not depend on the
    machine's core count.

    Cost (issue 16, CPU on the shared 2-core machine, planted windows of
    ``reproduce/bench_decision.py``): ``record=False`` takes about 10, 31, 100 and 530 ms at
    E = 10, 40, 139, 500 where the complete record took 19, 46, 136 and 810 ms before issue 16.
    Half of it at E >= 40 is the E LAPACK eigen-solves of :mod:`.factorize` (55 of 104 ms at
    E=139), whose cost is the level-2 tridiagonal reduction; the rest is the two float64 Gram
    products (entity and cosine), the subspace distance and the two silhouette-best cuts.
    """
    if not isinstance(config, GroupingConfig):
        raise TypeError(f"config must be a GroupingConfig, got {type(config).__name__}")
    rule = check_rule(rule)
    stored = np.array(summed, copy=True)  # the caller may reuse its window buffer
    a, streak_before = _check_inputs(stored, assignment, streak)
    with single_threaded():
        return _decide(stored, a, streak_before, config, bool(record), rule)


def complete_record(
    result: EventResult, config: GroupingConfig | None = None, *, rule: int | None = None
) -> EventResult:
    """The record of an event decided with ``record=False``, completed: its pooled k-means
    fields computed exactly as ``grouping_event(..., record=True)`` computes them.

    Pure; reads only ``factors`` and ``singular_values`` of ``result`` (the same for every
    ``record``), so it may run later and on another thread than the decision (it runs BLAS on
    one thread, as the decision does, for the same bits on any machine).

    Parameters
    ----------
    result : EventResult
        From :func:`grouping_event`; returned as it is when its k-means fields are already set.
    config : GroupingConfig, optional
        The event's config. Only needed for a result that did not come from
        :func:`grouping_event` in this process (it remembers ``kmeans_max_k``, ``seed`` and the
        rule).
    rule : int, optional
        The decision rule the event was decided by (:mod:`.version`): remembered for a result
        of :func:`grouping_event` in this process, else the current rule unless given.

    Returns
    -------
    EventResult
        A new result with ``kmeans_k``, ``kmeans_labels`` and ``membership`` set; every other
        field is the same object.
    """
    if result.kmeans_k is not None:
        return result
    pending = getattr(result, _PENDING, None)
    if rule is None:
        rule = pending[2] if pending is not None else DECISION_RULE_VERSION
    rule = check_rule(rule)
    if config is not None:
        max_k, seed = config.kmeans_max_k, config.seed
    elif pending is not None:
        max_k, seed = pending[:2]
    else:
        raise ValueError(
            "complete_record needs the event's GroupingConfig for a result without k-means "
            "fields that grouping_event(..., record=False) did not return: pass config="
        )
    with single_threaded():
        k, labels, membership = pooled_kmeans(
            result.factors, result.singular_values, max_k=max_k, seed=seed,
            tie_tolerance=_tie_tolerance(rule),
        )  # fmt: skip
    return replace(result, kmeans_k=k, kmeans_labels=labels, membership=membership)
