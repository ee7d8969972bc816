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
from concurrent.futures import Future, ThreadPoolExecutor
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


_SKETCH_THREAD: list[ThreadPoolExecutor] = []


def _sketch_thread() -> ThreadPoolExecutor:
    """The one thread that projects closed bins (shared by every window of the process, so
    jobs run in the order they were submitted)."""
    if not _SKETCH_THREAD:
        _SKETCH_THREAD.append(ThreadPoolExecutor(1, thread_name_prefix="selective-sharing-sketch"))
    return _SKETCH_THREAD[0]


def _project(acc: torch.Tensor, summed: torch.Tensor, bins: torch.Tensor, b: int,
             proj: torch.Tensor, sign: torch.Tensor | None, sketch_dim: int,
             threads: int | None = None) -> None:
    """Add the closed bin ``acc`` (E, R, C) into the window's ``summed`` and its sketch into
    ``bins[:, b]``; zero ``acc``. Bins are closed in order, so ``summed`` adds them in the
    same order on either thread.

    ``threads``: the training thread's torch thread count, set here first. A new thread
    otherwise runs MKL/OpenMP with the machine's default count, which sums the product in
    another order: bins that differ in their last bits from the same run's resumed copy
    (caught by the kill/resume suite)."""
    if threads is not None:
        torch.set_num_threads(threads)
    summed.add_(acc)
    flat = acc.view(acc.shape[0], -1)
    with torch.no_grad():
        if sign is None:
            out = flat @ proj
        else:  # count-sketch; acc is zeroed below, so it is signed in place (no temporary)
            flat.mul_(sign)
            out = torch.zeros(flat.shape[0], sketch_dim, device=flat.device,
                              dtype=flat.dtype).index_add_(1, proj, flat)
        bins[:, b] += out
        acc.zero_()


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
        # CPU: a closed bin is projected on the sketch thread (another core) while training
        # goes on into the spare buffer; the two swap at every flush. A GPU queues the
        # projection on its stream anyway: it is done in place.
        self._threaded = self.summed.device.type == "cpu"
        self._spare = torch.zeros_like(self.acc) if self._threaded else None
        self._job: Future | None = None  # the projection of the last closed bin

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
        """Close the current bin: add it to the window's sum and project it into its bin.

        On a CPU both (the bin's only real arithmetic: an (E, R*C) x (R*C, d) product, 3 ms of
        a 14 ms step at T = 40 with 5k-parameter estimators, and the add) run on the sketch
        thread, which torch lets run on another core; the step only swaps buffers. ``summed``
        and the bins are read only after :meth:`wait` (``finish`` and ``state_dict`` call it),
        and they are the same operations on the same values on either thread.
        """
        if not self._threaded:
            _project(self.acc, self.summed, self.bins, self.bin, self._proj, self._sign,
                     self.sketch_dim)
            return
        self.wait()  # the previous bin's job holds the spare buffer until it has zeroed it
        closed, self.acc, self._spare = self.acc, self._spare, self.acc
        self._job = _sketch_thread().submit(_project, closed, self.summed, self.bins, self.bin,
                                            self._proj, self._sign, self.sketch_dim,
                                            torch.get_num_threads())

    def wait(self) -> None:
        """Wait until every closed bin is projected (a no-op when none is pending)."""
        job, self._job = self._job, None
        if job is not None:
            job.result()  # re-raises an error of the projection

    def finish(self, reduce: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Close the window: (summed (E, R, C) float32, bins (E, n_bins, sketch_dim) float32).

        ``reduce``: applied in place to the summed window and to the bins on the device before
        they go to the host (data-parallel ranks average their windows here, once per event).
        """
        self._flush()
        self.wait()
        if reduce is not None:
            reduce(self.summed)
            reduce(self.bins)
        return (self.summed.cpu().numpy().astype(np.float32, copy=True),
                self.bins.cpu().numpy().astype(np.float32, copy=True))

    def state_dict(self) -> dict[str, Any]:
        """On the host (checkpoints load anywhere); saved between steps, so nothing is pending
        (the projections of closed bins are waited for)."""
        self.wait()
        return {"summed": self.summed.cpu().clone(), "acc": self.acc.cpu().clone(),
                "bins": self.bins.cpu().numpy().copy(), "i": self.i, "bin": self.bin}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait()
        device = self.summed.device
        self.summed, self.acc = state["summed"].to(device), state["acc"].to(device)
        self.bins = torch.as_tensor(np.asarray(state["bins"], dtype=np.float32)).to(device)
        self.i, self.bin = state["i"], state["bin"]
