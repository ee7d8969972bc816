"""Data-parallel training of one run over several processes (``torch.distributed``).

Launch with ``torchrun --nproc_per_node=N -m selective_sharing.core.train ...``: every process
(rank) trains the same model on its share of each global batch, wrapped in
``DistributedDataParallel`` (``gloo`` on CPUs, ``nccl`` on GPUs). What Selective Sharing adds
costs one reduction per grouping event and nothing per step:

- capture stays one local in-place add per backward: each rank's hook sees its *local*
  gradient; at an event the windows (and their bins) of all ranks are averaged, once;
- rank 0 decides (the pure decision rule) and broadcasts the result; every rank applies the same
  merge, so parameters and optimizer state stay bit-identical across ranks;
- only rank 0 writes the run store; the manifest records the world size and the backend.

The built-in trainer splits each global batch of the seeded sampler by rank (``idx[rank::world]``)
and divides every task's loss by the task's count in the *global* batch, so the gradient DDP
averages equals the single-process gradient of the same global batch (up to summation order).
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .runlock import alive


class RankFailure(RuntimeError):
    """Another rank of a data-parallel run stopped; the message names it."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a data-parallel run (rank 0 of 1 outside one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """The initialized process group's rank and size (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_backend())
    return DistInfo()


def launched() -> bool:
    """True in a process started by ``torchrun`` (or with its environment) for several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device, timeout_s: float = 1800.0
                  ) -> tuple[DistInfo, torch.device]:
    """Join the process group that ``torchrun``'s environment describes (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), unless one is already
    initialized: ``nccl`` for CUDA devices, ``gloo`` otherwise. Returns this rank's place and
    device (``cuda:LOCAL_RANK`` for a run that asks for ``cuda``, made the current device).
    ``timeout_s`` bounds every collective, e.g. the other ranks' wait while rank 0 evaluates."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = rank_device(device, DistInfo(world=int(os.environ.get("WORLD_SIZE", "1")),
                                          local_rank=local))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not (dist.is_available() and dist.is_initialized()):
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_s))
    return current(), device


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """A CUDA device per rank (``cuda:LOCAL_RANK``) when the run asks for CUDA without an
    index; the device as it is otherwise."""
    if info.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def average_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All-reduce ``tensor`` in place to its mean over the ranks."""
    if info.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(info.world)
    return tensor


def sum_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """All-reduce ``tensor`` in place to its sum over the ranks."""
    if info.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; for results and small states)."""
    if not info.active:
        return obj
    box = [obj if info.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def agree(info: DistInfo, fn: Any) -> Any:
    """``fn()`` on rank 0, its result on every rank; an exception on rank 0 is raised there and,
    as :class:`RankFailure` naming it, on every other rank (no rank is left waiting)."""
    if not info.active:
        return fn()
    outcome: tuple[str, Any] = ("", None)
    error: BaseException | None = None
    if info.is_main:
        try:
            outcome = ("ok", fn())
        except Exception as err:  # told to the other ranks, then raised here
            error, outcome = err, ("error", f"{type(err).__name__}: {err}")
    outcome = broadcast(outcome, info)
    if error is not None:
        raise error
    if outcome[0] == "error":
        raise RankFailure(f"rank 0 could not start the run: {outcome[1]}")
    return outcome[1]


def peers(info: DistInfo) -> list[tuple[str, int]]:
    """``(host, pid)`` of every rank, in rank order (one collective, at the start)."""
    me = (socket.gethostname(), os.getpid())
    if not info.active:
        return [me]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, me)
    return [tuple(p) for p in out]


def dead_ranks(peer_list: list[tuple[str, int]]) -> list[int]:
    """Ranks on this host whose process no longer exists (others cannot be checked here)."""
    host, dead = socket.gethostname(), []
    for rank, (h, pid) in enumerate(peer_list):
        if h != host or pid == os.getpid():
            continue
        if not alive(pid):
            dead.append(rank)
    return dead


def failure_message(err: BaseException, info: DistInfo, peer_list: list[tuple[str, int]]) -> str:
    """What a run's manifest says when a data-parallel run fails: the rank(s) that stopped."""
    dead = dead_ranks(peer_list)
    if dead:
        who = ", ".join(f"rank {r} (pid {peer_list[r][1]} on {peer_list[r][0]})" for r in dead)
        return (f"{who} of {info.world} stopped during training; rank {info.rank} then failed "
                f"with {type(err).__name__}: {err}")
    return f"rank {info.rank} of {info.world}: {type(err).__name__}: {err}"


class SigtermGuard:
    """What :func:`terminate_raises` yields: :meth:`hold` turns later SIGTERMs into a note, so
    the failure path (the manifest marked failed) is not cut short by the SIGTERM ``torchrun``
    sends when another rank has already failed."""

    def __init__(self) -> None:
        self.holding = False
        self.received = False

    def hold(self) -> None:
        """From now on a SIGTERM is only noted (``received``); the caller is already failing."""
        self.holding = True


@contextmanager
def terminate_raises(info: DistInfo) -> Iterator[SigtermGuard]:
    """SIGTERM (what ``torchrun`` sends the other ranks when one fails) raises
    :class:`RankFailure` in the main thread, so the run is marked failed rather than left
    ``running``. The first SIGTERM raises; any later one, or one after
    :meth:`SigtermGuard.hold`, is only noted, so the code that handles the failure runs to its
    end (a second signal there would otherwise kill the process before it marks the run)."""
    guard = SigtermGuard()
    if not info.active or threading.current_thread() is not threading.main_thread():
        yield guard
        return

    def handler(signum: int, frame: Any) -> None:
        first = not (guard.received or guard.holding)
        guard.received = True
        if first:
            raise RankFailure(f"rank {info.rank} received SIGTERM (torchrun stops every rank "
                              "when one fails)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield guard
    finally:
        signal.signal(signal.SIGTERM, previous)


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


__all__ = ["DistInfo", "RankFailure", "SigtermGuard", "agree", "average_", "barrier", "broadcast",
           "current", "failure_message", "init_from_env", "launched", "peers", "rank_device",
           "sum_", "terminate_raises"]
