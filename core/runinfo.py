"""Run bookkeeping around the training loop: data loading, the manifest, evaluation, the
activation snapshot and the final metrics. Everything is written through :mod:`core.store`.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import store
from .checkpoint import save_checkpoint
from .config import RunConfig
from .metrics import metric_units, task_metrics

_VERSIONED = ("selective-sharing", "torch", "numpy", "scipy", "scikit-learn", "xarray",
              "netCDF4")


class RunDirError(RuntimeError):
    """The run directory is in a state that this call cannot continue from."""


def initial_assignment(method: str, n_tasks: int) -> np.ndarray:
    """Entity of each task at the start: one shared estimator for ``mtl_full``, else one each."""
    if method == "mtl_full":
        return np.zeros(n_tasks, dtype=np.int64)
    return np.arange(n_tasks, dtype=np.int64)


def load_data(config: RunConfig, data: Any) -> Any:
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
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
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
    """``{"versions": package versions, "git_revision": ...}`` for a manifest."""
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
    :class:`~.distributed.DistInfo` of a data-parallel run (world size and backend)."""
    from .branched import describe

    groups = None if data.groups is None else [int(g) for g in data.groups]
    return {
        "status": "running", "method": config.method, "seed": config.seed,
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


@torch.no_grad()
def predict_all(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    """Every task's output on every sample, (N, n_tasks, O), in eval mode, ``batch`` at a time.
    The one prediction path: the stored test metrics and :func:`~.inference.predict` use it."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = [model(torch.as_tensor(x[s:s + batch]).to(device)).cpu().numpy()
               for s in range(0, x.shape[0], batch)]
    finally:
        model.train(was_training)
    return np.concatenate(out)


def entry_metrics(pred: np.ndarray, data: Any) -> dict[str, np.ndarray]:
    """Test metrics per task from ``predict_all``'s (N, n_tasks, O) on ``data``'s test split."""
    b_idx, t_idx = np.nonzero(data.m_test)
    scale = np.asarray(data.extras.get("task_target_scale",
                                       data.extras.get("target_scale", 1.0)), dtype=float)
    return task_metrics(pred[b_idx, t_idx], data.y_test[b_idx, t_idx], t_idx,
                        [t.type for t in data.tasks], [t.n_classes for t in data.tasks],
                        target_scale=scale)


def evaluate(trainer: Any) -> dict[str, np.ndarray]:
    data, batch = trainer.data, trainer.cfg.train.eval_batch_size
    if getattr(data, "streamed", False):
        from .data import predict_items

        pred = predict_items(trainer.model, data.test, batch, trainer.cfg.train.num_workers)
    else:
        pred = predict_all(trainer.model, data.x_test, batch)
    return entry_metrics(pred, data)


def test_inputs(data: Any, index: np.ndarray) -> np.ndarray:
    """Inputs of test samples ``index``: rows of ``x_test``, or items read from a streamed split."""
    if getattr(data, "streamed", False):
        return data.inputs("test", index)
    return data.x_test[index]


def probe_index(data: Any, size: int) -> np.ndarray:
    """The fixed probe set: ``extras["probe_index"]`` if the dataset gives one, else test
    samples taken round-robin over each sample's first labelled task, so that "one dataset per
    task" data (each sample labelled for one task) gets probes of every task, and multi-output
    data gets simply the first ``size`` test samples."""
    if "probe_index" in data.extras:
        return np.asarray(data.extras["probe_index"], dtype=np.int64)
    first = np.argmax(data.m_test, axis=1)
    rank = np.zeros_like(first)
    for t in np.unique(first):
        sel = np.flatnonzero(first == t)
        rank[sel] = np.arange(sel.size)
    order = np.lexsort((np.arange(first.size), first, rank))
    return np.sort(order[:size]).astype(np.int64)


def saliency(model: Any, x: torch.Tensor, n_tasks: int) -> np.ndarray:
    """Input-gradient saliency |d output_t / d x|, max over channels: (task, probe, H, W)."""
    maps = []
    for t in range(n_tasks):
        xi = x.clone().requires_grad_(True)
        b_idx = torch.arange(x.shape[0], device=x.device)
        out = model.forward_entries(xi, b_idx, torch.full_like(b_idx, t))
        (grad,) = torch.autograd.grad(out.max(dim=1).values.sum(), xi)
        maps.append(grad.abs().amax(dim=1))
    return torch.stack(maps).cpu().numpy().astype(np.float32)


def write_activations(trainer: Any, name: str) -> None:
    """Snapshot of the shared representation (and estimator outputs, saliency) on the probes."""
    data, model = trainer.data, trainer.model
    idx = probe_index(data, trainer.cfg.probe_size)
    x = torch.as_tensor(test_inputs(data, idx)).to(trainer.device)
    with torch.no_grad():
        rep = model.representation(x)
        est = model.entity_outputs(x)
    image = data.input_kind == "image"
    obj = data.extras.get("object_masks_test")
    ds = store.encode_activations(
        name=name, step=trainer.step, task_names=data.task_names, probe_index=idx,
        representation=rep.reshape(rep.shape[0], -1).cpu().numpy().astype(np.float32),
        labels=data.y_test[idx].astype(np.float32), label_mask=data.m_test[idx].astype(bool),
        assignment=trainer.assignment, estimator_output=est.cpu().numpy().astype(np.float32),
        saliency=saliency(model, x, trainer.n_tasks) if image else None,
        region_masks=data.extras.get("region_masks") if image else None,
        task_region=data.extras.get("task_region") if image else None,
        object_masks=None if obj is None or not image else np.asarray(obj)[idx].astype(bool),
        method=trainer.cfg.method)
    store.write_activations(trainer.paths.run_dir, ds)


def adjusted_rand(groups: Any, assignment: np.ndarray) -> float | None:
    if groups is None:
        return None
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(groups), assignment))


def finish_run(trainer: Any) -> None:
    data = trainer.data
    n_params, n_est = trainer.model.count_parameters()
    metrics = evaluate(trainer)  # only the metrics that apply to the run's task types
    if data.main_metric not in metrics:  # a main metric no task type has: NaN, as it was
        metrics[data.main_metric] = np.full(len(data.task_names), np.nan)
    ds = store.encode_metrics(
        task_names=data.task_names, task_metrics=metrics, metric_units=metric_units(metrics),
        method=trainer.cfg.method, seed=trainer.cfg.seed,
        dataset=str(data.provenance.get("name", data.name)),
        main_metric=data.main_metric, n_parameters=n_params, n_parameters_estimators=n_est,
        n_groups=int(trainer.assignment.max()) + 1, assignment=trainer.assignment,
        wall_time_s=float(trainer.counters["wall_time_s"]),
        backward_passes=int(trainer.counters["backward_passes"]),
        forward_passes=int(trainer.counters["forward_passes"]), steps=trainer.step,
        adjusted_rand_index=adjusted_rand(data.groups, trainer.assignment),
        variant=str(data.provenance.get("variant", "real")))
    store.write_metrics(trainer.paths.run_dir, ds)
    trainer.write_history()
    save_checkpoint(trainer.paths.checkpoint, trainer.state_dict())
    store.update_manifest(trainer.paths.run_dir, status="complete")
