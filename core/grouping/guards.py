"""Guards every proposed partition passes through: degenerate entities stay alone, no group holds
more than ``max_group_size`` tasks, and there are at least ``min_groups`` groups.

Splits follow average linkage on the group's own distances, so a split separates the least
related members; every step is deterministic.
"""

from __future__ import annotations

import numpy as np

from .partition import canonical
from .silhouette import average_linkage, labels_after_merges


def greedy_join(
    d: np.ndarray,
    sizes: np.ndarray,
    limit: int | None,
    *,
    farthest: bool,
    threshold: float | None = None,
    min_groups: int = 1,
    joinable: np.ndarray | None = None,
) -> np.ndarray:
    """Agglomerate from singletons, one pair of groups per step (average linkage).

    Each step joins the closest (``farthest=False``) or farthest pair of current groups whose
    union holds at most ``limit`` tasks and, with a threshold, whose average distance is
    < threshold (closest) or > threshold (farthest). Stops when no pair qualifies or
    ``min_groups`` groups remain. Ties: first pair in row-major order.

    Parameters
    ----------
    d : (n, n) float
    sizes : (n,) int
        Tasks per item.
    limit : int or None
        Most tasks per group (None: no limit).
    joinable : (n,) bool or None
        Items that may be joined at all (None: all).

    Returns
    -------
    (n,) int64
        Canonical labels.
    """
    n = d.shape[0]
    labels = np.arange(n)
    total = np.array(d, dtype=np.float64)  # summed distance between current groups
    count = np.ones(n)
    tasks = np.asarray(sizes, dtype=np.int64).copy()
    active = np.ones(n, bool) if joinable is None else np.asarray(joinable, bool).copy()
    sign = 1.0 if farthest else -1.0  # the best pair maximizes sign * average distance
    candidate = np.full((n, n), -np.inf)
    for i in range(n):
        _update_row(candidate, i, total, count, tasks, active, limit, sign, threshold)
    for n_groups in range(n, min_groups, -1):
        flat = int(np.argmax(candidate))  # row-major first: the upper-triangle pair (i < j)
        if candidate.flat[flat] == -np.inf:
            break
        i, j = divmod(flat, n)
        total[i] += total[j]
        total[:, i] += total[:, j]
        count[i] += count[j]
        tasks[i] += tasks[j]
        active[j] = False
        labels[labels == j] = i
        candidate[j, :] = candidate[:, j] = -np.inf
        _update_row(candidate, i, total, count, tasks, active, limit, sign, threshold)
    return canonical(labels)


def _update_row(candidate, i, total, count, tasks, active, limit, sign, threshold) -> None:
    """Refresh row and column i of the symmetric candidate matrix (-inf: pair not allowed)."""
    score = sign * total[i] / (count[i] * count)
    ok = active & active[i]
    ok[i] = False
    if limit is not None:
        ok &= tasks[i] + tasks <= limit
    if threshold is not None:
        ok &= score > sign * threshold
    candidate[i, :] = candidate[:, i] = np.where(ok, score, -np.inf)


def _split_oversized(
    labels: np.ndarray, d: np.ndarray, max_size: int, sizes: np.ndarray
) -> np.ndarray:
    out = labels.copy()
    next_label = int(out.max(initial=-1)) + 1
    for g in range(int(labels.max(initial=-1)) + 1):
        members = np.flatnonzero(labels == g)
        if members.size < 2 or sizes[members].sum() <= max_size:
            continue  # a single entity above the limit cannot be split here
        sub = d[np.ix_(members, members)]
        pieces = greedy_join(sub, sizes[members], max_size, farthest=False)
        moved = pieces > 0
        out[members[moved]] = next_label + pieces[moved] - 1
        next_label += int(pieces.max())
    return out


def _split_widest(labels: np.ndarray, d: np.ndarray) -> bool:
    """Split the group of largest mean internal distance in two; False when all are singletons."""
    best, best_spread = -1, -np.inf
    for g in range(int(labels.max(initial=-1)) + 1):
        members = np.flatnonzero(labels == g)
        if members.size < 2:
            continue
        sub = d[np.ix_(members, members)]
        spread = sub.sum() / (members.size * (members.size - 1))
        if spread > best_spread:
            best, best_spread = g, spread
    if best < 0:
        return False
    members = np.flatnonzero(labels == best)
    halves = labels_after_merges(
        average_linkage(d[np.ix_(members, members)]), members.size, members.size - 2
    )
    labels[members[halves == 1]] = int(labels.max()) + 1
    return True


def apply_guards(
    labels: np.ndarray,
    distances: np.ndarray,
    *,
    max_group_size: int | None = None,
    min_groups: int = 1,
    degenerate: np.ndarray | None = None,
    sizes: np.ndarray | None = None,
) -> np.ndarray:
    """Enforce the guards on a proposed partition of the entities.

    In order: (1) degenerate entities become singletons; (2) a group holding more than
    ``max_group_size`` tasks is re-agglomerated from its members by size-bounded average
    linkage (closest pair first, as long as any pair fits), so its closest members stay together
    (an entity that alone exceeds the limit stays whole: groups never split);
    (3) while there are fewer than ``min_groups`` groups, the group with the largest mean
    internal distance (lowest label on ties) is split at the top of its tree.

    Parameters
    ----------
    labels : (E,) int
        Proposed groups.
    distances : (E, E) float
        Distance matrix the proposal was made from.
    max_group_size : int or None
        Most tasks per group (None: no limit).
    min_groups : int
        Fewest groups (stops early when every group is a singleton).
    degenerate : (E,) bool or None
    sizes : (E,) int or None
        Tasks per entity (None: 1 each).

    Returns
    -------
    (E,) int64
        Canonical labels: a refinement of ``labels``.
    """
    out = canonical(labels).copy()
    d = np.asarray(distances, dtype=np.float64)
    n = out.size
    if d.shape != (n, n):
        raise ValueError(f"distances must have shape ({n}, {n}) to match labels, got {d.shape}")
    sizes = np.ones(n, dtype=np.int64) if sizes is None else np.asarray(sizes, dtype=np.int64)
    if degenerate is not None:
        deg = np.flatnonzero(np.asarray(degenerate, dtype=bool))
        out[deg] = out.max(initial=-1) + 1 + np.arange(deg.size)
        out = canonical(out)
    if max_group_size is not None:
        out = canonical(_split_oversized(out, d, max_group_size, sizes))
    while out.max(initial=-1) + 1 < min_groups and _split_widest(out, d):
        out = canonical(out)
    return out
