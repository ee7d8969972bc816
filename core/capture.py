"""Gradient capture: the window of summed signals and its sketched trajectory bins.

The signal of a step reaches the window through a gradient hook on the signal parameter during
the step's one backward pass (see :mod:`.scheduler`): capture costs an in-place add, never
another backward pass. Steps are summed per bin; a bin is projected to
``sketch_dim`` by the fixed seeded sketch only when it closes (projection is linear, so
projecting the bin's sum equals summing the projections), keeping the per-step cost at one add.

The projection is the one of :mod:`.grouping.sketch` (kind from
:func:`~.grouping.sketch.resolve_kind`, then the same seeded matrix or buckets), applied with
torch: on torch's threads, beside the training step, instead of numpy's BLAS threads, which on a
busy machine spin-wait against torch's and made a flush cost 100x its arithmetic. Projections are built once per (size, seed) and reused by later windows.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .grouping.sketch import countsketch_params, dense_projection, resolve_kind


def entity_grad_norms(model: Any) -> torch.Tensor:
    """L2 norm of each entity's whole estimator gradient, (E,) (zero where no gradient)."""
    sq = sum(p.grad.reshape(p.shape[0], -1).pow(2).sum(1) for p in model.estimator_params()
             if p.grad is not None)
    if not torch.is_tensor(sq):
        return torch.zeros(model.n_entities)
    return sq.sqrt()


@functools.lru_cache(maxsize=4)
def _projection(n_in: int, sketch_dim: int, seed: int, kind: str
                ) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """``(kind, matrix (n_in, sketch_dim), None)`` or ``(kind, bucket (n_in,), sign (n_in,))``;
    shared between windows, never modified."""
    kind = resolve_kind(kind, n_in, sketch_dim)
    if kind == "dense":
        return kind, torch.from_numpy(dense_projection(n_in, sketch_dim, seed)), None
    bucket, sign = countsketch_params(n_in, sketch_dim, seed)
    return kind, torch.from_numpy(bucket), torch.from_numpy(sign)


class GradientWindow:
    """Sum of the signal since the window started, plus ``n_bins`` sketched partial sums.

    Parameters
    ----------
    n_entities, signal_shape : the signal is (n_entities, *signal_shape).
    window_len : steps until the window's event; step i of the window goes to bin
        ``i * n_bins // window_len``.
    sketch_dim, sketch_seed, sketch_kind : the fixed random projection (rebuildable from the seed
        with :func:`.grouping.sketch.dense_projection` or
        :func:`~.grouping.sketch.countsketch_params`).
    """

    def __init__(self, n_entities: int, signal_shape: tuple[int, int], window_len: int,
                 n_bins: int, sketch_dim: int, sketch_seed: int, sketch_kind: str = "auto",
                 device: torch.device | str = "cpu", scaled: bool = False):
        self.window_len, self.n_bins, self.sketch_dim = window_len, n_bins, sketch_dim
        n_in = int(np.prod(signal_shape))
        self.sketch_kind, self._proj, self._sign = _projection(n_in, sketch_dim, sketch_seed,
                                                               sketch_kind)
        self.summed = torch.zeros(n_entities, *signal_shape, device=device)
        self.acc = torch.zeros(n_entities, *signal_shape, device=device)
        # fp16 with a GradScaler: a step's (scaled) gradient waits here until the step is known
        # to have been applied (the scaler skips steps with non-finite gradients)
        self.pending = torch.zeros_like(self.acc) if scaled else None
        self._proj = self._proj.to(device)
        self._sign = None if self._sign is None else self._sign.to(device)
        # on the device too: the host sees the bins once, at the event
        self.bins = torch.zeros(n_entities, n_bins, sketch_dim, device=device)
        self.i = 0
        self.bin = 0

    @property
    def _target(self) -> torch.Tensor:
        return self.acc if self.pending is None else self.pending

    def accumulate(self, g: torch.Tensor) -> None:
        """Add one backward pass's signal ``g`` (E, R, C) to the current step (hook side)."""
        self._target.add_(g.reshape(self.acc.shape))

    def accumulate_columns(self, g: torch.Tensor, start: int) -> None:
        """Add ``g`` (E, ...) flattened into columns ``start:`` of a flat (E, 1, P) signal."""
        flat = g.reshape(g.shape[0], -1)
        self._target[:, 0, start:start + flat.shape[1]].add_(flat)

    def end_step(self, scale: float | None = None, skipped: bool = False) -> None:
        """Close the current step; sketch the bin when the next step falls in another one.

        With a GradScaler (``scaled`` window): ``scale`` is the loss scale this step's backward
        used, divided out here (a power of two: exact); ``skipped``: the scaler found
        non-finite gradients and skipped the update, so the step's gradient is dropped.
        """
        if self.pending is not None:
            if not skipped:
                self.acc.add_(self.pending, alpha=1.0 / float(scale or 1.0))
            self.pending.zero_()
        self.i += 1
        b = min(self.i * self.n_bins // self.window_len, self.n_bins - 1)
        if b != self.bin:
            self._flush()
            self.bin = b

    def add(self, g: torch.Tensor) -> None:
        """One whole step's signal: :meth:`accumulate` then :meth:`end_step`."""
        self.accumulate(g)
        self.end_step()

    def _flush(self) -> None:
        self.summed.add_(self.acc)
        flat = self.acc.view(self.acc.shape[0], -1)
        with torch.no_grad():
            if self._sign is None:
                proj = flat @ self._proj
            else:  # count-sketch; acc is zeroed below, so it is signed in place (no temporary)
                flat.mul_(self._sign)
                proj = torch.zeros(flat.shape[0], self.sketch_dim, device=flat.device,
                                   dtype=flat.dtype).index_add_(1, self._proj, flat)
        self.bins[:, self.bin] += proj
        self.acc.zero_()

    def finish(self, reduce: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Close the window: (summed (E, R, C) float32, bins (E, n_bins, sketch_dim) float32).

        ``reduce``: applied in place to the summed window and to the bins on the device before
        they go to the host (data-parallel ranks average their windows here, once per event).
        """
        self._flush()
        if reduce is not None:
            reduce(self.summed)
            reduce(self.bins)
        return (self.summed.cpu().numpy().astype(np.float32, copy=True),
                self.bins.cpu().numpy().astype(np.float32, copy=True))

    def state_dict(self) -> dict[str, Any]:
        """On the host (checkpoints load anywhere); saved between steps, so nothing is pending."""
        return {"summed": self.summed.cpu().clone(), "acc": self.acc.cpu().clone(),
                "bins": self.bins.cpu().numpy().copy(), "i": self.i, "bin": self.bin}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.summed.device
        self.summed, self.acc = state["summed"].to(device), state["acc"].to(device)
        self.bins = torch.as_tensor(np.asarray(state["bins"], dtype=np.float32)).to(device)
        self.i, self.bin = state["i"], state["bin"]
