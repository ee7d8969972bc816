"""Silhouette scores on precomputed distances, and the silhouette-best cut of a linkage tree.

:func:`silhouette_score` equals ``sklearn.metrics.silhouette_score(D, labels,
metric="precomputed")`` (to rounding) without its per-call overhead. :func:`best_cut` scores
every cut of one average-linkage tree in a single pass: it replays the merges and updates the
per-cluster distance sums incrementally, so all E - 2 cuts cost about as much as a few
silhouette evaluations.
"""

from __future__ import annotations

import numpy as np

from .partition import canonical


def _check_square(distances: np.ndarray) -> np.ndarray:
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (E, E) matrix, got shape {d.shape}")
    return d


def _sample_scores(intra_sum: np.ndarray, inter: np.ndarray, counts: np.ndarray) -> np.ndarray:
    # sklearn's convention: 0 for members of singleton clusters and where a == b == 0.
    big = counts > 1
    intra = np.where(big, intra_sum / np.where(big, counts - 1, 1), 0.0)
    denom = np.maximum(intra, inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (inter - intra) / denom
    return np.where(big & (denom > 0), s, 0.0)


def silhouette_samples(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Silhouette of each item ``(E,)`` from a precomputed distance matrix ``(E, E)``.

    Raises
    ------
    ValueError
        Unless 2 <= number of groups <= E - 1 (as scikit-learn).
    """
    d = _check_square(distances)
    lab = canonical(labels)
    n_lab = int(lab.max(initial=-1)) + 1
    if lab.size != d.shape[0] or not 2 <= n_lab <= lab.size - 1:
        raise ValueError(
            f"silhouette needs labels of length {d.shape[0]} with 2 <= n_groups <= n_items - 1, "
            f"got length {lab.size} with {n_lab} groups"
        )
    onehot = np.zeros((lab.size, n_lab))
    onehot[np.arange(lab.size), lab] = 1.0
    sums = d @ onehot
    counts = onehot.sum(axis=0)
    rows = np.arange(lab.size)
    means = sums / counts
    means[rows, lab] = np.inf
    return _sample_scores(sums[rows, lab], means.min(axis=1), counts[lab])


def silhouette_score(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a partition ``labels`` ``(E,)`` of a distance matrix ``(E, E)``."""
    return float(np.mean(silhouette_samples(distances, labels)))


class _CutScorer:
    """Silhouette of the current clusters while the merges of a linkage tree are replayed.

    Active clusters occupy slots 0..k-1 (swap-remove on merge). ``sums[s, i]`` is the total
    distance from item i to the members of slot s and ``means = sums / count``. Each item keeps
    its nearest other cluster (``near``, ``inter``): a merge only raises or keeps an item's mean
    distance to the merged pair, so only the merged items and the items whose nearest cluster
    was merged need a fresh minimum; every other item compares with the new cluster only. The
    values equal a full recomputation exactly.
    """

    def __init__(self, d: np.ndarray, sizes: np.ndarray) -> None:
        n = d.shape[0]
        self.sums = d.copy()  # symmetric, so rows = columns
        self.means = d.copy()
        self.count = np.ones(n)
        self.tasks = sizes.astype(np.int64).copy()
        self.own = np.arange(n)  # slot of each item
        self.node_of_slot = np.arange(n)
        self.slot_of_node = {i: i for i in range(n)}
        self.k = n
        self.rows = np.arange(n)
        self.near = np.zeros(n, dtype=np.int64)
        self.inter = np.zeros(n)
        self._refresh(self.rows)

    def _refresh(self, items: np.ndarray) -> None:
        block = self.means[: self.k, items]  # a copy (fancy index)
        block[self.own[items], np.arange(items.size)] = np.inf
        self.near[items] = np.argmin(block, axis=0)
        self.inter[items] = block[self.near[items], np.arange(items.size)]

    def _move_slot(self, src: int, dst: int) -> None:
        for arr in (self.sums, self.means, self.count, self.tasks):
            arr[dst] = arr[src]
        self.own[self.own == src] = dst
        self.near[self.near == src] = dst
        node = int(self.node_of_slot[src])
        self.node_of_slot[dst] = node
        self.slot_of_node[node] = dst

    def merge(self, node_a: int, node_b: int, new_node: int) -> None:
        lo, hi = sorted((self.slot_of_node.pop(node_a), self.slot_of_node.pop(node_b)))
        self.sums[lo] += self.sums[hi]
        self.count[lo] += self.count[hi]
        self.tasks[lo] += self.tasks[hi]
        self.means[lo] = self.sums[lo] / self.count[lo]
        stale = (self.own == lo) | (self.own == hi) | (self.near == lo) | (self.near == hi)
        self.own[self.own == hi] = lo
        last = self.k - 1
        if hi != last:
            self._move_slot(last, hi)
        self.node_of_slot[lo] = new_node
        self.slot_of_node[new_node] = lo
        self.k -= 1
        closer = ~stale & (self.means[lo] < self.inter)
        self.near[closer] = lo
        self.inter[closer] = self.means[lo, closer]
        self._refresh(np.flatnonzero(stale))

    def score(self) -> float:
        own = self.own
        scores = _sample_scores(self.sums[own, self.rows], self.inter, self.count[own])
        return float(np.mean(scores))


def labels_after_merges(linkage_matrix: np.ndarray, n_items: int, n_merges: int) -> np.ndarray:
    """Canonical labels ``(n_items,)`` of the clusters after the first ``n_merges`` merges of a
    linkage matrix ``(n_items - 1, 4)``."""
    parent = np.arange(2 * n_items - 1)
    for m in range(n_merges):
        a, b = int(linkage_matrix[m, 0]), int(linkage_matrix[m, 1])
        parent[a] = parent[b] = n_items + m
    roots = np.arange(n_items)
    while True:  # climb one level per pass until every item sits at its root
        up = parent[roots]
        if np.array_equal(up, roots):
            return canonical(roots)
        roots = up


def best_cut(
    distances: np.ndarray,
    linkage_matrix: np.ndarray,
    *,
    min_groups: int = 1,
    max_group_size: int | None = None,
    sizes: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float]:
    """The silhouette-best cut of an average-linkage tree.

    Candidates are the cuts with 2 <= k <= E - 1 groups that a height can realize (the merge
    heights below and above differ), with k >= ``min_groups`` and no merged group holding more
    than ``max_group_size`` tasks. Ties in silhouette go to the cut with fewer merges (the more
    cautious one).

    Parameters
    ----------
    distances : (E, E) float
        The matrix the tree was built from.
    linkage_matrix : (E - 1, 4) float
        ``scipy.cluster.hierarchy.linkage(squareform(distances), method="average")``.
    min_groups : int
    max_group_size : int or None
    sizes : (E,) int or None
        Tasks per entity (None: 1 each).

    Returns
    -------
    labels : (E,) int64
        Canonical labels of the best cut; all singletons when no candidate exists.
    silhouette : float
        Its silhouette score; -1.0 when no candidate exists (e.g. E < 3).
    height : float
        Midpoint between the linkage heights that bound the cut; NaN when no candidate exists.
    """
    d = _check_square(distances)
    n = d.shape[0]
    sizes = np.ones(n, dtype=np.int64) if sizes is None else np.asarray(sizes, dtype=np.int64)
    best = (-np.inf, 0)
    if n >= 3:
        z = np.asarray(linkage_matrix, dtype=np.float64)
        scorer = _CutScorer(d, sizes)
        for m in range(n - 2):  # after merge m, m + 1 merges are done and k = n - m - 1
            a, b = int(z[m, 0]), int(z[m, 1])
            merged = scorer.tasks[scorer.slot_of_node[a]] + scorer.tasks[scorer.slot_of_node[b]]
            if n - m - 1 < min_groups or (max_group_size is not None and merged > max_group_size):
                break  # every later cut contains this merge too
            scorer.merge(a, b, n + m)
            if z[m, 2] < z[m + 1, 2]:
                sil = scorer.score()
                if sil > best[0]:
                    best = (sil, m + 1)
    if best[1] == 0:
        return np.arange(n, dtype=np.int64), -1.0, float("nan")
    m = best[1]
    height = 0.5 * (float(linkage_matrix[m - 1, 2]) + float(linkage_matrix[m, 2]))
    return labels_after_merges(linkage_matrix, n, m), float(best[0]), height
