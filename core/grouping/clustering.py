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

Each K is one weighted Lloyd k-means from a greedy k-means++ seeding (:func:`weighted_kmeans`,
``KMEANS_N_INIT = 1`` seeding per K, as scikit-learn's ``n_init="auto"`` for k-means++). It
replaced ``sklearn.cluster.KMeans(n_init=4)`` (issue 6): same algorithm, a quarter of the
restarts, none of the per-fit overhead; the labels of a given event differ from the old ones, so
stores written before that change no longer replay their k-means labels exactly.

Ties (decision rule 3): an entity's factors are orthonormal, so a point is *exactly* as far from
two centers that are other factors of its own entity (and k-means++ often seeds two factors of
one entity: they are as far apart as unit vectors get). Computed in floats, such a tie goes to
whichever center the last bit favours, and the labels, K and the ``kmeans`` strategy's partition
then depend on roundings: the same window factorized by rule 1 and by rule 2 (factors within
8e-16) gave K = 4 and K = 2 (tests/test_grouping_fast.py). Under rule 3 a point goes to the
lowest-numbered center within ``TIE_TOLERANCE`` of its nearest one, which is what exact
arithmetic's ``argmin`` picks; rules 1 and 2 keep the plain ``argmin`` (``tie_tolerance=0``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController  # a scikit-learn dependency

from .partition import canonical
from .silhouette import silhouette_score


def _sq_unit_distances(points: np.ndarray) -> np.ndarray:
    """Squared pairwise distances ``(n, n)`` of unit vectors ``(n, C)``: 2 - 2 cos, >= 0."""
    d = points @ points.T
    d *= -2.0
    d += 2.0
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def _lex_order(points: np.ndarray) -> np.ndarray:
    """``np.lexsort(points.T[::-1])`` (rows in lexicographic order), from the first two columns
    when they already tell every row apart (float factors almost never tie): sorting on all C
    columns costs C stable sorts."""
    if points.shape[1] >= 2:
        order = np.lexsort((points[:, 1], points[:, 0]))
        head = points[order, :2]
        if np.all(np.any(head[1:] != head[:-1], axis=1)):
            return order
    return np.lexsort(points.T[::-1])


#: k-means restarts per K (the seeding with the lowest inertia wins).
KMEANS_N_INIT = 1
#: Decision rule 3's tie tolerance in the Lloyd assignment: squared distances (of unit points
#: to centers of norm <= 1, so at most 4) closer than this to a point's smallest count as tied
#: with it. Roundings are about 1e-15; genuine gaps below 1e-9 change no inertia worth keeping.
TIE_TOLERANCE = 1e-9

_CONTROLLER: list[ThreadpoolController] = []
#: Threads inside :func:`single_threaded` (any thread), and the BLAS thread counts the first one
#: found (put back by the last one to leave).
_INSIDE: dict[str, Any] = {"depth": 0, "blas": None}
_INSIDE_LOCK = threading.Lock()


def _set_blas_threads(libs: list[Any], counts: list[int]) -> None:
    """Set each BLAS library's process-wide thread count, from whichever thread calls.

    threadpoolctl (>= 3.6) lets only one "controlling" thread change OpenBLAS's count (the first
    that set it, while it lives) and silently ignores the others, so a limit set through it from
    the store's writer thread did nothing once the training thread had set one. OpenBLAS itself
    takes the count from any thread: its own setter is called where threadpoolctl has one."""
    for lib, n in zip(libs, counts):
        getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Context that runs OpenMP and BLAS on one thread (nesting is fine, also across threads).

    The fits are tiny: extra threads only add start-up and spin-wait time (10x slower on a busy
    2-core machine; oversubscription beside torch during training), and one thread makes the
    result independent of the machine's core count, which replay relies on.

    The two kinds of limit live in different places, and each is restored where it lives:

    - OpenMP's thread count is a setting of the calling thread (``omp_set_num_threads`` sets
      that thread's own value, which torch also reads as its intra-op thread count). Each
      thread limits its own on entry and puts back its own value on exit. (Restoring the value
      another thread saw handed that thread's count to this one: a decision on the training
      thread overlapping a ``complete_record`` on a store-writer thread left training on the
      writer's 2 OpenMP threads instead of the run's 1, and every later event of the run
      differed in its last bits from the same run's with other timing; the kill/resume suite
      caught it in CI, ``tests/faults/test_writer_timing.py`` forces the overlap.)
    - BLAS thread counts are process-wide: the limit is applied when the first thread enters
      and restored when the last one leaves, whichever threads those are (an early leaver
      restoring what it saw on entry would lift the limit under the other, whose decision
      could then run on more threads).
    """
    with _INSIDE_LOCK:
        if not _CONTROLLER:  # scanning the loaded libraries costs milliseconds: do it once
            _CONTROLLER.append(ThreadpoolController())
        blas = _CONTROLLER[0].select(user_api="blas").lib_controllers
        if _INSIDE["depth"] == 0:
            _INSIDE["blas"] = [lib.get_num_threads() for lib in blas]
            _set_blas_threads(blas, [1] * len(blas))
        _INSIDE["depth"] += 1
        openmp = _CONTROLLER[0].select(user_api="openmp")
    own = openmp.limit(limits=1)  # this thread's value, read and restored in this thread
    try:
        yield
    finally:
        own.restore_original_limits()
        with _INSIDE_LOCK:
            _INSIDE["depth"] -= 1
            if _INSIDE["depth"] == 0:
                _set_blas_threads(blas, _INSIDE["blas"])
                _INSIDE["blas"] = None


def _kmeans_plusplus(
    sq_dist: np.ndarray, weights: np.ndarray, k: int, n_init: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy weighted k-means++ seeding (as scikit-learn: ``2 + log k`` candidates per step,
    keep the one that lowers the potential most), ``n_init`` seedings at once; returns the
    seed points' indices ``(n_init, k)``. ``sq_dist`` ``(n, n)``: squared distances."""
    n = sq_dist.shape[0]
    trials = 2 + int(np.log(k))
    runs = np.arange(n_init)
    idx = np.empty((n_init, k), dtype=np.int64)
    idx[:, 0] = rng.choice(n, size=n_init, p=weights / weights.sum())
    closest = sq_dist[idx[:, 0]]  # (n_init, n)
    for c in range(1, k):
        cum = np.cumsum(closest * weights, axis=1)
        draws = rng.uniform(size=(n_init, trials)) * cum[:, -1:]
        cand = np.stack([np.searchsorted(cum[r], draws[r]) for r in runs])
        np.minimum(cand, n - 1, out=cand)
        d = np.minimum(sq_dist[cand], closest[:, None, :])  # (n_init, trials, n)
        best = np.argmin(d @ weights, axis=1)
        closest = d[runs, best]
        idx[:, c] = cand[runs, best]
    return idx


def weighted_kmeans(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    *,
    n_init: int,
    seed: int,
    max_iter: int = 300,
    sq_dist: np.ndarray | None = None,
    tie_tolerance: float = TIE_TOLERANCE,
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd k-means with k-means++ seeding; the ``n_init`` runs are iterated together.

    Replaces ``sklearn.cluster.KMeans`` here: on a few hundred points its per-fit validation
    and thread set-up cost more than the arithmetic (88 of the 190 ms of an event at E=139).
    Deterministic: the seeding draws from ``default_rng([seed, k])``; a run stops when its
    labels no longer change (then its centers are the weighted means of its clusters); an
    emptied cluster keeps its previous center; the run with the lowest inertia wins (ties: the
    first run).

    Parameters
    ----------
    points : (n, C) float64
    weights : (n,) float64, positive
    k : int
        Clusters, 1 <= k <= n.
    n_init, seed, max_iter : int
    sq_dist : (n, n) float64, optional
        Squared pairwise distances of ``points`` (computed when not given), for the seeding.
    tie_tolerance : float
        A point goes to the lowest-numbered center whose squared distance is within this of
        its smallest (default ``TIE_TOLERANCE``, decision rule 3); 0: plain ``argmin``, where
        exact ties go to whichever center the roundings favour (rules 1 and 2).

    Returns
    -------
    labels : (n,) int64
        Cluster of each point (not canonical).
    inertia : float
        Weighted sum of squared distances to the assigned centers.
    """
    sq = np.einsum("ij,ij->i", points, points)
    if sq_dist is None:
        sq_dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (points @ points.T), 0.0)
    rng = np.random.default_rng([seed, k])
    centers = points[_kmeans_plusplus(sq_dist, weights, k, n_init, rng)]  # (n_init, k, C)
    labels, d = _lloyd(points, weights, centers, max_iter, tie_tolerance)
    nearest = np.take_along_axis(d, labels[:, None, :], axis=1)[:, 0] + sq
    inertia = np.maximum(nearest, 0.0) @ weights
    best = int(np.argmin(inertia))
    return labels[best].astype(np.int64), float(inertia[best])


def _nearest(d: np.ndarray, tie_tolerance: float) -> np.ndarray:
    """Index of the nearest center per run and point, ``d`` ``(n_init, k, n)``: the lowest index
    within ``tie_tolerance`` of the smallest distance (plain ``argmin`` when 0)."""
    if tie_tolerance == 0:
        return np.argmin(d, axis=1)
    return np.argmax(d <= d.min(axis=1, keepdims=True) + tie_tolerance, axis=1)


def _lloyd(
    points: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    max_iter: int,
    tie_tolerance: float = TIE_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Lloyd iterations of ``n_init`` runs at once from ``centers`` ``(n_init, k, C)``
    until no run's labels change (ties: :func:`_nearest`). Returns the labels ``(n_init, n)``
    and the last distances ``(n_init, k, n)``, each minus the point's own ``|x|^2``."""
    n, n_dim = points.shape
    n_init, k = centers.shape[:2]
    runs, cols = np.arange(n_init)[:, None], np.arange(n)[None, :]
    previous = None
    for _ in range(max_iter):
        # distance minus the point's own |x|^2, which does not change the argmin
        d = (centers.reshape(-1, n_dim) @ points.T).reshape(n_init, k, n)
        d *= -2.0
        d += np.einsum("rkc,rkc->rk", centers, centers)[:, :, None]
        labels = _nearest(d, tie_tolerance)  # (n_init, n)
        if previous is not None and np.array_equal(labels, previous):
            break
        previous = labels
        member = np.zeros((n_init, k, n))
        member[runs, labels, cols] = weights
        mass = member.sum(axis=2)[:, :, None]
        sums = (member.reshape(-1, n) @ points).reshape(n_init, k, n_dim)
        centers = np.where(mass > 0, sums / np.where(mass > 0, mass, 1.0), centers)
    return labels, d


def _best_kmeans(
    points: np.ndarray, weights: np.ndarray, max_k: int, seed: int, tie_tolerance: float
) -> np.ndarray:
    """Labels ``(n,)`` of the silhouette-best k-means fit (K >= 2), or zeros if none is possible."""
    n_distinct = 1 + int(np.any(points[1:] != points[:-1], axis=1).sum())  # points are sorted
    top = min(max_k, points.shape[0] - 1, n_distinct)
    best_labels, best_score = np.zeros(points.shape[0], dtype=np.int64), -np.inf
    if top < 2:
        return best_labels
    with single_threaded():
        sq_dist = _sq_unit_distances(points)
        dist = np.sqrt(sq_dist)
        for k in range(2, top + 1):
            labels, _ = weighted_kmeans(
                points, weights, k, n_init=KMEANS_N_INIT, seed=seed, sq_dist=sq_dist,
                tie_tolerance=tie_tolerance,
            )
            labels = canonical(labels)
            if labels.max() < 1:
                continue
            score = silhouette_score(dist, labels)
            if score > best_score:  # ties keep the smaller K
                best_labels, best_score = labels, score
    return best_labels


def pooled_kmeans(
    factors: np.ndarray,
    singular_values: np.ndarray,
    *,
    max_k: int,
    seed: int,
    tie_tolerance: float = TIE_TOLERANCE,
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
        Seeds the k-means++ seedings (``KMEANS_N_INIT`` per K).
    tie_tolerance : float
        Ties in the Lloyd assignment (:func:`weighted_kmeans`): ``TIE_TOLERANCE`` under decision
        rule 3 (default), 0 under rules 1 and 2.

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
    order = _lex_order(points) if points.shape[0] else np.zeros(0, dtype=np.int64)
    if points.shape[0] >= 3:
        sorted_labels = _best_kmeans(
            points[order], share[rows, cols][order], max_k, seed, tie_tolerance
        )
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
