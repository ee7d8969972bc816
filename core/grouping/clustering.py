"""Step 6 (recorded): pooled k-means over all entities' gradient factors.

Every nonzero factor vector of every entity is one point, weighted by its share of the entity's
factor energy ``sigma^2 / sum(sigma^2)`` (so each entity weighs 1 in total). K runs over
2..min(kmeans_max_k, n_points - 1, distinct points) and the K with the highest silhouette
(Euclidean) wins; an entity's *membership* is its weight per cluster: "which factor clusters a
task's gradients belong to".

The points are the sign-canonical factors of :func:`.factorize.factorize`: a factor and its
negative are the same direction, and the sign convention maps both to one point except when the
two largest entries have nearly equal magnitude. Before fitting, the points are put in
lexicographic order and the cluster labels are renumbered by first occurrence in that order, so
the result does not depend on the order of the entities.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import ThreadpoolController  # a scikit-learn dependency

from .partition import canonical
from .silhouette import silhouette_score


def _euclidean(points: np.ndarray) -> np.ndarray:
    """Pairwise distances ``(n, n)`` of unit vectors ``(n, C)``: sqrt(2 - 2 cos)."""
    d = points @ points.T
    d *= -2.0
    d += 2.0
    np.maximum(d, 0.0, out=d)
    np.sqrt(d, out=d)
    np.fill_diagonal(d, 0.0)
    return d


_CONTROLLER: list[ThreadpoolController] = []


def single_threaded() -> AbstractContextManager:
    """Context that runs OpenMP and BLAS on one thread (nesting is fine).

    The fits are tiny: extra threads only add start-up and spin-wait time (10x slower on a busy
    2-core machine; oversubscription beside torch during training), and one thread makes the
    result independent of the machine's core count, which replay relies on.
    """
    if not _CONTROLLER:  # scanning the loaded libraries costs milliseconds: do it once
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1)


def _best_kmeans(points: np.ndarray, weights: np.ndarray, max_k: int, seed: int) -> np.ndarray:
    """Labels ``(n,)`` of the silhouette-best k-means fit (K >= 2), or zeros if none is possible."""
    n_distinct = 1 + int(np.any(points[1:] != points[:-1], axis=1).sum())  # points are sorted
    top = min(max_k, points.shape[0] - 1, n_distinct)
    best_labels, best_score = np.zeros(points.shape[0], dtype=np.int64), -np.inf
    dist = _euclidean(points) if top >= 2 else None
    with single_threaded():
        for k in range(2, top + 1):
            km = KMeans(n_clusters=k, n_init=4, random_state=seed)
            labels = canonical(km.fit(points, sample_weight=weights).labels_)
            if labels.max() < 1:
                continue
            score = silhouette_score(dist, labels)
            if score > best_score:  # ties keep the smaller K
                best_labels, best_score = labels, score
    return best_labels


def pooled_kmeans(
    factors: np.ndarray, singular_values: np.ndarray, *, max_k: int, seed: int
) -> tuple[int, np.ndarray, np.ndarray]:
    """Cluster all entities' factor vectors together and measure each entity's share per cluster.

    Parameters
    ----------
    factors : (E, r, C) float64
        Sign-canonical unit factors (zero rows where absent).
    singular_values : (E, r) float64
        A factor is a point when its singular value is > 0.
    max_k : int
        Largest K tried (``GroupingConfig.kmeans_max_k``).
    seed : int
        ``random_state`` of ``KMeans(n_init=4)``.

    Returns
    -------
    k : int
        Number of clusters; 1 when fewer than 3 points (or fewer than 2 distinct ones).
    labels : (E, r) int64
        Cluster of each factor, -1 for absent factors.
    membership : (E, k) float64
        Share of each entity's sigma^2 per cluster; rows sum to 1 (0 for entities without factors).
    """
    sv = np.asarray(singular_values, dtype=np.float64)
    present = sv > 0
    energy = sv**2
    total = energy.sum(axis=1, keepdims=True)
    share = np.where(present, energy / np.where(total > 0, total, 1.0), 0.0)
    rows, cols = np.nonzero(present)
    points = np.asarray(factors, dtype=np.float64)[rows, cols]
    order = np.lexsort(points.T[::-1]) if points.shape[0] else np.zeros(0, dtype=np.int64)
    if points.shape[0] >= 3:
        sorted_labels = _best_kmeans(points[order], share[rows, cols][order], max_k, seed)
    else:
        sorted_labels = np.zeros(points.shape[0], dtype=np.int64)
    point_labels = np.empty_like(sorted_labels)
    point_labels[order] = sorted_labels
    k = int(point_labels.max(initial=0)) + 1
    labels = np.full(sv.shape, -1, dtype=np.int64)
    labels[rows, cols] = point_labels
    membership = np.zeros((sv.shape[0], k))
    np.add.at(membership, (rows, point_labels), share[rows, cols])
    return k, labels, membership
