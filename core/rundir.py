"""The run directory: what :func:`~.training.train` finds there, and what it writes first.

Before a step is trained, rank 0 locks ``config.out`` (:func:`open_run`), checks that the
directory suits the call (a new run, ``resume`` or ``overwrite``), and writes the manifest
(:func:`new_manifest`: config, the method's resolved spec, dataset provenance, versions,
threads, device). The data are loaded here too (:func:`load_data`), and the one line a run
prints about its defaults is built here (:func:`describe_defaults`). Everything is written
through :mod:`core.store`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import shutil
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from . import store
from .config import RunConfig
from .distributed import DistInfo
from .methods import method_spec
from .runlock import RunLock

_VERSIONED = ("selective-sharing", "torch", "numpy", "scipy", "scikit-learn", "xarray",
              "netCDF4")


class RunDirError(RuntimeError):
    """The run directory is in a state that this call cannot continue from."""


def load_data(config: RunConfig, data: Any) -> Any:
    """The run's data: ``data`` validated when the caller gives it, else the registered dataset
    ``config.data.name`` loaded with the run's profile, seed and loader options."""
    if data is not None:
        return data.validate()
    from ..datasets import load_dataset

    d = config.data
    return load_dataset(d.name, profile=config.profile, seed=config.seed,
                        data_root=d.data_root, allow_substitute=d.allow_substitute, **d.options)


def prepare_run_dir(run_dir: Path, resume: bool) -> str | None:
    """Check the directory suits the call; return the status of the run already there."""
    manifest = run_dir / "manifest.json"
    if resume and not manifest.exists():
        raise RunDirError(f"cannot --resume {run_dir}: it holds no run (no {manifest.name}); "
                          "run without --resume")
    if not manifest.exists():
        return None
    status = store.read_manifest(run_dir).get("status")
    if not resume:
        raise RunDirError(f"{run_dir} already holds a run (status {status!r}); pass --resume "
                          "(resume=True in Python) to continue it, --overwrite (overwrite=True) "
                          "to delete it and train again, or choose another --out (config out=...)")
    return status


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, check=False,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def versions_and_revision() -> dict[str, Any]:
    """``{"versions": package versions, "git_revision": ...}`` for a manifest: an exact replay
    needs the code that wrote the run, so the run says which it was."""
    return {"versions": _versions(), "git_revision": _git_revision()}


def describe_defaults(config: RunConfig, device: Any) -> str:
    """One line: where the run's defaults come from and the settings that matter most."""
    source = {"generic_image": "generic image defaults (data without a registered profile)",
              "generic_vector": "generic vector defaults (data without a registered profile)",
              "": "a config built by hand"}.get(config.defaults_from,
                                                f"the {config.defaults_from!r} profile")
    tr, m = config.train, config.model
    batch = "full batch" if tr.batch_size is None else f"batches of {tr.batch_size}"
    trunk = m.trunk if m.trunk != "builtin" else "built-in trunk"
    return (f"{source} ({config.profile}): {tr.steps} steps, {batch}, lr {tr.lr:g}, {trunk}; "
            f"device {device}, amp {tr.amp}; change any with --set KEY=VALUE")


def new_manifest(config: RunConfig, data: Any, threads: int, model: Any = None,
                 device: Any = "cpu", dist: Any = None) -> dict[str, Any]:
    """A new run's manifest. ``model``: the user's BranchedModel, if the run trains one
    (recorded as ``user_model``; None: the built-in model of ``config.model``). ``device``: the
    resolved training device (``train.device`` may say ``auto``); ``dist``: the
    :class:`~.distributed.DistInfo` of a data-parallel run (world size and backend).
    ``method_spec`` is what the method meant for this run (:mod:`~.methods`), which analysis/
    reads instead of deriving it from the name."""
    from .branched import describe

    groups = None if data.groups is None else [int(g) for g in data.groups]
    return {
        "status": "running", "method": config.method,
        "method_spec": method_spec(config.method).to_dict(), "seed": config.seed,
        "config": config.to_dict(), "dataset": dict(data.provenance),
        "task_names": data.task_names, "task_types": [t.type for t in data.tasks],
        "true_groups": groups, "main_metric": data.main_metric,
        **versions_and_revision(), "threads": threads, "trained_by": "train",
        "device": str(device), "defaults": config.defaults_from,
        "world_size": 1 if dist is None else dist.world,
        "backend": None if dist is None else dist.backend,
        "streamed": bool(getattr(data, "streamed", False)),
        "input_shape": list(data.input_shape), "n_outputs": [t.n_outputs for t in data.tasks],
        "user_model": None if model is None else describe(model),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "events": [], "error": None,
    }


def open_run(config: RunConfig, data: Any, model: Any, resume: bool, device: torch.device,
             info: DistInfo, held: contextlib.ExitStack,
             overwrite: bool = False) -> tuple[str | None, int]:
    """Rank 0: lock the run directory (until ``held`` closes), check it suits the call, write or
    reopen the manifest. Returns the status of the run found and the thread count to use."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    held.enter_context(RunLock(run_dir))
    if overwrite:
        delete_run(run_dir)
    status = prepare_run_dir(run_dir, resume)
    if status == "complete":
        return status, torch.get_num_threads()
    threads = _run_threads(config, run_dir, resume)
    if resume:  # we hold the lock: temp files here are torn writes of killed writers
        _check_resume_world(run_dir, info)
        store.remove_stale_temp_files(run_dir)
        _check_resume_device(run_dir, device)
        _check_resume_compile(run_dir, config)
        store.update_manifest(run_dir, status="running", error=None)
    else:
        store.write_manifest(run_dir, new_manifest(config, data, threads, model, device, info))
    return status, threads


def delete_run(run_dir: Path) -> None:
    """``overwrite=True``: delete the store of the run in ``run_dir`` (its lock is held). The
    manifest goes first, so an interrupted deletion leaves a directory that holds no run, never
    a run with missing files; files the store does not own stay."""
    paths = store.RunPaths(run_dir)
    for path in (paths.manifest, paths.history, paths.metrics, paths.checkpoint,
                 run_dir / "affinity.nc"):
        path.unlink(missing_ok=True)
    for folder in (paths.events_dir, paths.activations_dir, paths.history_dir):
        if folder.exists():
            shutil.rmtree(folder)
    store.remove_stale_temp_files(run_dir)


def _check_resume_world(run_dir: Path, info: DistInfo) -> None:
    recorded = int(store.read_manifest(run_dir).get("world_size", 1))
    if recorded != info.world and store.RunPaths(run_dir).checkpoint.exists():
        raise ValueError(
            f"{run_dir} was trained by {recorded} process(es) and this resume has {info.world}: "
            f"resume with the same number (torchrun --nproc_per_node={recorded}), so every rank "
            "reads the batches it read before")


def _check_resume_device(run_dir: Path, device: torch.device) -> None:
    recorded = store.read_manifest(run_dir).get("device")
    if recorded is not None and recorded != str(device):
        warnings.warn(f"{run_dir} started on {recorded} and resumes on {device}: the resumed "
                      "part's numbers can differ in the last digits from an uninterrupted run",
                      stacklevel=3)


def _check_resume_compile(run_dir: Path, config: RunConfig) -> None:
    recorded = store.read_manifest(run_dir).get("config", {}).get("train", {}).get("compile",
                                                                                  "none")
    if recorded != config.train.compile:
        warnings.warn(f"{run_dir} started with train.compile={recorded} and resumes with "
                      f"train.compile={config.train.compile}: the resumed part's numbers can "
                      "differ in the last digits from an uninterrupted run", stacklevel=3)


def _run_threads(config: RunConfig, run_dir: Path, resume: bool) -> int:
    """The run's intra-op thread count: the one recorded when it started (a resume), else
    ``train.threads``, else this process's. With MKL the summed gradients differ in the last
    digit between thread counts, so a resumed run must use the count its first part used."""
    recorded = store.read_manifest(run_dir).get("threads") if resume else None
    if recorded is not None:
        if config.train.threads and config.train.threads != recorded:
            warnings.warn(f"train.threads={config.train.threads} ignored: {run_dir} started with "
                          f"{recorded} threads, which its resume must use to give the same "
                          "numbers", stacklevel=3)
        return int(recorded)
    return int(config.train.threads or torch.get_num_threads())
