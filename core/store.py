"""The run store: the one module that reads and writes a run directory.

core/ writes only through it and analysis/ reads only through it; never imports torch. Every
file is plain NetCDF4 (readable with ``xarray.open_dataset(path)`` alone) carrying the global
attributes ``schema_version``, ``store_kind`` and ``content_sha256`` (a SHA-256 per variable,
checked on every read and removed from what is returned; files written before it existed are
read unchecked). The schema tables and the pure
``encode_*``/``decode_event`` functions live in :mod:`.store_schema` and are re-exported here;
this module owns the files: atomic writes, schema-checked reads, the manifest.

Layout of a run directory::

    manifest.json  history.nc  metrics.nc  events/event_NNNNNN.nc  activations/NAME.nc
    checkpoint.pt  run.lock

Files are written atomically (temp file in the same directory, fsync, rename), so a crash
leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr

from .store_schema import (
    ACTIVATION_VARS,
    CHECKSUM_ATTR,
    EVENT_VARS,
    HISTORY_VARS,
    METRICS_VARS,
    OPTIONAL_COORDS,
    SCHEMA_VERSION,
    STATUSES,
    StoreError,
    VarSpec,
    check_version,
    content_checksums,
    decode_event,
    encode_activations,
    encode_affinity,
    encode_event,
    encode_history,
    encode_metrics,
    json_default,
    netcdf_encoding,
    pop_checksums,
    verify_variable,
)

__all__ = [
    "ACTIVATION_VARS",
    "EVENT_VARS",
    "HISTORY_VARS",
    "METRICS_VARS",
    "SCHEMA_VERSION",
    "RunPaths",
    "StoreError",
    "VarSpec",
    "atomic_write_bytes",
    "atomic_write_dataset",
    "decode_event",
    "encode_activations",
    "encode_affinity",
    "encode_event",
    "encode_history",
    "encode_metrics",
    "list_activations",
    "list_events",
    "open_store_dataset",
    "read_activations",
    "read_affinity",
    "read_event",
    "read_history",
    "read_manifest",
    "read_metrics",
    "update_manifest",
    "write_activations",
    "write_affinity",
    "write_event",
    "write_history",
    "write_manifest",
    "write_metrics",
]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EVENT_NAME = re.compile(r"^event_(\d{6,})\.nc$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RunPaths:
    """Every path of a run directory: ``RunPaths(run_dir).history`` etc."""

    run_dir: Path
    manifest: Path = field(init=False)
    history: Path = field(init=False)
    metrics: Path = field(init=False)
    events_dir: Path = field(init=False)
    activations_dir: Path = field(init=False)
    checkpoint: Path = field(init=False)
    lock: Path = field(init=False)

    def __post_init__(self) -> None:
        d = Path(self.run_dir)
        names = {
            "run_dir": d,
            "manifest": d / "manifest.json",
            "history": d / "history.nc",
            "metrics": d / "metrics.nc",
            "events_dir": d / "events",
            "activations_dir": d / "activations",
            "checkpoint": d / "checkpoint.pt",
            "lock": d / "run.lock",
        }
        for name, path in names.items():
            object.__setattr__(self, name, path)  # frozen dataclass: derived fields

    def event(self, index: int) -> Path:
        """Path of event number ``index``: ``events/event_{index:06d}.nc``."""
        return self.events_dir / f"event_{index:06d}.nc"

    def activations(self, name: str) -> Path:
        """Path of the activation snapshot ``name``: ``activations/{name}.nc``."""
        return self.activations_dir / f"{name}.nc"


# ----------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _free_bytes(directory: Path) -> int | str:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return "unknown"


#: Every NetCDF open, read and write of this package holds this lock: HDF5 is not thread-safe,
#: and a lazy (dask) read still running in a worker thread after a failed compute must not
#: overlap a read in the main thread (that crashed the process, not just the read).
HDF5_LOCK = threading.RLock()


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temp file beside ``path``, fsync it, rename it over ``path``.

    Readers see the old file or the new one, never a torn one; on any failure the temp file
    is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "r+b") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except StoreError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError) as err:  # netCDF4 reports HDF5 I/O failures as RuntimeError
        tmp.unlink(missing_ok=True)
        raise StoreError(path, f"could not be written ({type(err).__name__}: {err}; "
                         f"{_free_bytes(path.parent)} bytes free on that disk); the previous "
                         "version, if any, is intact: free space or fix permissions and "
                         "--resume") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    return _atomic(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_dataset(path: str | os.PathLike, ds: xr.Dataset) -> Path:
    """Write a store dataset as NetCDF4 to ``path`` atomically (zlib, chunked, no fill values).

    Encodings carried by ``ds`` (e.g. from the file it was read from) are ignored; the store's
    own (:func:`.store_schema.netcdf_encoding`) is used.
    """
    if ds.attrs.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            path,
            f"refusing to write a dataset with schema_version={ds.attrs.get('schema_version')!r};"
            f" expected {SCHEMA_VERSION} (build it with an encode_* function of this module)",
        )
    clean = ds.copy(deep=False)
    clean.encoding = {}
    for var in clean.variables.values():
        var.encoding = {}
    clean.attrs = {**ds.attrs, CHECKSUM_ATTR: content_checksums(clean)}
    encoding = netcdf_encoding(clean)

    def write(tmp: Path) -> None:
        with HDF5_LOCK:
            clean.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)

    return _atomic(path, write)


# ----------------------------------------------------------------------------- reading


def _check_signature(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise StoreError(path, "empty file (0 bytes): truncated or not a NetCDF file")
    if head != _HDF5_SIGNATURE and not head.startswith(b"CDF"):
        raise StoreError(
            path,
            f"not a NetCDF file (starts with {head!r}; expected the NetCDF4/HDF5 signature "
            f"{_HDF5_SIGNATURE!r})",
        )


def open_store_dataset(
    path: str | os.PathLike, kind: str | None = None, drop: Sequence[str] = ()
) -> xr.Dataset:
    """Open a store file, load it fully into memory, close it and check its schema.

    Parameters
    ----------
    path : path-like
        The NetCDF file.
    kind : str, optional
        Expected ``store_kind`` (``"event"``, ``"history"``, ``"metrics"``, ``"activations"``).
    drop : sequence of str
        Variables not to read at all (they are dropped before loading).

    Raises
    ------
    StoreError
        Missing, not NetCDF, truncated or corrupted, another schema_version, another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(path, "no such file")
    _check_signature(path)
    try:
        with HDF5_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
            check_version(path, ds.attrs.get("schema_version"))
            if kind is not None and ds.attrs.get("store_kind") != kind:
                raise StoreError(
                    path, f"store_kind {ds.attrs.get('store_kind')!r} found, expected {kind!r}"
                )
            loaded = ds.drop_vars(list(drop), errors="ignore").load()
    except StoreError:
        raise
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError, ...
        raise StoreError(
            path, f"truncated or corrupted NetCDF ({type(exc).__name__}: {exc})"
        ) from exc
    checksums = pop_checksums(loaded, path)
    for name, var in loaded.variables.items():
        verify_variable(path, name, var.values, checksums)
    return loaded


# ----------------------------------------------------------------------------- manifest


def _check_status(path: Path, manifest: dict) -> None:
    if "status" in manifest and manifest["status"] not in STATUSES:
        raise StoreError(
            path, f"status={manifest['status']!r} is invalid; must be one of {list(STATUSES)}"
        )


def write_manifest(run_dir: str | os.PathLike, manifest: dict) -> None:
    """Write ``run_dir/manifest.json`` atomically, adding ``schema_version``."""
    path = RunPaths(run_dir).manifest
    data = {"schema_version": SCHEMA_VERSION}
    data.update((k, v) for k, v in manifest.items() if k != "schema_version")
    _check_status(path, data)
    try:
        text = json.dumps(data, indent=2, default=json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(path, f"manifest cannot be written as JSON ({exc})") from exc
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """Read and check ``run_dir/manifest.json``.

    Raises
    ------
    StoreError
        Missing (not a run directory), invalid JSON, other schema_version, invalid status.
    """
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
    check_version(path, data.get("schema_version"))
    _check_status(path, data)
    return data


def update_manifest(run_dir: str | os.PathLike, **changes: object) -> dict:
    """Read the manifest, apply ``changes``, write it back atomically; returns the new manifest.

    Not safe against concurrent writers on its own: the run lock (``run.lock``) serializes them.
    """
    data = read_manifest(run_dir)
    data.update(changes)
    write_manifest(run_dir, data)
    return data


def _same_older_event(existing: xr.Dataset, ds: xr.Dataset) -> bool:
    """Whether ``existing``, an event file written before the coordinates of
    :data:`.store_schema.OPTIONAL_COORDS` and unit-less categorical variables existed, holds
    the event ``ds``: same values, dims and global attributes; ``ds`` only adds coordinates
    (and differs in variable attributes such as ``units``)."""
    added = set(ds.variables) - set(existing.variables)
    if not added or not added <= OPTIONAL_COORDS or dict(existing.attrs) != dict(ds.attrs):
        return False
    return all(
        n in ds.variables and var.equals(ds[n].variable) for n, var in existing.variables.items()
    )


def _differences(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """Names of the variables and attributes in which two datasets differ."""
    names = sorted(set(a.variables) | set(b.variables))
    out = [
        n for n in names if n not in a or n not in b or not a[n].variable.identical(b[n].variable)
    ]
    keys = sorted(set(a.attrs) | set(b.attrs))
    changed = [k for k in keys if k not in a.attrs or k not in b.attrs or a.attrs[k] != b.attrs[k]]
    return out + [f"attr {k}" for k in changed]


# ----------------------------------------------------------------------------- events


def write_event(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """Write an encoded event to ``events/event_{index:06d}.nc`` atomically; never rewrite one.

    If the file exists and holds the same dataset (``identical``), nothing is done: a resumed
    run re-creates the events after its checkpoint. So it is when the file, written before the
    entity and position coordinates existed, holds the same event without them (a run started
    by an earlier version and resumed by this one). A differing existing event raises.
    """
    if ds.attrs.get("store_kind") != "event" or "index" not in ds.attrs:
        raise ValueError(
            "ds must be a dataset from encode_event (store_kind 'event' with an "
            f"index attribute); got attrs {sorted(ds.attrs)}"
        )
    path = RunPaths(run_dir).event(int(ds.attrs["index"]))
    if path.exists():
        existing = read_event(path)
        if existing.identical(ds) or _same_older_event(existing, ds):
            return path
        raise StoreError(
            path,
            "this event exists and differs from the one being written "
            f"(in {_differences(existing, ds)}); events are never rewritten. A "
            "resumed run that does not reproduce its events is nondeterministic, "
            "or a second process writes to this run directory",
        )
    return atomic_write_dataset(path, ds)


def read_event(path: str | os.PathLike, *, bins: bool = True) -> xr.Dataset:
    """Load one event file into memory (file closed, schema checked); decode with
    :func:`decode_event`. ``bins=False`` skips the binned window (most of the file's bytes),
    which deciding and replaying never read."""
    return open_store_dataset(path, kind="event", drop=() if bins else ("bins",))


_TEMP_NAME = re.compile(r"^\..+\.tmp-\d+$")


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the hidden temp files (``.NAME.tmp-PID``) that writers killed mid-write left in
    a run directory, its events and activations; return what was deleted.

    Only safe while holding the run lock (:class:`~selective_sharing.core.runlock.RunLock`):
    then no writer of this run is alive, so every temp file is torn and none is ever renamed.
    """
    paths = RunPaths(run_dir)
    removed = []
    for folder in (paths.run_dir, paths.events_dir, paths.activations_dir):
        if folder.is_dir():
            for p in folder.iterdir():
                if _TEMP_NAME.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return sorted(removed)


def list_events(run_dir: str | os.PathLike) -> list[Path]:
    """Event files of a run in event order (temp files of unfinished writes are ignored)."""
    events_dir = RunPaths(run_dir).events_dir
    if not events_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in events_dir.iterdir() if (m := _EVENT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


# ----------------------------------------------------------------------------- other files


def _expect(ds: xr.Dataset, kind: str, param: str = "ds") -> None:
    if ds.attrs.get("store_kind") != kind:
        raise ValueError(
            f"{param} must be a dataset from encode_{kind} (store_kind {kind!r}); "
            f"got store_kind {ds.attrs.get('store_kind')!r}"
        )


def write_history(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """Atomically (re)write ``history.nc`` with a dataset from :func:`encode_history`."""
    _expect(ds, "history")
    return atomic_write_dataset(RunPaths(run_dir).history, ds)


def read_history(run_dir: str | os.PathLike) -> xr.Dataset:
    """Load ``history.nc`` (dims ``step``, ``task``)."""
    return open_store_dataset(RunPaths(run_dir).history, kind="history")


def write_metrics(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """Atomically write ``metrics.nc`` with a dataset from :func:`encode_metrics`."""
    _expect(ds, "metrics")
    return atomic_write_dataset(RunPaths(run_dir).metrics, ds)


def read_metrics(run_dir: str | os.PathLike) -> xr.Dataset:
    """Load ``metrics.nc``; task metrics are the variables with ``attrs["role"] ==
    "task_metric"``."""
    return open_store_dataset(RunPaths(run_dir).metrics, kind="metrics")


def write_activations(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """Atomically write ``activations/{name}.nc`` (``name`` from the dataset's attributes)."""
    _expect(ds, "activations")
    name = str(ds.attrs.get("name", ""))
    if not _FILE_NAME.match(name):
        raise ValueError(
            f"activation snapshot name {name!r} must match {_FILE_NAME.pattern} "
            "(it becomes a file name)"
        )
    return atomic_write_dataset(RunPaths(run_dir).activations(name), ds)


def list_activations(run_dir: str | os.PathLike) -> list[Path]:
    """Activation snapshot files of a run, sorted by name (temp files ignored)."""
    directory = RunPaths(run_dir).activations_dir
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.nc") if _FILE_NAME.match(p.name))


def read_activations(path: str | os.PathLike) -> xr.Dataset:
    """Load one activation snapshot file."""
    return open_store_dataset(path, kind="activations")


def write_affinity(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """Atomically write ``affinity.nc`` (a grouping baseline's affinity phase)."""
    _expect(ds, "affinity")
    return atomic_write_dataset(Path(run_dir) / "affinity.nc", ds)


def read_affinity(run_dir: str | os.PathLike) -> xr.Dataset:
    """Load ``affinity.nc`` of a grouping baseline run."""
    return open_store_dataset(Path(run_dir) / "affinity.nc", kind="affinity")
