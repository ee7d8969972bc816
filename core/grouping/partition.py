"""Partitions as label arrays: canonical numbering, composition, sizes.

A partition of n items is an integer array ``(n,)``; items with equal labels share a group. The
*canonical* form numbers groups 0, 1, 2, ... in the order of their first item, so two label
arrays describe the same partition exactly when their canonical forms are equal.
"""

from __future__ import annotations

import numpy as np


def _as_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of group labels, got shape {arr.shape}")
    integral = np.issubdtype(arr.dtype, np.integer)
    if arr.size and not integral and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}: {arr!r}")
    return arr.astype(np.int64, copy=False)


def canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber groups 0, 1, 2, ... in the order in which they first appear.

    Parameters
    ----------
    labels : (n,) int
        Any integer labels.

    Returns
    -------
    (n,) int64
        Same partition; ``canonical([5, 5, 2, 7, 2]) == [0, 0, 1, 2, 1]``.
    """
    arr = _as_labels(labels)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)]


def compose(assignment: np.ndarray, entity_labels: np.ndarray) -> np.ndarray:
    """Task partition after grouping the entities: ``entity_labels[assignment]``.

    Parameters
    ----------
    assignment : (n_tasks,) int
        Entity of each task, values in ``[0, n_entities)``.
    entity_labels : (n_entities,) int
        Group of each entity.

    Returns
    -------
    (n_tasks,) int64
        Group of each task (not renumbered; apply :func:`canonical` for the canonical form).
    """
    a = _as_labels(assignment, "assignment")
    e = _as_labels(entity_labels, "entity_labels")
    if a.size and (a.min() < 0 or a.max() >= e.size):
        raise ValueError(
            f"assignment values must lie in [0, {e.size}) (one per entity_labels entry), "
            f"found range [{a.min()}, {a.max()}]"
        )
    return e[a]


def n_groups(labels: np.ndarray) -> int:
    """Number of distinct groups in ``labels`` ``(n,)``."""
    return int(np.unique(_as_labels(labels)).size)


def group_sizes(labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Size of each group of the canonical form of ``labels`` ``(n,)``.

    Parameters
    ----------
    labels : (n,) int
    weights : (n,) int or None
        Size of each item (e.g. tasks per entity); None counts items.

    Returns
    -------
    (n_groups,) int64
        Indexed by canonical group label.
    """
    lab = canonical(labels)
    w = np.ones(lab.size, dtype=np.int64) if weights is None else np.asarray(weights, np.int64)
    return np.bincount(lab, weights=w, minlength=lab.max(initial=-1) + 1).astype(np.int64)
