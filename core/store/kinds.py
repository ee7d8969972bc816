"""The table of file kinds and the store's one generic write and read.

Every file a run holds is one row of :data:`KINDS`: its ``store_kind`` name, its record type,
where it lives, its variables (:mod:`.schema`), and its codec (``encode``: record -> dataset,
``decode``: dataset -> record, with ``decode(encode(r)) == r``). :func:`write` and
:func:`open_store_dataset` do the file work for all of them; the per-kind names below
(``read_metrics``, ``write_event``, ``encode_history``, ...) are one-line conveniences over
them that callers already use, not separate implementations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from . import codecs, event_codec
from .coding import Record
from .errors import StoreError
from .io import atomic_write_dataset, open_store_dataset
from .paths import RunPaths, list_history_parts
from .records import Activations, Affinity, Event, History, Metrics
from .schema import (
    ACTIVATION_VARS,
    AFFINITY_VARS,
    EVENT_VARS,
    HISTORY_VARS,
    METRICS_VARS,
    OPTIONAL_COORDS,
    VarSpec,
)
from .writer import replace


@dataclass(frozen=True)
class FileKind:
    """One kind of store file: what it is called, holds and decodes to, and where it lives."""

    name: str
    """The ``store_kind`` global attribute."""
    record: type[Record]
    path: Callable[[RunPaths, xr.Dataset], Path]
    """Where a dataset of this kind is written in a run directory."""
    variables: Mapping[str, VarSpec]
    encode: Callable[[Any], xr.Dataset]
    decode: Callable[[xr.Dataset], Any]
    write_once: bool = False
    """Events are never rewritten: writing one that exists must find the same content."""


KINDS: dict[str, FileKind] = {
    k.name: k
    for k in (
        FileKind("event", Event, lambda p, ds: p.event(int(ds.attrs["index"])), EVENT_VARS,
                 event_codec.encode_event, event_codec.decode_event, write_once=True),
        FileKind("history", History, lambda p, ds: p.history, HISTORY_VARS,
                 codecs.encode_history, codecs.decode_history),
        FileKind("metrics", Metrics, lambda p, ds: p.metrics, METRICS_VARS,
                 codecs.encode_metrics, codecs.decode_metrics),
        FileKind("activations", Activations,
                 lambda p, ds: p.activations(str(ds.attrs.get("name", ""))), ACTIVATION_VARS,
                 codecs.encode_activations, codecs.decode_activations),
        FileKind("affinity", Affinity, lambda p, ds: p.affinity, AFFINITY_VARS,
                 codecs.encode_affinity, codecs.decode_affinity),
    )
}
"""Every file kind of a run directory, by ``store_kind``."""


def kind_of(ds: xr.Dataset, expected: str | None = None) -> FileKind:
    """The row of :data:`KINDS` for ``ds``'s ``store_kind``; ValueError when it has none, or
    not ``expected``."""
    found = ds.attrs.get("store_kind")
    if found not in KINDS or (expected is not None and found != expected):
        want = expected or sorted(KINDS)
        raise ValueError(
            f"ds must be a dataset from encode_{expected or '*'} (store_kind {want!r}); got "
            f"store_kind {found!r}"
        )
    return KINDS[found]


def encode(record: Record) -> xr.Dataset:
    """The dataset of any record (its kind found by type): the inverse of :func:`decode`."""
    for kind in KINDS.values():
        if type(record) is kind.record:
            return kind.encode(record)
    names = [k.record.__name__ for k in KINDS.values()]
    raise TypeError(f"record must be one of the store's records {names}; got {record!r:.80}")


def decode(ds: xr.Dataset) -> Record:
    """The typed record of a store dataset of any kind (by its ``store_kind``)."""
    return kind_of(ds).decode(ds)


# ----------------------------------------------------------------------------- writing


def _same_older_event(existing: xr.Dataset, ds: xr.Dataset) -> bool:
    """Whether ``existing``, an event file written before the coordinates of
    :data:`.schema.OPTIONAL_COORDS` and unit-less categorical variables existed, holds the
    event ``ds``: same values, dims and global attributes; ``ds`` only adds coordinates (and
    differs in variable attributes such as ``units``)."""
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


def write(run_dir: str | os.PathLike, data: xr.Dataset | Record, kind: str | None = None) -> Path:
    """Write a record, or a dataset from an ``encode*`` function, to its place in ``run_dir``
    atomically; returns the path.

    ``kind``, when given, is the ``store_kind`` the dataset must have (ValueError otherwise).
    A write-once kind (events) is never rewritten: if the file exists and holds the same
    dataset, nothing is done (a resumed run re-creates the events after its checkpoint); so it
    is when the file, written before the entity and position coordinates existed, holds the
    same event without them. A differing existing event raises StoreError.
    """
    ds = encode(data) if isinstance(data, Record) else data
    file_kind = kind_of(ds, kind)
    path = file_kind.path(RunPaths(run_dir), ds)
    if file_kind.write_once and path.exists():
        existing = open_store_dataset(path, file_kind.name)
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


def write_event(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """:func:`write` an encoded event to ``events/event_{index:06d}.nc`` (never rewritten)."""
    if "index" not in ds.attrs:
        raise ValueError(f"ds must be a dataset from encode_event; got attrs {sorted(ds.attrs)}")
    return write(run_dir, ds, "event")


def write_history(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """:func:`write` ``history.nc``: the steps since the previous checkpoint while a run trains
    (the older ones are parts, see :func:`shelve_history`), the whole history once it is
    complete (:func:`join_history`)."""
    return write(run_dir, ds, "history")


_NOT_STEP = tuple(n for n in HISTORY_VARS if n != "step")


def _history_steps(path: Path) -> tuple[int, int]:
    """First and last step of a history file (reads only its ``step`` coordinate)."""
    steps = open_store_dataset(path, "history", drop=_NOT_STEP)["step"].values
    return int(steps[0]), int(steps[-1])


def shelve_history(run_dir: str | os.PathLike) -> Path | None:
    """Move ``history.nc`` (the steps of the previous checkpoint) to the part
    ``history/steps_{first step:09d}.nc``: a rename, so the history is appended, never rewritten
    while a run trains (a whole-file rewrite per checkpoint grew with the run, O(steps) per
    event). Returns the part, or None when there is no ``history.nc``."""
    paths = RunPaths(run_dir)
    if not paths.history.exists():
        return None
    first, _ = _history_steps(paths.history)
    paths.history_dir.mkdir(exist_ok=True)
    part = paths.history_part(first)
    replace(paths.history, part)  # on the background writer: renamed by the training thread
    return part


def trim_history(run_dir: str | os.PathLike, from_step: int) -> None:
    """Delete the history written for steps at or after ``from_step`` (a resume: those steps
    are trained and written again, identically): the parts that start there or later, and
    those steps of ``history.nc``. A ``history.nc`` that starts at step 0 (the whole history,
    joined) is deleted when the parts hold every step before ``from_step`` and cut to them
    otherwise (a run resumed from its last checkpoint after it was complete)."""
    paths = RunPaths(run_dir)
    for first, path in list_history_parts(run_dir):
        if first >= from_step:
            path.unlink()
    if not paths.history.exists():
        return
    first, last = _history_steps(paths.history)
    if last < from_step:
        return
    covered = sum(int(open_store_dataset(p, "history", drop=_NOT_STEP).sizes["step"])
                  for _, p in list_history_parts(run_dir))
    if first > 0 or covered >= from_step:
        paths.history.unlink()
        return
    kept = open_store_dataset(paths.history, "history").isel(step=slice(0, from_step - first))
    write_history(run_dir, kept)


def join_history(run_dir: str | os.PathLike, tail: xr.Dataset | None) -> Path | None:
    """Write the whole history as ``history.nc``: the parts, the current ``history.nc`` (shelved
    first, so no step exists only in the file being replaced) and ``tail`` (the steps after it,
    or None). The parts stay until :func:`remove_history_parts`; readers take a ``history.nc``
    that starts at step 0 alone. None when there is no step at all."""
    paths = RunPaths(run_dir)
    if paths.history.exists() and _history_steps(paths.history)[0] == 0:
        # already whole (joined before a crash, or one save): the parts are in it
        remove_history_parts(run_dir)
    shelve_history(run_dir)
    parts = [open_store_dataset(p, "history") for _, p in list_history_parts(run_dir)]
    if tail is not None and tail.sizes.get("step"):
        parts.append(tail)
    if not parts:
        return None
    return write_history(run_dir, _concat_history(parts, run_dir))


def remove_history_parts(run_dir: str | os.PathLike) -> None:
    """Delete ``history/`` (a complete run's ``history.nc`` holds every step)."""
    for _, path in list_history_parts(run_dir):
        path.unlink()
    directory = RunPaths(run_dir).history_dir
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def _concat_history(parts: list[xr.Dataset], run_dir: str | os.PathLike) -> xr.Dataset:
    if len(parts) == 1:
        return parts[0]
    joined = xr.concat(parts, dim="step", data_vars="minimal", coords="minimal",
                       compat="identical", join="exact", combine_attrs="override")
    steps = joined["step"].values
    if (steps[1:] != steps[:-1] + 1).any():
        raise StoreError(RunPaths(run_dir).history_dir,
                         f"history parts do not join into consecutive steps "
                         f"({steps[0]}..{steps[-1]}, {steps.size} steps)")
    return joined


def write_metrics(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """:func:`write` ``metrics.nc``."""
    return write(run_dir, ds, "metrics")


def write_activations(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """:func:`write` ``activations/{name}.nc`` (``name`` from the dataset's attributes)."""
    return write(run_dir, ds, "activations")


def write_affinity(run_dir: str | os.PathLike, ds: xr.Dataset) -> Path:
    """:func:`write` ``affinity.nc`` (a grouping baseline's affinity phase)."""
    return write(run_dir, ds, "affinity")


# ----------------------------------------------------------------------------- reading


def read_event(path: str | os.PathLike, *, bins: bool = True, lazy: bool = False) -> xr.Dataset:
    """One event file (decode with :func:`~.event_codec.decode_event`). ``bins=False`` skips
    the binned window (most of the file's bytes), which deciding and replaying never read."""
    return open_store_dataset(path, "event", () if bins else ("bins",), lazy=lazy)


def read_history(run_dir: str | os.PathLike, *, lazy: bool = False) -> xr.Dataset:
    """The run's history (dims ``step``, ``task``): ``history.nc`` when it starts at step 0 (a
    complete run, or one that has saved once), else the parts of ``history/`` and
    ``history.nc`` joined (a run still training, or one that failed; see
    :func:`shelve_history`)."""
    paths = RunPaths(run_dir)
    parts = list_history_parts(run_dir)
    if not parts:
        return open_store_dataset(paths.history, "history", lazy=lazy)
    files = [p for _, p in parts]
    if paths.history.exists():
        current = open_store_dataset(paths.history, "history", lazy=lazy)
        if int(current["step"].values[0]) == 0:
            return current
        files.append(paths.history)
    return _concat_history([open_store_dataset(p, "history", lazy=lazy) for p in files],
                           run_dir)


def has_history(run_dir: str | os.PathLike) -> bool:
    """Whether the run has written any history (``history.nc`` or parts)."""
    return RunPaths(run_dir).history.exists() or bool(list_history_parts(run_dir))


def read_metrics(run_dir: str | os.PathLike) -> xr.Dataset:
    """``metrics.nc``; task metrics are the variables with ``attrs["role"] == "task_metric"``."""
    return open_store_dataset(RunPaths(run_dir).metrics, "metrics")


def read_activations(path: str | os.PathLike, *, lazy: bool = False) -> xr.Dataset:
    """One activation snapshot file."""
    return open_store_dataset(path, "activations", lazy=lazy)


def read_affinity(run_dir: str | os.PathLike) -> xr.Dataset:
    """``affinity.nc`` of a grouping baseline run."""
    return open_store_dataset(RunPaths(run_dir).affinity, "affinity")


# ----------------------------------------------------------------------------- encoding


def encode_event(**fields: Any) -> xr.Dataset:
    """``encode(Event(**fields))``: see :class:`~.records.Event`. The grouping rule's
    ``EventResult`` gives the decision fields by name; the writer adds the context."""
    return encode(Event(**fields))


def encode_history(**fields: Any) -> xr.Dataset:
    """``encode(History(**fields))``: see :class:`~.records.History`."""
    return encode(History(**fields))


def encode_metrics(**fields: Any) -> xr.Dataset:
    """``encode(Metrics(**fields))``: see :class:`~.records.Metrics`."""
    return encode(Metrics(**fields))


def encode_activations(**fields: Any) -> xr.Dataset:
    """``encode(Activations(**fields))``: see :class:`~.records.Activations`."""
    return encode(Activations(**fields))


def encode_affinity(**fields: Any) -> xr.Dataset:
    """``encode(Affinity(**fields))``: see :class:`~.records.Affinity`."""
    return encode(Affinity(**fields))
