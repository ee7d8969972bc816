"""``manifest.json``: a run's config, provenance and status, written atomically as JSON.

A run manifest's ``events`` entry is derived, never taken from the caller: wherever a manifest
has the key, :func:`write_manifest` and :func:`read_manifest` set it to the event files the
directory holds (:func:`~.paths.list_events`), so the file keeps the list for readers of plain
JSON (as of its last write) and the store's readers always get the current one. Before, the
writer rewrote the manifest after every event to keep its own copy of that list, which a crash
between the event and the manifest write left one short. The stored list, of this version or
an earlier one, must name only files that exist: a run never deletes an event, so a missing
one was lost (deleted or moved by hand) and reading the manifest says which.
"""

from __future__ import annotations

import json
import os

from .coding import json_default
from .errors import StoreError, check_version
from .io import atomic_write_bytes
from .paths import RunPaths, list_events
from .schema import SCHEMA_VERSION, STATUSES


def _event_names(run_dir: str | os.PathLike) -> list[str]:
    """The manifest's derived ``events``: names of the event files, in event order."""
    return [p.name for p in list_events(run_dir)]


def _check_status(path: os.PathLike, manifest: dict) -> None:
    if "status" in manifest and manifest["status"] not in STATUSES:
        raise StoreError(
            path, f"status={manifest['status']!r} is invalid; must be one of {list(STATUSES)}"
        )


def write_manifest(run_dir: str | os.PathLike, manifest: dict) -> None:
    """Write ``run_dir/manifest.json`` atomically, adding ``schema_version``; an ``events``
    entry is written as the directory's event files, whatever value ``manifest`` gives it."""
    path = RunPaths(run_dir).manifest
    data = {"schema_version": SCHEMA_VERSION}
    data.update((k, v) for k, v in manifest.items() if k != "schema_version")
    if "events" in data:
        data["events"] = _event_names(run_dir)
    _check_status(path, data)
    try:
        text = json.dumps(data, indent=2, default=json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(path, f"manifest cannot be written as JSON ({exc})") from exc
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _parse(run_dir: str | os.PathLike) -> dict:
    path = RunPaths(run_dir).manifest
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreError(
            path, f"not found: {run_dir} is not a run directory (it has no manifest.json)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(path, f"cannot be read ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(path, f"invalid JSON, the manifest is corrupted ({exc})") from exc
    if not isinstance(data, dict):
        raise StoreError(path, f"must hold a JSON object; found {type(data).__name__}")
    return data


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """Read and check ``run_dir/manifest.json``; its ``events``, if it has the key, lists the
    run's event files now.

    Raises
    ------
    StoreError
        Missing (not a run directory), invalid JSON, other schema_version, invalid status, or
        an event file the stored list names is missing.
    """
    paths = RunPaths(run_dir)
    data = _parse(run_dir)
    check_version(paths.manifest, data.get("schema_version"))
    _check_status(paths.manifest, data)
    if "events" in data:
        events = _event_names(run_dir)
        for name in data["events"] or []:
            if name not in events:
                raise StoreError(paths.events_dir / name, "listed in manifest.json but missing")
        data["events"] = events
    return data


def update_manifest(run_dir: str | os.PathLike, **changes: object) -> dict:
    """Read the manifest, apply ``changes``, write it back atomically; returns the new manifest
    (``events``, if present, as the directory has them, whatever ``changes`` said).

    Not safe against concurrent writers on its own: the run lock (``run.lock``) serializes them.
    """
    data = read_manifest(run_dir)
    data.update(changes)
    write_manifest(run_dir, data)
    if "events" in data:
        data["events"] = _event_names(run_dir)
    return data
