"""Checkpoints for resume: model, optimizer, window, hysteresis state, history, counters.

Written atomically (temp file, fsync, rename) so a crash mid-write leaves the previous
checkpoint intact. A crash loses at most the steps since the last checkpoint; the resumed run
recomputes them deterministically and produces the same events.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable; the message names the file."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume; run without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated or corrupted pickle/zip
        raise CheckpointError(f"checkpoint {path} is unreadable ({err}); delete the run "
                              "directory and train again") from err
