"""Partitions from a task-affinity matrix, for the grouping baselines (pure numpy/scipy).

``cosine_groups`` (TAG's "CS" baseline) and ``tag`` (lookahead inter-task affinity, Fifty et al.
2021) both end with a (T, T) affinity, higher = more helpful; this module turns it into a
partition with a given number of groups. ``random_partition`` draws the ``random_groups`` control.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from .partition import canonical


def _symmetric(affinity: np.ndarray) -> np.ndarray:
    a = np.asarray(affinity, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"affinity must be a square (n_tasks, n_tasks) matrix, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("affinity has NaN or Inf entries: a task pair was never measured")
    return (a + a.T) / 2.0


def _check_k(n_groups: int, n: int) -> None:
    if not 1 <= n_groups <= n:
        raise ValueError(f"n_groups={n_groups} must be in [1, n_tasks={n}]")


def agglomerate(affinity: np.ndarray, n_groups: int) -> np.ndarray:
    """Average-linkage agglomeration of ``max(S) - S`` cut to exactly ``n_groups`` groups.

    Returns canonical labels (n_tasks,).
    """
    s = _symmetric(affinity)
    n = s.shape[0]
    _check_k(n_groups, n)
    if n_groups == n:
        return np.arange(n, dtype=np.int64)
    d = s.max() - s
    np.fill_diagonal(d, 0.0)
    tree = linkage(squareform(d, checks=False), method="average")
    return canonical(fcluster(tree, t=n_groups, criterion="maxclust"))


def partition_score(affinity: np.ndarray, labels: np.ndarray) -> float:
    """TAG's objective on a partition: each task's mean affinity from its group-mates, summed
    (a singleton contributes 0)."""
    s = _symmetric(affinity)
    total = 0.0
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        if idx.size > 1:
            block = s[np.ix_(idx, idx)]
            total += (block.sum() - np.trace(block)) / (idx.size - 1)
    return float(total)


def _partitions(n: int, k: int):
    """Every partition of n items into exactly k blocks, as restricted growth strings."""
    labels = [0] * n

    def rec(i: int, used: int):
        if n - i < k - used:
            return
        if i == n:
            if used == k:
                yield np.array(labels, dtype=np.int64)
            return
        for g in range(min(used + 1, k)):
            labels[i] = g
            yield from rec(i + 1, max(used, g + 1))

    yield from rec(0, 0)


def exhaustive(affinity: np.ndarray, n_groups: int) -> np.ndarray:
    """The partition into ``n_groups`` groups with the highest :func:`partition_score`
    (first found on ties); feasible for about 10 tasks or fewer."""
    s = _symmetric(affinity)
    _check_k(n_groups, s.shape[0])
    best, best_score = None, -np.inf
    for labels in _partitions(s.shape[0], n_groups):
        score = partition_score(s, labels)
        if score > best_score:
            best, best_score = labels, score
    return canonical(best)


def groups_from_affinity(affinity: np.ndarray, n_groups: int, *, exhaustive_max_tasks: int = 0
                         ) -> np.ndarray:
    """Exhaustive selection when n_tasks <= ``exhaustive_max_tasks``, else agglomeration."""
    n = np.asarray(affinity).shape[0]
    if n <= exhaustive_max_tasks:
        return exhaustive(affinity, n_groups)
    return agglomerate(affinity, n_groups)


def random_partition(group_sizes: list[int] | tuple[int, ...], seed: int) -> np.ndarray:
    """A uniformly random assignment of ``sum(group_sizes)`` tasks to groups of these sizes."""
    sizes = [int(s) for s in group_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"group_sizes={group_sizes!r} must be positive integers")
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return canonical(np.random.default_rng(seed).permutation(labels))
