"""Masked multi-task losses on labelled entries (sample, task).

Every loss is computed on the labelled entries only, then averaged per task, so a task's loss
and gradient come only from its labelled samples (README, "Your own data": masks).
``rank`` tasks use a pairwise RankNet loss among the task's labelled items in the batch, plus
``rank_mse_weight`` times the squared error of the rating, so the score also predicts the rating.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

TYPE_CODES = {"regression": 0, "binary": 1, "multiclass": 2, "rank": 3}


def _per_task_mean(values: torch.Tensor, t_idx: torch.Tensor, n_tasks: int,
                   counts: torch.Tensor | None = None) -> torch.Tensor:
    """Per-task sum of ``values`` over the task's count here, or over ``counts`` (a larger
    batch's counts, of which these entries are a share: data-parallel ranks)."""
    zeros = values.new_zeros(n_tasks)
    total = zeros.index_add(0, t_idx, values)
    if counts is None:
        counts = zeros.index_add(0, t_idx, torch.ones_like(values))
    return total / counts.to(values.dtype).clamp_min(1.0)


def pairwise_rank_loss(score: torch.Tensor, y: torch.Tensor, t_idx: torch.Tensor,
                       n_tasks: int) -> torch.Tensor:
    """Mean RankNet loss ``softplus(-(s_i - s_j))`` over pairs with ``y_i > y_j`` of one task.

    Items are padded into a (n_tasks, L, L) block, L = the most items any task has in the batch.
    Returns (n_tasks,) with 0 for tasks without a strictly ordered pair.
    """
    order = torch.argsort(t_idx, stable=True)
    t_sorted = t_idx[order]
    counts = torch.bincount(t_sorted, minlength=n_tasks)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(t_sorted.numel(), device=t_idx.device) - starts[t_sorted]
    width = int(counts.max())
    s = score.new_zeros(n_tasks, width)
    r = y.new_zeros(n_tasks, width)
    valid = torch.zeros(n_tasks, width, dtype=torch.bool, device=score.device)
    s = s.index_put((t_sorted, pos), score[order])
    r = r.index_put((t_sorted, pos), y[order])
    valid = valid.index_put((t_sorted, pos), torch.ones_like(pos, dtype=torch.bool))
    better = (r[:, :, None] > r[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    pair_loss = F.softplus(-(s[:, :, None] - s[:, None, :])) * better
    n_pairs = better.sum(dim=(1, 2)).clamp_min(1)
    return pair_loss.sum(dim=(1, 2)) / n_pairs


def entry_losses(pred: torch.Tensor, y: torch.Tensor, t_idx: torch.Tensor,
                 task_codes: torch.Tensor, n_classes: torch.Tensor, rank_mse_weight: float,
                 counts: torch.Tensor | None = None) -> torch.Tensor:
    """Per-task mean loss from the labelled entries only, shape (n_tasks,); 0 for tasks without
    labelled entries. :func:`task_losses` is the same on whole ``(B, T)`` batches.

    Parameters
    ----------
    pred : (N, O) predictions of the labelled entries.
    y : (N,) targets (class indices as floats for multiclass).
    t_idx : (N,) task of each entry.
    task_codes : (n_tasks,) ``TYPE_CODES`` of each task.
    n_classes : (n_tasks,) classes of each task (1 for non-multiclass).
    counts : (n_tasks,), optional
        Divide each task's summed loss by these counts instead of its entries here: the
        entries of a global batch's task in the whole batch, when a data-parallel rank holds a
        share of it (the ranks' losses then add up to the global batch's). The pairwise term of
        ``rank`` tasks is over the pairs within these entries only.
    """
    n_tasks = task_codes.numel()
    if t_idx.numel() == 0:  # no labelled entry: zero losses that still reach the parameters
        return pred.sum() * 0.0 + pred.new_zeros(n_tasks)
    code = task_codes[t_idx]
    elem = torch.zeros_like(pred[:, 0])
    y = y.to(elem.dtype)
    reg = code == TYPE_CODES["regression"]
    if reg.any():
        elem = torch.where(reg, (pred[:, 0] - y) ** 2, elem)
    binary = code == TYPE_CODES["binary"]
    if binary.any():
        bce = F.binary_cross_entropy_with_logits(pred[:, 0], y, reduction="none")
        elem = torch.where(binary, bce, elem)
    multi = code == TYPE_CODES["multiclass"]
    if multi.any():
        cls = torch.arange(pred.shape[1], device=pred.device)[None, :] < n_classes[t_idx][:, None]
        logits = pred.masked_fill(~cls, float("-inf"))
        target = torch.where(multi, y, torch.zeros_like(y)).long()
        ce = F.cross_entropy(logits, target, reduction="none")
        elem = torch.where(multi, ce, elem)
    rank = code == TYPE_CODES["rank"]
    if rank.any():
        elem = torch.where(rank, rank_mse_weight * (pred[:, 0] - y) ** 2, elem)
    losses = _per_task_mean(elem, t_idx, n_tasks, counts)
    if rank.any():
        idx = rank.nonzero()[:, 0]
        losses = losses + pairwise_rank_loss(pred[idx, 0], y[idx], t_idx[idx], n_tasks)
    return losses


def task_codes(tasks: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TYPE_CODES of each task, classes of each task)`` from TaskSpecs, both (n_tasks,)."""
    codes = torch.tensor([TYPE_CODES[t.type] for t in tasks])
    return codes, torch.tensor([t.n_classes for t in tasks])


def task_losses(outputs: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, tasks: Sequence[Any],
                rank_mse_weight: float = 0.5) -> torch.Tensor:
    """Masked per-task losses of a batch, for your own training loop: shape (n_tasks,).

    Parameters
    ----------
    outputs : (B, n_tasks, O)
        ``BranchedModel(x)``.
    y : (B, n_tasks)
        Targets (class indices as floats for multiclass tasks); entries outside ``mask`` ignored.
    mask : (B, n_tasks) bool
        True where the task is labelled on the sample: a task's loss and gradient come only from
        its labelled samples (0 for a task with none in the batch).
    tasks : sequence of TaskSpec
        ``model.tasks``: each task's type picks its loss (MSE, BCE, CE, pairwise RankNet).
    rank_mse_weight : float
        Weight of the rating's squared error beside the pairwise loss of ``rank`` tasks.

    Examples
    --------
    >>> loss = task_losses(model(x), y, mask, model.tasks).sum()
    """
    if outputs.dim() != 3 or outputs.shape[:2] != y.shape or y.shape != mask.shape:
        raise ValueError(f"task_losses needs outputs (B, T, O), y (B, T) and mask (B, T); got "
                         f"{tuple(outputs.shape)}, {tuple(y.shape)}, {tuple(mask.shape)}")
    if outputs.shape[1] != len(tasks):
        raise ValueError(f"outputs has {outputs.shape[1]} tasks but tasks lists {len(tasks)}")
    codes, n_classes = task_codes(tasks)
    b_idx, t_idx = mask.bool().nonzero(as_tuple=True)
    return entry_losses(outputs[b_idx, t_idx], y[b_idx, t_idx], t_idx, codes.to(t_idx.device),
                        n_classes.to(t_idx.device), rank_mse_weight)
