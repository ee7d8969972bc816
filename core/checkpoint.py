"""Checkpoints for resume: model, optimizer, window, hysteresis state, history, counters.

Written atomically (temp file, fsync, rename) so a crash mid-write leaves the previous
checkpoint intact. A crash loses at most the steps since the last checkpoint; the resumed run
recomputes them deterministically and produces the same events.
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import store


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or cannot be written; the message names the file."""


def _free_space(directory: Path) -> str:
    try:
        return f"{shutil.disk_usage(directory).free} bytes free on its device"
    except OSError:
        return "free space unknown"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename).

    Raises
    ------
    CheckpointError
        The file could not be written (full disk, read-only directory...): the message names
        the file and the free space; the previous checkpoint, if any, is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        store.replace(tmp, path)  # on the background writer: renamed by the training thread
    except Exception as err:  # torch reports a full disk as e.g. "unexpected pos 415552 vs ..."
        raise CheckpointError(
            f"cannot write checkpoint {path} ({type(err).__name__}: {err}); "
            f"{_free_space(path.parent)}. Free space or fix the directory's permissions, then "
            "--resume; the previous checkpoint is unchanged"
        ) from err
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. the directory became read-only: the temp file never existed


def snapshot(state: Any) -> Any:
    """A copy of ``state`` that later training cannot change: every tensor copied to the host,
    every numpy array copied, containers rebuilt (other values are immutable or shared as is).

    What a checkpoint written on the background writer holds (:meth:`~.trainer.Trainer.save`):
    ``model.state_dict()`` and ``optimizer.state_dict()`` return the live tensors, which the
    next steps change in place. Copying 493k-parameter estimators for 139 tasks with Adam's
    moments (about 0.8 GB) costs a fraction of writing them (memcpy against file writes and
    fsync), and only the copy stays on the training step.
    """
    return _refresh(None, state)


def _refresh(old: Any, state: Any) -> Any:
    """:func:`snapshot` of ``state``, copying into the host tensors and arrays of ``old`` (an
    earlier snapshot, or None) wherever shape, dtype and layout match; anything else is copied
    fresh (one walk of the state for both)."""
    if torch.is_tensor(state):
        if (
            torch.is_tensor(old) and old.device.type == "cpu" and old.shape == state.shape
            and old.dtype == state.dtype and old.layout == state.layout == torch.strided
            and old.stride() == state.stride() and old.data_ptr() != state.data_ptr()
        ):  # fmt: skip
            with torch.no_grad():
                old.copy_(state)
            return old
        return state.detach().to("cpu", copy=True)
    if isinstance(state, np.ndarray):
        if isinstance(old, np.ndarray) and old.shape == state.shape and old.dtype == state.dtype:
            np.copyto(old, state)
            return old
        return state.copy()
    if isinstance(state, dict):
        before = old if isinstance(old, dict) else {}
        out = copy.copy(state)
        for k, v in state.items():
            out[k] = _refresh(before.get(k), v)
        return out
    if isinstance(state, (list, tuple)) and not hasattr(state, "_fields"):
        same = type(old) is type(state) and len(old) == len(state)
        return type(state)(_refresh(o, v) for o, v in zip(old if same else [None] * len(state), state))
    return state


class SnapshotBuffers:
    """Host copies of a training state for checkpoints written on another thread, in memory that
    is reused from one checkpoint to the next.

    :func:`snapshot` allocates its host copy afresh each time. For large states that is what
    costs: the allocator hands a fresh multi-hundred-megabyte block back to the system once it
    is freed, and the next copy page-faults its way through new memory (1.9-2.2 s for an
    0.8 GB state of 139 stacked 493k-parameter estimators with Adam's moments on the 2-core
    machine, against 0.075 s copying into memory already mapped). :meth:`take` copies into the
    snapshot that the writer :meth:`give_back`-ed after writing it, wherever the shapes still
    match (a merge shrinks the stacks: those tensors are copied fresh once).

    The price is one host copy of the state held between checkpoints. Thread-safe: the training
    thread takes, the writer thread gives back; a snapshot is only reused after it was given back,
    so a checkpoint still being written is never overwritten (a take before that copies fresh).
    """

    def __init__(self) -> None:
        self._spare: Any = None
        self._lock = threading.Lock()

    def take(self, state: Any) -> Any:
        """A copy of ``state`` that later training cannot change, equal to ``snapshot(state)``;
        its buffers belong to the caller until :meth:`give_back`."""
        with self._lock:
            spare, self._spare = self._spare, None
        return snapshot(state) if spare is None else _refresh(spare, state)

    def give_back(self, snap: Any) -> None:
        """Return a snapshot from :meth:`take` once nothing reads it any more (one is kept)."""
        with self._lock:
            self._spare = snap

    def clear(self) -> None:
        """Drop the kept snapshot (its memory goes back to the allocator)."""
        with self._lock:
            self._spare = None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume; run without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or corrupted pickle/zip
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({err}); delete the run directory and train again"
        ) from err
