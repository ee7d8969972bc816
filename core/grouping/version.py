"""Versions of the grouping decision rule: what a stored event must be replayed with.

:func:`~.event.grouping_event` is pure and deterministic, and analysis/ replays an event by
calling it again and comparing every recorded field exactly. A change that moves any recorded
float, even by one rounding, makes events written before it replay as mismatched, so such a
change gets a new rule number here and the old computation stays reachable as
``grouping_event(..., rule=old)``: a replay passes the rule the event was decided by.

Rules
-----
1
    Until issue 16. Each entity's matrix is scaled to unit Frobenius norm (a copy) before its
    Gram matrix is formed; the cosine distance divides every flattened window by its norm (a
    second copy) and takes the Gram matrix of those unit vectors.
2
    Issue 16. The Gram matrices are formed from the window as it is and divided by
    the squared norm afterwards, and the cosine distance is ``<S_a, S_b> / (|S_a| |S_b|)`` from
    one Gram matrix of the window: no copy of the window is made after the float64 one. At
    E=139 (a 9 MB window) on the shared 2-core machine: cosine 16.5 -> 8.9 ms, factorization
    68.7 -> 65.2 ms (most of it is the unchanged eigen-solver). Same eigen-solver (LAPACK
    ``dsyevr``), k-means, cuts, strategies, guards and hysteresis: the outputs differ from
    rule 1 by roundings only (on the test corpus at most 1e-14 in distances, 1e-15 in
    silhouettes, cut heights and singular values, 1.3e-11 in factors whose singular values are
    separated by 1e-6), and the partitions and k-means labels are the same on the test corpus
    (tests/test_grouping_fast.py), except where a distance is rounding noise everywhere (see
    there): those windows are decided by roundings under either rule.
3
    Current. Rule 2 with the pooled k-means' exact ties broken as exact arithmetic breaks them
    (:mod:`.clustering`): in the Lloyd assignment a point goes to the lowest-numbered center
    within ``TIE_TOLERANCE`` (1e-9) of its nearest, where rules 1 and 2 took ``argmin`` of the
    rounded distances. An entity's factors are orthonormal, so a point is exactly as far from
    two centers that are other factors of its own entity, and k-means++ seeds such pairs
    often; under rules 1 and 2 the last bit then chose the cluster, and a window captured in
    CI (12 tasks, ``ss_kmeans`` seed 1, second event) got K = 4 under rule 1 and K = 2 under
    rule 2, with a different ``kmeans`` partition, from factors 8e-16 apart. Only the
    ``kmeans_*`` and ``membership`` fields (and the ``kmeans`` strategy's partition, which reads
    ``membership``) can differ from rule 2, and only where such a tie occurred.

Events written without a rule number were decided by rule 1.

The opt-in edge-permutation null (``GroupingConfig.null="permutation"``, issue 13 part 5) did
not get a rule number: with the default ``null="none"`` every event is decided exactly as
before, and an event decided with the null says so in its stored grouping config (``null``,
``null_samples``, ``null_alpha``) and records the test (``null_test``), so rule 2 plus the
config determines the decision. Events stored before the option existed have no ``null`` in
their config and are replayed with the default, ``"none"``.
"""

from __future__ import annotations

#: The rule :func:`~.event.grouping_event` applies unless told otherwise.
DECISION_RULE_VERSION = 3
#: Every rule this code can still apply (replay passes the one an event was decided by).
DECISION_RULES = (1, 2, 3)
#: The rule of events stored without a rule number (written before rules were numbered).
UNVERSIONED_RULE = 1


def check_rule(rule: object) -> int:
    """``rule`` as an int, or a ValueError naming the rules this code can apply."""
    if isinstance(rule, bool) or not isinstance(rule, int) or rule not in DECISION_RULES:
        raise ValueError(
            f"unknown decision rule {rule!r}: this version applies rules {list(DECISION_RULES)} "
            f"(current: {DECISION_RULE_VERSION})"
        )
    return int(rule)


__all__ = ["DECISION_RULES", "DECISION_RULE_VERSION", "UNVERSIONED_RULE", "check_rule"]
