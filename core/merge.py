"""Merging estimators after a grouping event (README, "What a run does", step 4).

A merge is a linear map ``M`` (new_entities, old_entities) applied to every estimator tensor:
``average`` takes the mean of the members (valid because branches start identical), ``best``
the member with the lowest windowed loss, ``first`` the member with the lowest index. The same
``M`` is applied to Adam's moment estimates, so the optimizer state stays consistent with the
weights it belongs to. Heads are kept: tasks of a group differ only in their heads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def merge_matrix(parent: np.ndarray, mode: str, scores: np.ndarray | None = None) -> torch.Tensor:
    """The (E_after, E_before) map a merge applies to each estimator tensor.

    Parameters
    ----------
    parent : (E_before,) int
        Entity after the event that each entity before it went into.
    mode : {"average", "best", "first"}
    scores : (E_before,) float, optional
        Windowed loss per entity; required for ``best`` (lower is better, NaN counts as worst).
    """
    parent = np.asarray(parent, dtype=np.int64)
    n_after, n_before = int(parent.max()) + 1, parent.size
    m = np.zeros((n_after, n_before))
    for g in range(n_after):
        members = np.flatnonzero(parent == g)
        if mode == "average":
            m[g, members] = 1.0 / members.size
        elif mode == "first":
            m[g, members[0]] = 1.0
        elif mode == "best":
            if scores is None:
                raise ValueError("merge mode 'best' needs the windowed loss per entity (scores)")
            s = np.where(np.isfinite(scores[members]), scores[members], np.inf)
            m[g, members[int(np.argmin(s))]] = 1.0
        else:
            raise ValueError(f"invalid merge={mode!r}: merge must be one of "
                             "['average', 'best', 'first']")
    return torch.as_tensor(m, dtype=torch.float32)


def replaces_parameters(parent: np.ndarray) -> bool:
    """Whether an event with this ``parent`` map changes the estimators: False when every
    entity stays itself (``parent`` is ``0, 1, ..., E-1``: nothing merged), and the event then
    leaves the parameters, their optimizer state and the hooks on them as they are."""
    parent = np.asarray(parent)
    return not np.array_equal(parent, np.arange(parent.size))


@torch.no_grad()
def merge_estimators(model: Any, optimizer: torch.optim.Optimizer | None, parent: np.ndarray,
                     assignment_after: np.ndarray, mode: str,
                     scores: np.ndarray | None = None) -> torch.Tensor:
    """Replace the stacked estimators of a :class:`~.branched.BranchedModel` by the merged
    ones, in place, with their optimizer state (:meth:`~.estimators.EstimatorStack.merge`).
    Returns the map ``M`` (E_after, E_before) it applied."""
    m = merge_matrix(parent, mode, scores)
    apply_merge_map(model, m, assignment_after, optimizer)
    return m


@torch.no_grad()
def apply_merge_map(model: Any, m: torch.Tensor, assignment_after: np.ndarray,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """Apply the merge map ``m`` (E_after, E_before) to the stacked estimators of ``model`` (and
    the per-parameter state of ``optimizer``) and give it ``assignment_after``."""
    model.estimators.merge(m, optimizer)
    model.assignment.copy_(torch.as_tensor(assignment_after, dtype=torch.long))
