"""Where each file of a run directory lives, and listing the ones that exist.

Layout of a run directory::

    manifest.json  history.nc  metrics.nc  affinity.nc  events/event_NNNNNN.nc
    activations/NAME.nc  checkpoint.pt  run.lock  history/steps_NNNNNNNNN.nc

While a run trains, its history is appended as one part per checkpoint
(``history/steps_{first step:09d}.nc``, the steps since the previous part); when the run
completes, the parts are joined into ``history.nc`` and removed.

The directory is the truth about which events exist: :func:`list_events` is derived from it
(the manifest no longer keeps a copy that a crash between two writes could make stale).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_EVENT_NAME = re.compile(r"^event_(\d{6,})\.nc$")
_PART_NAME = re.compile(r"^steps_(\d{9,})\.nc$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TEMP_NAME = re.compile(r"^\..+\.tmp-\d+$")


@dataclass(frozen=True)
class RunPaths:
    """Every path of a run directory: ``RunPaths(run_dir).history`` etc."""

    run_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))  # frozen: normalise once

    manifest = property(lambda self: self.run_dir / "manifest.json", doc="manifest.json")
    history = property(lambda self: self.run_dir / "history.nc", doc="history.nc")
    metrics = property(lambda self: self.run_dir / "metrics.nc", doc="metrics.nc")
    affinity = property(lambda self: self.run_dir / "affinity.nc", doc="affinity.nc")
    events_dir = property(lambda self: self.run_dir / "events", doc="events/")
    activations_dir = property(lambda self: self.run_dir / "activations", doc="activations/")
    checkpoint = property(lambda self: self.run_dir / "checkpoint.pt", doc="checkpoint.pt")
    lock = property(lambda self: self.run_dir / "run.lock", doc="run.lock")
    history_dir = property(lambda self: self.run_dir / "history", doc="history/ (parts)")

    def history_part(self, first_step: int) -> Path:
        """Path of the history part that starts at ``first_step``:
        ``history/steps_{first_step:09d}.nc``."""
        return self.history_dir / f"steps_{first_step:09d}.nc"

    def event(self, index: int) -> Path:
        """Path of event number ``index``: ``events/event_{index:06d}.nc``."""
        return self.events_dir / f"event_{index:06d}.nc"

    def activations(self, name: str) -> Path:
        """Path of the activation snapshot ``name``: ``activations/{name}.nc``.

        Raises ValueError unless ``name`` is a plain file name (it must not escape the folder).
        """
        if not _FILE_NAME.match(name):
            raise ValueError(
                f"activation snapshot name {name!r} must match {_FILE_NAME.pattern} "
                "(it becomes a file name)"
            )
        return self.activations_dir / f"{name}.nc"


def event_index(path: str | os.PathLike) -> int | None:
    """The number of an event file (``event_000012.nc`` -> 12); None for any other name."""
    m = _EVENT_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_events(run_dir: str | os.PathLike) -> list[Path]:
    """Event files of a run in event order (temp files of unfinished writes are ignored)."""
    events_dir = RunPaths(run_dir).events_dir
    if not events_dir.is_dir():
        return []
    found = [(i, p) for p in events_dir.iterdir() if (i := event_index(p)) is not None]
    return [p for _, p in sorted(found)]


def list_history_parts(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(first step, path)`` of the history parts of a run still training, in step order
    (temp files ignored); empty once the run is complete (its history is ``history.nc``)."""
    directory = RunPaths(run_dir).history_dir
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PART_NAME.match(p.name))]
    return sorted(found)


def list_activations(run_dir: str | os.PathLike) -> list[Path]:
    """Activation snapshot files of a run, sorted by name (temp files ignored)."""
    directory = RunPaths(run_dir).activations_dir
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.nc") if _FILE_NAME.match(p.name))


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the hidden temp files (``.NAME.tmp-PID``) that writers killed mid-write left in
    a run directory, its events and activations; return what was deleted.

    Only safe while holding the run lock (:class:`~selective_sharing.core.runlock.RunLock`):
    then no writer of this run is alive, so every temp file is torn and none is ever renamed.
    """
    paths = RunPaths(run_dir)
    removed = []
    for folder in (paths.run_dir, paths.events_dir, paths.activations_dir, paths.history_dir):
        if folder.is_dir():
            for p in folder.iterdir():
                if _TEMP_NAME.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return sorted(removed)
