"""``BranchedModel``: any trunk, a stacked estimator per entity, one head per task.

The estimator template (any ``nn.Module`` mapping ``(B, D)`` to ``(B, H)``) is cloned once per
task and held *stacked*: one tensor per template parameter (and buffer) with a leading entity
dimension, as :func:`torch.func.stack_module_state` lays them out. A merge of entities is then
one linear map along that dimension (:meth:`.estimators.EstimatorStack.merge`), and the
gradient signal of every entity is one tensor (the stacked first weight matrix's gradient,
``(E, H0, D)``).

Forward runs every entity with ``vmap(functional_call)`` (``randomness="different"``, so Dropout
masks differ per entity; BatchNorm keeps running statistics per entity in its stacked buffers).
Templates that are plain ``Linear``/``ReLU`` stacks run on ``einsum`` over the same tensors
instead (the layout of the earlier per-layer banks), for two reasons: the built-in runs keep the
arithmetic, hence the numbers, of earlier releases; and it is faster for few estimators.
Measured with ``reproduce/bench_steps.py::stack_paths`` (forward + backward of the whole stack,
20 samples per estimator, one thread, torch 2.14.1): vmap / einsum = 1.31 at T=8, 0.84-0.91 at
T=40 and 139 (5k parameters per estimator), 0.99-1.04 with 493k parameters. So einsum is not
faster everywhere: at T >= 40 with small estimators vmap is 10-15% faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..datasets.base import TaskSpec
from .config import BRANCH_INITS
from .estimators import EstimatorStack, init_stacked_linear, output_width

# Use the per-entity (sparse) path when fewer than this share of (sample, entity) pairs is needed:
# "one dataset per task" data (School) labels each sample for one task only.
DENSE_MIN_FILL = 0.3


def task_specs(heads: Sequence[int | TaskSpec]) -> list[TaskSpec]:
    """TaskSpecs from ``heads``: a TaskSpec is kept; an int ``k`` is a regression task (k = 1) or
    a ``k``-class task, named ``task{i}``. Pass TaskSpecs for binary or rank tasks."""
    out = []
    for i, h in enumerate(heads):
        if isinstance(h, TaskSpec):
            out.append(h)
        elif isinstance(h, int) and not isinstance(h, bool) and h >= 1:
            out.append(TaskSpec(f"task{i}", "regression" if h == 1 else "multiclass",
                                1 if h == 1 else h))
        else:
            raise ValueError(f"invalid heads[{i}]={h!r}: each head must be a positive output "
                             "size or a TaskSpec")
    if not out:
        raise ValueError("heads is empty: give one output size or TaskSpec per task")
    return out


class BranchedModel(nn.Module):
    """A shared trunk, one estimator per entity (group of tasks), one linear head per task.

    Parameters
    ----------
    trunk : nn.Module
        Maps a batch to the shared representation ``(B, D)``. (A trunk with ``copies > 1``
        returning ``(B, copies, D)`` gives every entity its own representation: ``stl``.)
    estimator : nn.Module
        Template mapping ``(B, D)`` to ``(B, H)``, cloned once per task.
    heads : sequence of int or TaskSpec, length n_tasks
        Each task's output size, or the datasets' TaskSpecs (an int k: regression for 1, else k
        classes). Heads are linear ``H -> max outputs``; ``forward`` pads to the widest.
    branch_init : {"identical", "independent"}
        ``identical`` (default) starts every estimator and head from the same weights, which is
        what makes the tasks' gradients comparable.
    seed : int
        Seeds the heads and independent estimator draws; the trunk and template are used as given.
    assignment : sequence of int, optional
        Initial entity of each task (default: one each, ``range(n_tasks)``).
    hidden_dim : int, optional
        The template's output width H, when it cannot be read off its last layer.
    signal : str, optional
        The template parameter whose gradient is the grouping signal (default: its first
        parameter with two or more dimensions, e.g. ``"0.weight"``).
    """

    def __init__(self, trunk: nn.Module, estimator: nn.Module, heads: Sequence[int | TaskSpec],
                 *, branch_init: str = "identical", seed: int = 0,
                 assignment: Sequence[int] | None = None, hidden_dim: int | None = None,
                 signal: str | None = None):
        super().__init__()
        if branch_init not in BRANCH_INITS:
            raise ValueError(f"invalid branch_init={branch_init!r}: one of {list(BRANCH_INITS)}")
        self.tasks = task_specs(heads)
        n_tasks = len(self.tasks)
        assignment = list(range(n_tasks)) if assignment is None else list(assignment)
        if len(assignment) != n_tasks or min(assignment) < 0:
            raise ValueError(f"invalid assignment={assignment}: one entity index >= 0 per task "
                             f"({n_tasks} tasks)")
        self.register_buffer("assignment", torch.as_tensor(assignment, dtype=torch.long))
        identical = branch_init == "identical"
        self.branch_init = branch_init
        self.trunk = trunk
        self.estimators = EstimatorStack(estimator, max(assignment) + 1, identical=identical,
                                         seed=seed)
        width = hidden_dim or output_width(estimator)
        n_out = max(t.n_outputs for t in self.tasks)
        gen = torch.Generator().manual_seed(seed)
        self.head_weight = nn.Parameter(torch.empty(n_tasks, n_out, width))
        self.head_bias = nn.Parameter(torch.empty(n_tasks, n_out))
        init_stacked_linear(self.head_weight, self.head_bias, identical=identical, gen=gen)
        default = next((k for k, v in self.estimators.params().items() if v.dim() >= 3), None)
        self.signal_name = signal or default
        if self.signal_name is None:
            raise ValueError("the estimator template has no weight matrix to take the gradient "
                             "signal from: pass signal=NAME of one of its parameters")
        self.estimators.param(self.signal_name)  # fails early, naming the parameters

    # -- structure -------------------------------------------------------------------------
    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_entities(self) -> int:
        return self.estimators.n

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def estimator_params(self) -> list[nn.Parameter]:
        """The stacked estimator parameters, each ``(n_entities, *template shape)``."""
        return [self.estimators.param(k) for k in self.estimators.names]

    def signal_parameter(self) -> nn.Parameter:
        """The stacked parameter whose gradient is the grouping signal."""
        return self.estimators.param(self.signal_name)

    def count_parameters(self) -> tuple[int, int]:
        """(all parameters, estimator parameters)."""
        est = sum(p.numel() for p in self.estimator_params())
        return sum(p.numel() for p in self.parameters()), est

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``, after resizing the stacks to the state's entity
        count (a state saved after merges has fewer estimators than a fresh model)."""
        key = f"estimators.stacked.{next(iter(self.estimators.stacked))}"
        if key in state_dict and state_dict[key].shape[0] != self.n_entities:
            self.estimators.resize(int(state_dict[key].shape[0]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- forward ---------------------------------------------------------------------------
    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's output: (B, D), or (B, copies, D) for a per-entity trunk."""
        return self.trunk(x)

    def entity_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every estimator on every sample: (B, E, H)."""
        return self.estimators(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every task's output, (B, n_tasks, max outputs)."""
        z = self.entity_outputs(x)[:, self.assignment]
        return torch.einsum("bth,toh->bto", z, self.head_weight) + self.head_bias

    def forward_entries(self, x: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor,
                        representation: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions for the labelled entries (sample ``b_idx[n]``, task ``t_idx[n]``): (N, O).

        Computes each estimator only on the samples it is needed for when that is a small
        share of all (sample, estimator) pairs, else everything at once.

        ``representation``: the trunk's output, rows first, computed by the caller (``b_idx``
        then indexes its rows and the trunk is not run), e.g. one row per entry so that each
        entry's gradient arrives separately (:class:`~.baselines.AffinityRecorder`). Not for
        per-task trunks (``stl``), whose estimators each read their own trunk.
        """
        if representation is not None and getattr(self.trunk, "copies", 1) > 1:
            raise ValueError(
                f"representation given, but the trunk holds {self.trunk.copies} per-task "
                "copies whose outputs each estimator reads itself: call without it")
        e_idx = self.assignment[t_idx]
        batch = x.shape[0] if representation is None else representation.shape[0]
        keys, inverse = torch.unique(e_idx * batch + b_idx, return_inverse=True)
        if self._dense(keys.numel(), batch):
            z = (self.entity_outputs(x) if representation is None
                 else self.estimators(representation))[b_idx, e_idx]
        else:
            z = self._sparse(x, keys, batch, representation)[inverse]
        w, b = self.head_weight[t_idx], self.head_bias[t_idx]
        return torch.einsum("nh,noh->no", z, w) + b

    def computed_pairs(self, b_idx: torch.Tensor, t_idx: torch.Tensor, batch: int) -> int:
        """How many (sample, estimator) pairs :meth:`forward_entries` computes for these
        entries of a batch of ``batch`` samples: every pair on the dense path, else the
        labelled ones."""
        keys = torch.unique(self.assignment[t_idx] * batch + b_idx).numel()
        return batch * self.n_entities if self._dense(keys, batch) else keys

    def _dense(self, n_keys: int, batch: int) -> bool:
        """Whether ``n_keys`` (sample, estimator) pairs of a batch take the dense path: most
        pairs are needed, or none. With no labelled entry (a batch or a data-parallel rank's
        share without labels) the dense path gives (0, O) predictions that still reach every
        parameter, so the step's backward (and DDP's all-reduce) runs with zero gradients."""
        return n_keys == 0 or n_keys >= DENSE_MIN_FILL * batch * self.n_entities

    def _sparse(self, x: torch.Tensor, keys: torch.Tensor, batch: int,
                representation: torch.Tensor | None = None) -> torch.Tensor:
        ent, smp = keys // batch, keys % batch
        per_entity = getattr(self.trunk, "copies", 1) > 1
        shared = representation
        if shared is None and not per_entity:
            shared = self.trunk(x)
        counts = torch.bincount(ent, minlength=self.n_entities).tolist()
        unbound = self.estimators.unbound()
        out, start = [], 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            rows = smp[start:start + n]
            start += n
            h = self.trunk.one(x[rows], e) if shared is None else shared[rows]
            out.append(self.estimators.forward_one(h, e, unbound))
        return torch.cat(out)

def describe(model: BranchedModel, limit: int = 4000) -> dict[str, str]:
    """What a manifest records of a user's model: its class, trunk and estimator template (the
    modules' reprs, cut at ``limit`` characters). Enough to rebuild it by hand, not to load it:
    ``load_model(run_dir, model=...)`` needs the model again."""
    def cut(text: str) -> str:
        return text if len(text) <= limit else text[:limit] + " ..."

    return {"class": type(model).__name__, "trunk": cut(repr(model.trunk)),
            "estimator": cut(repr(model.estimators._template[0])),
            "signal": str(model.signal_name), "branch_init": model.branch_init}


__all__ = ["DENSE_MIN_FILL", "BranchedModel", "describe", "task_specs"]
