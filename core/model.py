"""The multi-task network: a shared trunk, one estimator per entity (group), one head per task.

Estimators and heads are *banks*: one stacked weight tensor ``(n_entities, out, in)`` per layer,
so the whole per-entity gradient signal is one tensor (``estimators[0].weight.grad`` has shape
``(n_entities, estimator_hidden[0], representation_dim)``) and capture costs one copy.
A group is one estimator serving several heads: ``assignment[t]`` is task t's estimator.

``stl`` uses the same classes with ``trunk_copies = n_tasks``: every task its own trunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

# Use the per-entity (sparse) path when fewer than this share of (sample, entity) pairs is needed:
# "one dataset per task" data (School) labels each sample for one task only.
DENSE_MIN_FILL = 0.3


def _uniform_(t: torch.Tensor, fan_in: int, gen: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default scale
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=gen)


class Bank(nn.Module):
    """``k`` stacked linear layers; copy i maps ``(..., in)`` to ``(..., out)``."""

    def __init__(self, k: int, n_in: int, n_out: int, *, identical: bool, gen: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(k, n_out))
        rows = 1 if identical else k
        for i in range(rows):
            _uniform_(self.weight[i], n_in, gen)
            _uniform_(self.bias[i], n_in, gen)
        if identical:
            with torch.no_grad():
                self.weight.copy_(self.weight[:1].expand_as(self.weight))
                self.bias.copy_(self.bias[:1].expand_as(self.bias))

    def all(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, k, in) or (B, in) shared -> (B, k, out)."""
        eq = "bi,koi->bko" if x.dim() == 2 else "bki,koi->bko"
        return torch.einsum(eq, x, self.weight) + self.bias

    def one(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return F.linear(x, self.weight[i], self.bias[i])


class Trunk(nn.Module):
    """Shared feature extractor ending in a ReLU representation of ``representation_dim`` units.

    An MLP for vectors, a small CNN (3x3 conv, ReLU, 2x2 max-pool per stage) for images.
    ``copies > 1`` holds independent trunks (for ``stl``), run as grouped convolutions.
    """

    def __init__(self, input_shape: Sequence[int], cfg: ModelConfig, copies: int,
                 gen: torch.Generator):
        super().__init__()
        self.copies = copies
        self.image = len(input_shape) == 3
        self.convs = nn.ParameterList()
        n_in = int(input_shape[0])
        if self.image:
            c, h, w = (int(s) for s in input_shape)
            for ch in cfg.conv_channels:
                wt = torch.empty(copies * ch, c, 3, 3)
                for i in range(copies):
                    _uniform_(wt[i * ch:(i + 1) * ch], c * 9, gen)
                self.convs.append(nn.Parameter(wt))
                self.convs.append(nn.Parameter(torch.zeros(copies * ch)))
                c, h, w = ch, h // 2, w // 2
            n_in = c * h * w
        widths = [n_in, *cfg.trunk_hidden, cfg.representation_dim]
        self.layers = nn.ModuleList(
            Bank(copies, a, b, identical=False, gen=gen) for a, b in zip(widths, widths[1:]))

    def _conv(self, x: torch.Tensor, copy: int | None) -> torch.Tensor:
        for i in range(0, len(self.convs), 2):
            w, b, groups = self.convs[i], self.convs[i + 1], self.copies
            if copy is not None:
                ch = w.shape[0] // self.copies
                w, b, groups = w[copy * ch:(copy + 1) * ch], b[copy * ch:(copy + 1) * ch], 1
            elif i == 0 and self.copies > 1:
                x = x.repeat(1, self.copies, 1, 1)
            x = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1, groups=groups)), 2)
        return x

    def all(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, ...) -> representation (B, copies, D)."""
        if self.image:
            x = self._conv(x, None).reshape(x.shape[0], self.copies, -1)
        for layer in self.layers:
            x = F.relu(layer.all(x))
        return x

    def one(self, x: torch.Tensor, copy: int) -> torch.Tensor:
        """Trunk copy ``copy`` on ``x`` (n, ...) -> (n, D)."""
        if self.image:
            x = self._conv(x, copy).flatten(1)
        for layer in self.layers:
            x = F.relu(layer.one(x, copy))
        return x


class MTLNet(nn.Module):
    """Trunk + estimator bank (one per entity) + head bank (one per task).

    Parameters
    ----------
    input_shape : tuple
        ``(n_features,)`` or ``(channels, height, width)``.
    n_outputs : sequence of int, length n_tasks
        Outputs of each task's head (classes for multiclass, else 1); heads have the max.
    assignment : sequence of int, length n_tasks
        Initial entity of each task (``range(T)`` for mtl/stl/ss, zeros for mtl_full).
    trunk_copies : int
        1 (shared trunk) or n_entities (``stl``: entity i uses trunk copy i).
    """

    def __init__(self, input_shape: Sequence[int], n_outputs: Sequence[int], cfg: ModelConfig,
                 assignment: Sequence[int], trunk_copies: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("assignment", torch.as_tensor(list(assignment), dtype=torch.long))
        n_entities = int(self.assignment.max()) + 1
        self.trunk = Trunk(input_shape, cfg, trunk_copies, gen)
        identical = cfg.branch_init == "identical"
        widths = [cfg.representation_dim, *cfg.estimator_hidden]
        self.estimators = nn.ModuleList(
            Bank(n_entities, a, b, identical=identical, gen=gen) for a, b in zip(widths, widths[1:]))
        self.heads = Bank(len(n_outputs), widths[-1], max(n_outputs), identical=identical, gen=gen)

    @property
    def n_entities(self) -> int:
        return int(self.estimators[0].weight.shape[0])

    def entity_of_copy(self, e: int) -> int:
        return e if self.trunk.copies > 1 else 0

    def estimator_params(self) -> list[nn.Parameter]:
        return [p for layer in self.estimators for p in (layer.weight, layer.bias)]

    def count_parameters(self) -> tuple[int, int]:
        """(all parameters, estimator parameters)."""
        est = sum(p.numel() for p in self.estimator_params())
        return sum(p.numel() for p in self.parameters()), est

    def _estimate_all(self, h: torch.Tensor) -> torch.Tensor:
        """Representation (B, K, D) -> every estimator's output (B, E, H)."""
        z = h[:, 0] if h.shape[1] == 1 else h
        for layer in self.estimators:
            z = F.relu(layer.all(z))
        return z

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.all(x)

    def entity_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every estimator on every sample: (B, E, H)."""
        return self._estimate_all(self.trunk.all(x))

    def forward_entries(self, x: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor
                        ) -> torch.Tensor:
        """Predictions for the labelled entries (sample ``b_idx[n]``, task ``t_idx[n]``): (N, O).

        Computes each estimator only on the samples it is needed for when that is a small
        share of all (sample, estimator) pairs, else everything at once.
        """
        e_idx = self.assignment[t_idx]
        n_e, batch = self.n_entities, x.shape[0]
        keys, inverse = torch.unique(e_idx * batch + b_idx, return_inverse=True)
        if keys.numel() >= DENSE_MIN_FILL * batch * n_e:
            z = self.entity_outputs(x)[b_idx, e_idx]
        else:
            z = self._sparse(x, keys, batch)[inverse]
        w, b = self.heads.weight[t_idx], self.heads.bias[t_idx]
        return torch.einsum("nh,noh->no", z, w) + b

    def _sparse(self, x: torch.Tensor, keys: torch.Tensor, batch: int) -> torch.Tensor:
        ent, smp = keys // batch, keys % batch
        shared = self.trunk.all(x)[:, 0] if self.trunk.copies == 1 else None
        counts = torch.bincount(ent, minlength=self.n_entities).tolist()
        # Unbind each bank once: indexing ``weight[e]`` per entity would make the backward of
        # every index build a zero gradient the size of the whole bank, O(E^2 P) per step
        # (T=40, P=500k: 2.3 s of CPU per layer instead of 0.15 s). Same values, one buffer.
        banks = [(layer.weight.unbind(0), layer.bias.unbind(0)) for layer in self.estimators]
        out, start = [], 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            rows = smp[start:start + n]
            start += n
            z = shared[rows] if shared is not None else self.trunk.one(x[rows], e)
            for w, b in banks:
                z = F.relu(F.linear(z, w[e], b[e]))
            out.append(z)
        return torch.cat(out)
