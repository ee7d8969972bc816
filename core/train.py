"""The training loop: one backward pass per step, gradient capture, grouping events, merges,
and the run store. ``python -m selective_sharing.core.train --help`` for the command line.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import store
from .capture import GradientWindow, entity_grad_norms, signal_of
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig
from .grouping import grouping_event
from .losses import TYPE_CODES, task_losses
from .merge import merge_estimators
from .model import MTLNet
from .runlock import RunLock
from .runinfo import finish_run, initial_assignment, new_manifest, write_activations

SKETCH_SEED_OFFSET = 7919  # the sketch's seed is seed + this; stored with every event


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names step and task."""


def event_steps(config: RunConfig) -> list[int]:
    """Steps (counted after the step) at which grouping events fire."""
    if not config.is_selective:
        return []
    sh, total = config.sharing, config.train.steps
    steps = [sh.warmup_steps]
    while sh.regroup_every and steps[-1] + sh.regroup_every < total:
        steps.append(steps[-1] + sh.regroup_every)
    return steps[: sh.max_events] if sh.max_events else steps


class Trainer:
    """Holds one run's state. Use :func:`train`; this class exists so tests can poke at it."""

    def __init__(self, config: RunConfig, data: Any, callbacks: Sequence[Any] = (),
                 assignment: np.ndarray | None = None, recorder: Any = None):
        self.cfg, self.data, self.callbacks = config, data, list(callbacks)
        self.recorder = recorder
        self.paths = store.RunPaths(Path(config.out))
        torch.manual_seed(config.seed)
        tasks = data.tasks
        self.n_tasks = len(tasks)
        self.assignment = (initial_assignment(config.method, self.n_tasks) if assignment is None
                           else np.asarray(assignment, dtype=np.int64))
        copies = self.n_tasks if config.method == "stl" else 1
        self.model = MTLNet(data.input_shape, [t.n_outputs for t in tasks], config.model,
                            self.assignment, copies, seed=config.seed)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.train.lr,
                                    weight_decay=config.train.weight_decay)
        self.codes = torch.tensor([TYPE_CODES[t.type] for t in tasks])
        self.n_classes = torch.tensor([t.n_classes for t in tasks])
        self.x = torch.as_tensor(data.x_train)
        self.y = torch.as_tensor(data.y_train)
        self.m = torch.as_tensor(data.m_train)
        self.events = event_steps(config)
        self.step, self.n_events = 0, 0
        self.streak = np.zeros((self.n_tasks, self.n_tasks), dtype=np.int64)
        self.window: GradientWindow | None = None
        self.window_loss = np.zeros(self.n_tasks)
        self.hist: dict[str, list] = {"step": [], "loss": [], "grad_norm": [], "lr": [],
                                      "assignment": []}
        self.counters = {"backward_passes": 0, "forward_passes": 0, "wall_time_s": 0.0}
        self._open_window()

    # -- windows and events -------------------------------------------------------------
    def _open_window(self) -> None:
        upcoming = [s for s in self.events[self.n_events:] if s > self.step]
        if not upcoming or self.model.n_entities <= max(1, self.cfg.grouping.min_groups):
            self.window = None  # nothing left to decide: capture stops costing anything
            return
        sh = self.cfg.sharing
        sig = signal_of_shape(self.model, sh.signal)
        self.window = GradientWindow(self.model.n_entities, sig, upcoming[0] - self.step,
                                     sh.window_bins, sh.sketch_dim,
                                     self.cfg.seed + SKETCH_SEED_OFFSET, sh.sketch_kind)
        self.window_start = self.step
        self.window_loss = np.zeros(self.n_tasks)

    def _event(self) -> None:
        summed, bins = self.window.finish()
        before = self.model.count_parameters()[0]
        result = grouping_event(summed, self.assignment, self.streak, self.cfg.grouping)
        scores = np.array([self.window_loss[self.assignment == e].mean()
                           for e in range(self.model.n_entities)])
        merge_estimators(self.model, self.opt, result.parent, result.assignment_after,
                         self.cfg.sharing.merge, scores)
        ds = store.encode_event(
            result, index=self.n_events, step=self.step, window_start=self.window_start,
            bins=bins, sketch_seed=self.cfg.seed + SKETCH_SEED_OFFSET,
            sketch_kind=self.cfg.sharing.sketch_kind, task_names=self.data.task_names,
            n_params_before=before, n_params_after=self.model.count_parameters()[0],
            merge_mode=self.cfg.sharing.merge, grouping_config=_asdict(self.cfg.grouping))
        path = store.write_event(self.paths.run_dir, ds)
        self.assignment = result.assignment_after.astype(np.int64)
        self.streak = result.streak_after
        self.n_events += 1
        manifest = store.read_manifest(self.paths.run_dir)
        names = sorted(set(manifest.get("events", [])) | {path.name})
        store.update_manifest(self.paths.run_dir, events=names)
        self._open_window()
        self.save()
        for cb in self.callbacks:  # after the checkpoint: a callback may end the process
            getattr(cb, "on_event", lambda *a: None)(self, result)

    # -- one step -----------------------------------------------------------------------
    def _batch(self) -> torch.Tensor:
        n, bs = self.x.shape[0], self.cfg.train.batch_size
        if bs is None or bs >= n:
            return torch.arange(n)
        per_epoch = n // bs
        epoch, k = divmod(self.step, per_epoch)
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        return torch.as_tensor(order[k * bs:(k + 1) * bs])

    def _step(self) -> None:
        idx = self._batch()
        x, y, m = self.x[idx], self.y[idx], self.m[idx]
        b_idx, t_idx = m.nonzero(as_tuple=True)
        if self.recorder is not None:
            self.recorder(self, x, y[b_idx, t_idx], b_idx, t_idx)
        pred = self.model.forward_entries(x, b_idx, t_idx)
        losses = task_losses(pred, y[b_idx, t_idx], t_idx, self.codes, self.n_classes,
                             self.cfg.train.rank_mse_weight)
        total = losses.sum()
        if not torch.isfinite(total):
            bad = int(torch.nonzero(~torch.isfinite(losses))[0, 0])
            raise TrainingError(f"non-finite loss at step {self.step} for task "
                                f"{self.data.task_names[bad]!r} (loss={losses[bad].item()}); "
                                "lower train.lr or check the task's targets")
        self.opt.zero_grad(set_to_none=False)
        total.backward()
        self.counters["backward_passes"] += 1
        self.counters["forward_passes"] += 1
        if self.window is not None:
            self.window.add(signal_of(self.model, self.cfg.sharing.signal))
        has = torch.bincount(t_idx, minlength=self.n_tasks) > 0
        loss_np = np.where(has.numpy(), losses.detach().numpy(), np.nan)
        self.window_loss += np.nan_to_num(loss_np)
        norms = entity_grad_norms(self.model).numpy()[self.assignment]
        self.opt.step()
        for key, val in (("step", self.step), ("loss", loss_np), ("grad_norm", norms),
                         ("lr", self.opt.param_groups[0]["lr"]),
                         ("assignment", self.assignment.copy())):
            self.hist[key].append(val)
        self.step += 1

    # -- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "assignment": self.assignment, "step": self.step, "n_events": self.n_events,
                "streak": self.streak, "window_loss": self.window_loss, "hist": self.hist,
                "counters": self.counters, "torch_rng": torch.get_rng_state(),
                "window": self.window.state_dict() if self.window else None,
                "window_start": getattr(self, "window_start", 0)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.assignment = np.asarray(st["assignment"], dtype=np.int64)
        n_e = int(self.assignment.max()) + 1
        for p in self.model.estimator_params():  # shapes after merges
            p.data = torch.empty(n_e, *p.shape[1:])
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        for key in ("step", "n_events", "streak", "window_loss", "hist", "counters"):
            setattr(self, key, st[key])
        torch.set_rng_state(st["torch_rng"])
        self._open_window()
        if st["window"] is not None:
            self.window.load_state_dict(st["window"])
            self.window_start = st["window_start"]

    def save(self) -> None:
        self.write_history()
        save_checkpoint(self.paths.checkpoint, self.state_dict())

    def write_history(self) -> None:
        if not self.hist["step"]:
            return
        h = self.hist
        ds = store.encode_history(
            step=np.asarray(h["step"], dtype=np.int64),
            loss=np.asarray(h["loss"], dtype=np.float32),
            grad_norm=np.asarray(h["grad_norm"], dtype=np.float32),
            lr=np.asarray(h["lr"], dtype=np.float64),
            assignment=np.asarray(h["assignment"], dtype=np.int64),
            task_names=self.data.task_names)
        store.write_history(self.paths.run_dir, ds)

    # -- the run ------------------------------------------------------------------------
    def fit(self, progress: bool = True) -> None:
        start = time.perf_counter() - self.counters["wall_time_s"]
        bar = tqdm(total=self.cfg.train.steps, initial=self.step, disable=not progress,
                   desc=f"{self.cfg.data.name}/{self.cfg.method}/seed{self.cfg.seed}",
                   unit="step", leave=False)
        with bar:
            while self.step < self.cfg.train.steps:
                self._step()
                bar.update(1)
                if self.window is not None and self.step in self.events:
                    self.counters["wall_time_s"] = time.perf_counter() - start
                    self._event()
                    bar.set_postfix(groups=self.model.n_entities)
        self.counters["wall_time_s"] = time.perf_counter() - start


def signal_of_shape(model: MTLNet, signal: str) -> tuple[int, int]:
    if signal == "first_layer":
        return tuple(model.estimators[0].weight.shape[1:])
    return (1, sum(p[0].numel() for p in model.estimator_params()))


def _asdict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(obj)


def train(config: RunConfig, *, data: Any = None, resume: bool = False, progress: bool = True,
          callbacks: Sequence[Any] = ()) -> Path:
    """Train one run and write its store; return the run directory.

    Parameters
    ----------
    config : RunConfig
        Built with :func:`selective_sharing.core.config.make_config`; already validated.
    data : MTLData, optional
        Custom data (e.g. from ``selective_sharing.datasets.from_arrays``) instead of the
        registered dataset ``config.data.name``.
    resume : bool
        Continue from ``config.out``'s checkpoint; gives the same events and metrics as an
        uninterrupted run.
    callbacks : objects with an optional ``on_event(trainer, result)`` method.
    """
    from .runinfo import load_data, prepare_run_dir

    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    data = load_data(config, data)
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        if prepare_run_dir(run_dir, resume) == "complete":
            return run_dir  # --resume of a finished run: nothing to do
        if resume:  # we hold the lock: temp files here are torn writes of killed writers
            store.remove_stale_temp_files(run_dir)
            store.update_manifest(run_dir, status="running", error=None)
        else:
            store.write_manifest(run_dir, new_manifest(config, data))
        try:
            partition, phase = _baseline_partition(config, data, run_dir, progress)
            trainer = Trainer(config, data, callbacks, assignment=partition)
            if resume and trainer.paths.checkpoint.exists():
                trainer.load_state_dict(load_checkpoint(trainer.paths.checkpoint))
            else:  # a new run, or one killed before its first checkpoint: train from step 0
                trainer.counters.update(phase)
            trainer.fit(progress)
            write_activations(trainer, "final")
            finish_run(trainer)
        except BaseException as err:
            try:
                store.update_manifest(run_dir, status="failed",
                                      error=f"{type(err).__name__}: {err}")
            except Exception as note:  # e.g. the disk is full: keep the original error on top
                err.add_note(f"(could not mark {run_dir} as failed either: {note})")
            raise
    return run_dir


def _baseline_partition(config: RunConfig, data: Any, run_dir: Path, progress: bool
                        ) -> tuple[np.ndarray | None, dict[str, float]]:
    """The fixed partition of a grouping baseline (None for other methods) and the cost of
    deciding it. Affinity baselines first train jointly while recording affinities; the
    result goes to ``affinity.nc`` so a resumed run does not repeat that phase."""
    from .baselines import AffinityRecorder, affinity_partition, fixed_partition

    counters = {"backward_passes": 0, "forward_passes": 0, "wall_time_s": 0.0}
    if config.method not in ("cosine_groups", "tag"):
        return fixed_partition(config, data), counters
    if (run_dir / "affinity.nc").exists():
        ds = store.read_affinity(run_dir)
        return ds["partition"].values, {k: ds.attrs[f"phase_{k}"] for k in counters}
    steps = config.baseline.affinity_steps or config.train.steps
    joint = replace(config, train=replace(config.train, steps=steps))
    recorder = AffinityRecorder(config.method, config.baseline.affinity_every, data.n_tasks)
    phase = Trainer(joint, data, assignment=np.arange(data.n_tasks), recorder=recorder)
    phase.fit(progress)
    partition = affinity_partition(config, recorder, data.n_tasks)
    ds = store.encode_affinity(task_names=data.task_names, affinity=recorder.affinity(),
                               partition=partition, method=config.method,
                               recorded_steps=recorder.recorded_steps, counters=phase.counters)
    store.write_affinity(run_dir, ds)
    return partition, dict(phase.counters)


def main(argv: Sequence[str] | None = None) -> None:
    from .cli import main as cli_main

    cli_main(argv)


class _CallableModule(types.ModuleType):
    """``selective_sharing.core.train`` is both this module (for ``python -m``) and the function:
    importing the submodule sets the package attribute ``train`` to the module, so the module
    forwards calls to :func:`train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    main()
