"""Load run stores into xarray objects from the store alone (the files written by
:mod:`selective_sharing.core.store`; never imports torch).

:func:`load_run` gives one run as a :class:`xarray.DataTree`::

    /                    attrs: the manifest (config, seed, dataset, task_names, ...) + run_dir
    /history             per step: loss, grad_norm, lr, assignment (dims step, task)
    /metrics             final test metrics (dim task)
    /events/event_NNNNNN one node per grouping event (the stored event dataset, unchanged)
    /activations/NAME    activation snapshots (e.g. ``final``)

:func:`load_runs` combines the metrics and histories of many runs along a ``run`` dimension with
``dataset``, ``method``, ``seed`` (and ``variant``, ``status``, ``main_metric``) coordinates,
skipping broken runs with one :class:`BrokenRunWarning` that lists them.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from ..core import store
from ..core.store import RunPaths, StoreError

__all__ = ["BrokenRunWarning", "find_runs", "load_run", "load_runs", "run_coords"]

RunLike = str | os.PathLike


class BrokenRunWarning(UserWarning):
    """Some runs given to :func:`load_runs` could not be loaded; the message lists them."""


class IncompleteRunWarning(UserWarning):
    """:func:`load_run` loaded a run that did not finish (failed or still running): it has
    the events written before it stopped, and no metrics."""


def _required(paths: RunPaths, manifest: dict) -> set[str]:
    """Files a run in this state must have: a complete run has history and metrics, unless a
    ``SharingScheduler`` in the user's own loop wrote it (events and manifest only) or it is a
    linear baseline (``core.linear``: metrics only)."""
    if manifest.get("status") != "complete" or manifest.get("trained_by") == "SharingScheduler":
        return set()
    if manifest.get("trained_by") == "linear_baseline":
        return {"metrics"}
    return {"history", "metrics"}


def load_run(
    path: RunLike, *, lazy: bool = False, events: bool = True, activations: bool = True
) -> xr.DataTree:
    """Load one run directory into a DataTree (layout in the module docstring).

    Parameters
    ----------
    path : path-like
        The run directory (the folder holding ``manifest.json``).
    lazy : bool
        Open events and activations backed by dask (arrays are read when used): helps for runs
        with many large events. History and metrics are always read eagerly (they are small).
    events, activations : bool
        Leave out these parts (faster when only metrics or curves are needed).

    Returns
    -------
    xarray.DataTree
        ``tree.attrs`` is the manifest plus ``run_dir`` (str).

    Raises
    ------
    StoreError
        A file is missing, truncated, corrupted or of another schema version; the message names
        the file.
    """
    paths = RunPaths(Path(path))
    if not paths.run_dir.is_dir():
        raise StoreError(paths.run_dir, "no such run directory: pass the folder that holds a "
                                        "run's manifest.json (e.g. runs/DATASET/METHOD/seedN)")
    manifest = store.read_manifest(paths.run_dir)
    status = manifest.get("status")
    if status != "complete":
        warnings.warn(
            f"{paths.run_dir} is marked {status!r}"
            + (f" ({manifest['error']})" if manifest.get("error") else "")
            + ": it has the events written before it stopped and no final metrics (the tree "
              "has no 'metrics' node); finish it with --resume", IncompleteRunWarning,
            stacklevel=2)
    nodes: dict[str, xr.Dataset] = {}
    for part in ("history", "metrics"):
        file = getattr(paths, part)
        if file.exists() or part in _required(paths, manifest):
            nodes[f"/{part}"] = store.open_store_dataset(file, part)
    if events:
        for file in store.list_events(paths.run_dir):  # read_manifest checked none is lost
            nodes[f"/events/{file.stem}"] = store.read_event(file, lazy=lazy)
    if activations:
        for file in store.list_activations(paths.run_dir):
            nodes[f"/activations/{file.stem}"] = store.read_activations(file, lazy=lazy)
    tree = xr.DataTree.from_dict(nodes)
    tree.attrs = dict(manifest, run_dir=str(paths.run_dir))
    return tree


def run_coords(manifest: dict, run_dir: RunLike) -> dict[str, object]:
    """Per-run coordinate values used by :func:`load_runs` (all scalars)."""
    dataset = manifest.get("dataset") or {}
    config = manifest.get("config") or {}
    return {
        "run": str(run_dir),
        "dataset": str(dataset.get("name", (config.get("data") or {}).get("name", ""))),
        "variant": str(dataset.get("variant", "")),
        "method": str(manifest.get("method", "")),
        "seed": int(manifest.get("seed", -1)),
        "status": str(manifest.get("status", "")),
        "main_metric": str(manifest.get("main_metric", "")),
    }


def find_runs(paths: RunLike | Iterable[RunLike]) -> list[Path]:
    """Expand run paths: globs are expanded; a folder without a manifest is searched for runs.

    Returns the run directories in the order given (glob matches and runs found in a folder
    sorted), without duplicates. A path that matches nothing is kept, so that loading it
    reports the problem instead of silently dropping it.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[Path] = []
    for item in items:
        text = os.fspath(item)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        for match in map(Path, matches):
            if match.is_dir() and not (match / "manifest.json").exists():
                found.extend(sorted(p.parent for p in match.rglob("manifest.json")))
            else:
                found.append(match)
    return list(dict.fromkeys(found))


def _one_run(run_dir: Path, lazy: bool) -> tuple[dict, xr.Dataset, xr.Dataset | None]:
    manifest = store.read_manifest(run_dir)
    paths = RunPaths(run_dir)
    coords = run_coords(manifest, run_dir)
    metrics = store.read_metrics(run_dir) if paths.metrics.exists() else None
    if metrics is None and "metrics" in _required(paths, manifest):
        raise StoreError(paths.metrics, "no such file (the manifest says the run is complete)")
    history = store.read_history(run_dir, lazy=lazy) if store.has_history(run_dir) else None
    return coords, metrics, history


def _stack(parts: list[xr.Dataset], coords: list[dict]) -> xr.Dataset:
    """Concatenate per-run datasets along ``run`` (outer join on task/step; NaN/-1 fill)."""
    if not parts:
        return xr.Dataset()
    tagged = []
    for ds, c in zip(parts, coords):
        ds = ds.drop_attrs(deep=False).expand_dims(run=[c["run"]])
        tagged.append(ds.assign_coords({k: ("run", [v]) for k, v in c.items() if k != "run"}))
    fill = {}
    for ds in tagged:
        for name, var in ds.data_vars.items():
            fill[name] = {"i": -1, "u": 0, "b": False}.get(var.dtype.kind, np.nan)
    return xr.concat(
        tagged,
        dim="run",
        join="outer",
        fill_value=fill,
        coords="different",
        compat="equals",
        combine_attrs="drop",
    )


def load_runs(
    paths: RunLike | Iterable[RunLike], *, lazy: bool = False, warn: bool = True
) -> xr.DataTree:
    """Load the metrics and histories of many runs, combined along a ``run`` dimension.

    Parameters
    ----------
    paths : path-like, glob or iterable of them
        Run directories, globs (``"runs/*/*/seed*"``) or folders to search for runs.
    lazy : bool
        Back the histories with dask (read when used).
    warn : bool
        Emit a :class:`BrokenRunWarning` listing the runs that failed to load.

    Returns
    -------
    xarray.DataTree
        ``/metrics`` (run[, task]) and ``/history`` (run, step[, task]); both carry the per-run
        coordinates ``dataset, variant, method, seed, status, main_metric``. Tasks and steps
        are outer-joined across runs (NaN, or -1 for integers, where a run lacks them).
        ``tree.attrs["runs"]`` lists the loaded runs and ``tree.attrs["failed"]`` maps each
        skipped run to its error message.
    """
    loaded, failed = [], {}
    for run_dir in find_runs(paths):
        try:
            loaded.append(_one_run(run_dir, lazy))
        except (StoreError, OSError, ValueError, KeyError, TypeError) as exc:
            failed[str(run_dir)] = f"{type(exc).__name__}: {exc}"
    if failed and warn:
        lines = "\n".join(f"  {run}: {err}" for run, err in failed.items())
        warnings.warn(
            f"load_runs skipped {len(failed)} of {len(failed) + len(loaded)} run(s) that could "
            f"not be loaded:\n{lines}",
            BrokenRunWarning,
            stacklevel=2,
        )
    nodes = {}
    for part, idx in (("metrics", 1), ("history", 2)):
        have = [(c, r[idx]) for r in loaded for c in [r[0]] if r[idx] is not None]
        nodes[f"/{part}"] = _stack([d for _, d in have], [c for c, _ in have])
    tree = xr.DataTree.from_dict(nodes)
    tree.attrs = {"runs": [r[0]["run"] for r in loaded], "failed": failed}
    return tree
