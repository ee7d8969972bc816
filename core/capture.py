"""Gradient capture: the window of summed signals and its sketched trajectory bins.

The signal of a step is already in ``.grad`` after the one backward pass: capture costs a copy
(an in-place add), never another backward pass. Steps are summed per bin; a bin is projected to
``sketch_dim`` by the fixed seeded sketch only when it closes (projection is linear, so
projecting the bin's sum equals summing the projections), keeping the per-step cost at one add.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .grouping.sketch import make_sketcher
from .model import MTLNet


def signal_of(model: MTLNet, signal: str) -> torch.Tensor:
    """The step's gradient signal per entity, (E, R, C): the first estimator weight matrix's
    gradient ``(E, estimator_hidden[0], representation_dim)``, or all estimator parameters
    flattened ``(E, 1, P)``."""
    if signal == "first_layer":
        return model.estimators[0].weight.grad
    grads = [p.grad.reshape(p.shape[0], -1) for p in model.estimator_params()]
    return torch.cat(grads, dim=1).unsqueeze(1)


def entity_grad_norms(model: MTLNet) -> torch.Tensor:
    """L2 norm of each entity's whole estimator gradient, (E,)."""
    sq = sum(p.grad.reshape(p.shape[0], -1).pow(2).sum(1) for p in model.estimator_params())
    return sq.sqrt()


class GradientWindow:
    """Sum of the signal since the window started, plus ``n_bins`` sketched partial sums.

    Parameters
    ----------
    n_entities, signal_shape : the signal is (n_entities, *signal_shape).
    window_len : steps until the window's event; step i of the window goes to bin
        ``i * n_bins // window_len``.
    sketch_dim, sketch_seed, sketch_kind : the fixed random projection (rebuildable from the seed).
    """

    def __init__(self, n_entities: int, signal_shape: tuple[int, int], window_len: int,
                 n_bins: int, sketch_dim: int, sketch_seed: int, sketch_kind: str = "auto"):
        self.window_len, self.n_bins = window_len, n_bins
        n_in = int(np.prod(signal_shape))
        self.sketch = make_sketcher(n_in, sketch_dim, sketch_seed, kind=sketch_kind)
        self.summed = torch.zeros(n_entities, *signal_shape)
        self.acc = torch.zeros(n_entities, *signal_shape)
        self.bins = np.zeros((n_entities, n_bins, sketch_dim), dtype=np.float32)
        self.i = 0
        self.bin = 0

    def add(self, g: torch.Tensor) -> None:
        b = min(self.i * self.n_bins // self.window_len, self.n_bins - 1)
        if b != self.bin:
            self._flush()
            self.bin = b
        self.acc.add_(g)
        self.i += 1

    def _flush(self) -> None:
        flat = self.acc.reshape(self.acc.shape[0], -1).numpy()
        self.bins[:, self.bin] += np.asarray(self.sketch(flat), dtype=np.float32)
        self.summed.add_(self.acc)
        self.acc.zero_()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Close the window: (summed (E, R, C) float32, bins (E, n_bins, sketch_dim) float32)."""
        self._flush()
        return self.summed.numpy().astype(np.float32, copy=True), self.bins.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"summed": self.summed.clone(), "acc": self.acc.clone(),
                "bins": self.bins.copy(), "i": self.i, "bin": self.bin}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.summed, self.acc = state["summed"].clone(), state["acc"].clone()
        self.bins, self.i, self.bin = state["bins"].copy(), state["i"], state["bin"]
