"""Hysteresis: a merge happens only after it was proposed in ``patience`` consecutive events.

State is a task-pair matrix ``streak (T, T)``: the number of consecutive events (this one
included) in which tasks i and j sat in different entities and were proposed together. Pairs
already in one entity carry 0 (they have nothing pending; groups never split). Task pairs, not
entity pairs, because entity numbers change whenever anything merges.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .partition import canonical


def update_streak(
    streak_before: np.ndarray, assignment_before: np.ndarray, proposed: np.ndarray
) -> np.ndarray:
    """Advance the streaks by one event.

    Parameters
    ----------
    streak_before : (T, T) int
    assignment_before : (T,) int
        Entity of each task before the event.
    proposed : (E,) int
        Group the strategy proposes for each entity.

    Returns
    -------
    (T, T) int64
        ``streak_before + 1`` for pairs in different entities proposed together, else 0.
    """
    a = np.asarray(assignment_before, dtype=np.int64)
    p = np.asarray(proposed, dtype=np.int64)[a]
    pending = (p[:, None] == p[None, :]) & (a[:, None] != a[None, :])
    return np.where(pending, np.asarray(streak_before, dtype=np.int64) + 1, 0)


def apply_patience(
    assignment_before: np.ndarray,
    proposed: np.ndarray,
    streak_after: np.ndarray,
    patience: int,
) -> np.ndarray:
    """Keep only the proposed merges whose streak reached ``patience``.

    Two entities are *ready* when they are proposed together and every task pair across them
    has ``streak_after >= patience``. The result groups the connected components of the ready
    pairs (each inside one proposed group). With ``patience == 1`` it equals ``proposed``.

    Parameters
    ----------
    assignment_before : (T,) int
        Entity of each task; every entity in ``[0, E)`` holds at least one task.
    proposed : (E,) int
    streak_after : (T, T) int
        From :func:`update_streak`.
    patience : int

    Returns
    -------
    (E,) int64
        Canonical entity labels, a refinement of ``proposed``.
    """
    a = np.asarray(assignment_before, dtype=np.int64)
    p = np.asarray(proposed, dtype=np.int64)
    n = p.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(a, kind="stable")
    starts = np.searchsorted(a[order], np.arange(n))
    s = np.asarray(streak_after)[np.ix_(order, order)]
    # weakest task-pair streak between each pair of entities
    weakest = np.minimum.reduceat(np.minimum.reduceat(s, starts, axis=0), starts, axis=1)
    ready = (weakest >= patience) & (p[:, None] == p[None, :])
    np.fill_diagonal(ready, True)
    _, labels = connected_components(csr_matrix(ready), directed=False)
    return canonical(labels)
