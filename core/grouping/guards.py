"""Guards every proposed partition passes through: degenerate entities stay alone, no group holds
more than ``max_group_size`` tasks, and there are at least ``min_groups`` groups.

Splits follow the average-linkage tree of the group's own distances, so a split separates the
least related members; every step is deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from .partition import canonical
from .silhouette import labels_after_merges


def _tree(d: np.ndarray) -> np.ndarray:
    return linkage(squareform(d, checks=False), method="average")


def _size_bounded_pieces(d: np.ndarray, sizes: np.ndarray, max_size: int) -> np.ndarray:
    """Labels of the coarsest tree cut whose merged pieces hold <= ``max_size`` tasks each."""
    n = d.shape[0]
    z = _tree(d)
    node_size = np.concatenate([sizes, np.zeros(n - 1, dtype=np.int64)])
    n_merges = 0
    for m in range(n - 1):
        a, b = int(z[m, 0]), int(z[m, 1])
        node_size[n + m] = node_size[a] + node_size[b]
        if node_size[n + m] > max_size:
            break  # a height cut below this merge: every later merge is at least as high
        n_merges = m + 1
    return labels_after_merges(z, n, n_merges)


def _split_oversized(
    labels: np.ndarray, d: np.ndarray, max_size: int, sizes: np.ndarray
) -> np.ndarray:
    out = labels.copy()
    next_label = int(out.max(initial=-1)) + 1
    for g in range(int(labels.max(initial=-1)) + 1):
        members = np.flatnonzero(labels == g)
        if members.size < 2 or sizes[members].sum() <= max_size:
            continue  # a single entity above the limit cannot be split here
        pieces = _size_bounded_pieces(d[np.ix_(members, members)], sizes[members], max_size)
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
    halves = labels_after_merges(_tree(d[np.ix_(members, members)]), members.size, members.size - 2)
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
    ``max_group_size`` tasks is cut along its own average-linkage tree into the fewest pieces
    that fit (an entity that alone exceeds the limit stays whole: groups never split);
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
