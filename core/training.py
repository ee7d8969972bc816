"""The training loop: one backward pass per step, gradient capture, grouping events, merges,
and the run store. ``selective-sharing train --help`` (or ``python -m selective_sharing.core.train
--help``) for the command line.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import store
from .branched import BranchedModel
from .capture import entity_grad_norms
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import RunConfig
from .data import StepBatchSampler, train_loader
from .devices import Precision, device_rng_state, resolve_device, set_device_rng_state
from .distributed import (
    DistInfo,
    agree,
    barrier,
    broadcast,
    current,
    failure_message,
    init_from_env,
    launched,
    peers,
    rank_device,
    sum_,
    terminate_raises,
)
from .grouping import EventResult
from .losses import entry_losses, task_codes
from .model import build_model
from .runinfo import finish_run, initial_assignment, new_manifest, write_activations
from .runlock import RunLock
from .scheduler import SharingScheduler, event_step


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names step and task."""


def event_steps(config: RunConfig) -> list[int]:
    """Steps (counted after the step) at which grouping events fire."""
    steps, k = [], 0
    while (s := event_step(config, k, config.train.steps)) is not None:
        steps.append(s)
        k += 1
    return steps


class Trainer:
    """The built-in loop over a :class:`BranchedModel` and a :class:`SharingScheduler`, with the
    harness around them (mini-batches, history, checkpoints). Use :func:`train`; this class
    exists so tests can poke at it.

    ``model`` is the user's BranchedModel (its trunk and template); by default the built-in one
    of ``config.model``. The model, the batches and the capture window live on
    ``config.train.device``. In-memory data (``MTLData``) is moved to the device once and
    indexed there; streamed data (``StreamedMTLData``) is read through a ``DataLoader`` with
    ``train.num_workers`` workers and a :class:`~.data.StepBatchSampler` whose position is the
    step count (saved in the checkpoint).

    In a data-parallel run (``torch.distributed`` initialized, e.g. by ``torchrun``), each rank
    takes its share of every global batch, the model runs in ``DistributedDataParallel``
    (rebuilt after every merge), each task's loss is divided by its count in the global batch,
    and only rank 0 writes the store.
    """

    def __init__(self, config: RunConfig, data: Any, callbacks: Sequence[Any] = (),
                 assignment: np.ndarray | None = None, recorder: Any = None,
                 model: BranchedModel | None = None, run_dir: Path | None = None):
        self.cfg, self.data, self.callbacks = config, data, list(callbacks)
        self.recorder = recorder
        self.paths = store.RunPaths(Path(config.out))
        self.dist = current()
        self.device = rank_device(resolve_device(config.train.device), self.dist)
        self.precision = Precision(config.train.amp, self.device)
        torch.manual_seed(config.seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(config.seed)
        tasks = data.tasks
        self.n_tasks = len(tasks)
        start = (initial_assignment(config.method, self.n_tasks) if assignment is None
                 else np.asarray(assignment, dtype=np.int64))
        if model is None:
            copies = self.n_tasks if config.method == "stl" else 1
            model = build_model(data.input_shape, tasks, config.model, start, copies,
                                seed=config.seed)
        else:
            _start_user_model(model, data, start, config.method)
        self.model = model.to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.train.lr,
                                    weight_decay=config.train.weight_decay)
        self.sharing = SharingScheduler(self.model, self.opt, config, run_dir=run_dir,
                                        total_steps=config.train.steps, resume=True,
                                        scaler=self.precision.scaler)
        self.net: Any = None  # the model in DistributedDataParallel, in a data-parallel run
        self._wrap()
        self.codes, self.n_classes = (t.to(self.device) for t in task_codes(tasks))
        self.streamed = bool(getattr(data, "streamed", False))
        self._batches: Any = None  # the streamed data's DataLoader iterator, made in fit()
        if self.streamed:
            self.n_train = len(data.train)
        else:
            self.x, self.y, self.m = (torch.as_tensor(a).to(self.device)
                                      for a in (data.x_train, data.y_train, data.m_train))
            self.n_train = int(self.x.shape[0])
        self._counts: torch.Tensor | None = None  # each task's entries in the global batch
        self._batch_rule = self.sampler()
        self.step = 0
        self.hist: dict[str, list] = {"step": [], "loss": [], "grad_norm": [], "lr": [],
                                      "assignment": []}
        self.counters = {"backward_passes": 0, "forward_passes": 0, "wall_time_s": 0.0}

    @property
    def assignment(self) -> np.ndarray:
        return self.sharing.assignment

    @property
    def n_events(self) -> int:
        return self.sharing.n_events

    # -- one step -----------------------------------------------------------------------
    def sampler(self, position: int = 0) -> StepBatchSampler:
        """The batches of steps ``position..train.steps`` (one rule for both data paths), this
        rank's share of them."""
        return StepBatchSampler(self.n_train, self.cfg.train.batch_size, self.cfg.seed,
                                self.cfg.train.steps, position, self.dist.rank, self.dist.world)

    def _wrap(self) -> None:
        """(Re)build the DistributedDataParallel wrapper: at the start and after every merge,
        which replaces estimator parameters (the old wrapper's hooks go with it)."""
        if not self.dist.active:
            return
        import gc

        from torch.nn.parallel import DistributedDataParallel

        self.net = None
        gc.collect()  # the old reducer removes its autograd hooks when it is destroyed
        ids = [self.device.index] if self.device.type == "cuda" else None
        # a rank's share of a batch may lack a task, whose estimator then takes no part in the
        # step, unless every sample is labelled for every task
        every = bool(np.all(self.data.m_train))
        self.net = DistributedDataParallel(_Entries(self.model), device_ids=ids,
                                           find_unused_parameters=not every)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.dist.active:  # each task's count in the global batch normalizes its loss
            idx = self._batch_rule.global_batch(self.step)
            m = self.data.m_train if self.streamed else None
            self._counts = (torch.as_tensor(m[idx].sum(0)).to(self.device) if self.streamed
                            else self.m[torch.as_tensor(idx).to(self.device)].sum(0))
        if not self.streamed:
            idx = self._batch_rule.global_batch(self.step)[self.dist.rank::self.dist.world]
            idx = torch.as_tensor(idx).to(self.device)
            return self.x[idx], self.y[idx], self.m[idx]
        if self._batches is None:  # starts at this step: a resumed run continues mid-epoch
            self._batches = iter(train_loader(self.data.train, self.sampler(self.step),
                                              self.cfg.train.num_workers, self.device))
        x, y, m = next(self._batches)
        return (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                m.to(self.device, non_blocking=True))

    def close(self) -> None:
        """Stop the DataLoader's workers."""
        self._batches = None

    def _step(self) -> EventResult | None:
        x, y, m = self._next_batch()
        b_idx, t_idx = m.nonzero(as_tuple=True)
        if self.recorder is not None:
            self.recorder(self, x, y[b_idx, t_idx], b_idx, t_idx)
        with self.precision.autocast():  # the forward pass; the loss in fp32, from fp32 targets
            forward = self.model.forward_entries if self.net is None else self.net
            pred = forward(x, b_idx, t_idx)
        losses = entry_losses(pred.float(), y[b_idx, t_idx], t_idx, self.codes, self.n_classes,
                              self.cfg.train.rank_mse_weight, counts=self._counts)
        total = losses.sum() * self.dist.world  # DDP averages the ranks' gradients
        if self.dist.active:  # the whole global batch's per-task losses, on every rank
            losses = sum_(losses.detach().clone(), self.dist)
        if not torch.isfinite(losses.sum()):
            bad = int(torch.nonzero(~torch.isfinite(losses))[0, 0])
            raise TrainingError(f"non-finite loss at step {self.step} for task "
                                f"{self.data.task_names[bad]!r} (loss={losses[bad].item()}); "
                                "lower train.lr or check the task's targets")
        self.opt.zero_grad(set_to_none=False)
        self.precision.backward(total)  # the scheduler's hook adds the signal into its window
        self.counters["backward_passes"] += 1
        self.counters["forward_passes"] += 1
        has = ((torch.bincount(t_idx, minlength=self.n_tasks) if self._counts is None
                else self._counts) > 0).cpu().numpy()
        loss_np = np.where(has, losses.detach().cpu().numpy(), np.nan)
        if self.precision.scaler is not None:
            self.precision.scaler.unscale_(self.opt)  # the history records true gradient norms
        norms = entity_grad_norms(self.model).cpu().numpy()[self.assignment]
        self.precision.step(self.opt)
        for key, val in (("step", self.step), ("loss", loss_np), ("grad_norm", norms),
                         ("lr", self.opt.param_groups[0]["lr"]),
                         ("assignment", self.assignment.copy())):
            self.hist[key].append(val)
        self.step += 1
        result = self.sharing.step(loss_np)
        if result is not None:
            self._wrap()
        return result

    # -- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sharing": self.sharing.state_dict(), "step": self.step, "hist": self.hist,
                "counters": self.counters, "torch_rng": torch.get_rng_state(),
                "device_rng": device_rng_state(self.device),
                "precision": self.precision.state_dict(),
                "sampler": self.sampler().state_dict(consumed=self.step)}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if "sharing" not in st:
            raise CheckpointError(f"{self.paths.checkpoint} was written by an earlier version "
                                  "of selective-sharing; train this run again without --resume")
        self.model.load_state_dict(st["model"])  # resizes the stacks to the merged count
        self.opt.load_state_dict(st["opt"])
        self.sharing.load_state_dict(st["sharing"])
        for key in ("step", "hist", "counters"):
            setattr(self, key, st[key])
        torch.set_rng_state(st["torch_rng"])
        set_device_rng_state(self.device, st.get("device_rng"))
        self.precision.load_state_dict(st.get("precision", {}))
        if "sampler" in st:  # refuses other data, batch size, seed or process count
            self.sampler().load_state_dict(st["sampler"])
        self._batches = None
        self._wrap()  # the stacks may have been resized to the merged count

    def save(self) -> None:
        if not self.dist.is_main:  # rank 0 writes the store and the checkpoint
            return
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
        bar = tqdm(total=self.cfg.train.steps, initial=self.step,
                   disable=None if progress else True,  # None: off when not a terminal
                   desc=f"{self.cfg.data.name}/{self.cfg.method}/seed{self.cfg.seed}",
                   unit="step", leave=False)
        with bar:
            try:
                self._fit(bar, start)
            finally:
                self.close()
        self.counters["wall_time_s"] = time.perf_counter() - start

    def _fit(self, bar: Any, start: float) -> None:
        while self.step < self.cfg.train.steps:
            before = self.sharing.n_events
            self._step()
            bar.update(1)
            if self.sharing.n_events != before:
                result = self.sharing.last_result
                self.counters["wall_time_s"] = time.perf_counter() - start
                self.save()
                for cb in self.callbacks:  # after the checkpoint: a callback may end it
                    getattr(cb, "on_event", lambda *a: None)(self, result)
                bar.set_postfix(groups=self.model.n_entities)


class _Entries(torch.nn.Module):
    """``forward`` = the model's ``forward_entries``: what DistributedDataParallel wraps."""

    def __init__(self, model: BranchedModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor) -> torch.Tensor:
        return self.model.forward_entries(x, b_idx, t_idx)


def _start_user_model(model: Any, data: Any, start: np.ndarray, method: str) -> None:
    """Check a user's BranchedModel against the data; put it in the method's starting partition
    (one estimator per task -> e.g. mtl_full's single one: the first member's weights)."""
    if not isinstance(model, BranchedModel):
        raise TypeError(f"invalid model={type(model).__name__}: train(config, model=...) takes "
                        "a selective_sharing.core.BranchedModel")
    if method == "stl":
        raise ValueError("method 'stl' trains one whole network per task and cannot use a "
                         "shared trunk: run method 'mtl' with your model, or train stl built-in")
    if model.n_tasks != data.n_tasks:
        raise ValueError(f"the model has {model.n_tasks} heads but the data has {data.n_tasks} "
                         "tasks: give BranchedModel one head per task (heads=data.tasks)")
    current = model.assignment.cpu().numpy()
    if np.array_equal(current, start):
        return
    if not np.array_equal(current, np.arange(data.n_tasks)):
        raise ValueError(f"the model's assignment {current.tolist()} is neither the method's "
                         f"starting partition {start.tolist()} nor one estimator per task: "
                         "build the BranchedModel with the default assignment")
    from .merge import merge_estimators

    merge_estimators(model, None, start, start, "first")


def train(config: RunConfig, *, data: Any = None, model: BranchedModel | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          callbacks: Sequence[Any] = ()) -> Path:
    """Train one run and write its store; return the run directory.

    Parameters
    ----------
    config : RunConfig
        Built with :func:`selective_sharing.core.config.make_config`; already validated.
    data : MTLData, optional
        Custom data (e.g. from ``selective_sharing.datasets.from_arrays``) instead of the
        registered dataset ``config.data.name``.
    model : BranchedModel, optional
        Your own trunk and estimator template (one head per task, one estimator each) instead of
        the built-in ``config.model``; trained by the same loop, with the same store, resume and
        metrics. Reload it afterwards with ``load_model(run_dir, model=...)``. Not for ``stl``.
    resume : bool
        Continue from ``config.out``'s checkpoint; gives the same events and metrics as an
        uninterrupted run, in a process with any thread count: the run's intra-op thread count
        is recorded in the manifest and used again.
    overwrite : bool
        Delete the run already in ``config.out`` (its manifest, events, history, metrics,
        activations and checkpoint; other files stay) and train it again. Without it, an
        existing run is an error that names both options. Not together with ``resume``.
    progress : bool
        A progress bar on stderr (off when stderr is not a terminal).
    callbacks : objects with an optional ``on_event(trainer, result)`` method.

    Notes
    -----
    Process state that training changes (torch's thread count and global RNG) is restored when
    the call returns, so runs in one process do not influence each other.

    Started by ``torchrun --nproc_per_node=N`` (or in processes of an initialized
    ``torch.distributed`` group), every process trains one share of each global batch in
    ``DistributedDataParallel`` and rank 0 alone writes the store (see
    :mod:`~selective_sharing.core.distributed`); the manifest records the world size, and a
    resume needs the same one.
    """
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True contradict each other: resume continues "
                         f"the run in {config.out}, overwrite deletes it; pass one of them")
    device = resolve_device(config.train.device)  # an absent device fails before anything
    joins = launched() and not current().active  # started by torchrun: join its process group
    if joins:
        info, device = init_from_env(device)
    else:
        info = current()
        device = rank_device(device, info)
    try:
        return _train(config, data, model, resume, progress, callbacks, device, info,
                      overwrite=overwrite)
    finally:
        if joins:
            torch.distributed.destroy_process_group()


def _train(config: RunConfig, data: Any, model: BranchedModel | None, resume: bool,
           progress: bool, callbacks: Sequence[Any], device: torch.device, info: DistInfo,
           overwrite: bool = False) -> Path:
    from .runinfo import describe_defaults, load_data

    data = load_data(config, data)
    config = _defaults_for(config, data)
    if progress and info.is_main:
        world = f" x {info.world} processes ({info.backend})" if info.active else ""
        print(f"{config.data.name}/{config.method}/seed{config.seed}: "
              f"{describe_defaults(config, device)}{world}", file=sys.stderr)
    run_dir = Path(config.out)
    threads_before = torch.get_num_threads()
    with contextlib.ExitStack() as held, torch.random.fork_rng(devices=[]):
        # rank 0 locks and opens the store; the others learn the outcome (or its error)
        status, threads = agree(info, lambda: _open_run(config, data, model, resume, device,
                                                        info, held, overwrite))
        if status == "complete":
            return run_dir  # --resume of a finished run: nothing to do
        peer_list = peers(info)
        try:
            torch.set_num_threads(threads)
            with terminate_raises(info):
                _fit_run(config, data, model, resume, progress, callbacks, run_dir, info)
        except BaseException as err:
            if info.is_main:
                message = (failure_message(err, info, peer_list) if info.active
                           else f"{type(err).__name__}: {err}")
                try:
                    store.update_manifest(run_dir, status="failed", error=message)
                except Exception as note:  # e.g. the disk is full: keep the original error on top
                    err.add_note(f"(could not mark {run_dir} as failed either: {note})")
            raise
        finally:
            torch.set_num_threads(threads_before)
    return run_dir


def _open_run(config: RunConfig, data: Any, model: BranchedModel | None, resume: bool,
              device: torch.device, info: DistInfo, held: contextlib.ExitStack,
              overwrite: bool = False) -> tuple[str | None, int]:
    """Rank 0: lock the run directory (until ``held`` closes), check it suits the call, write or
    reopen the manifest. Returns the status of the run found and the thread count to use."""
    from .runinfo import prepare_run_dir

    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    held.enter_context(RunLock(run_dir))
    if overwrite:
        _delete_run(run_dir)
    status = prepare_run_dir(run_dir, resume)
    if status == "complete":
        return status, torch.get_num_threads()
    threads = _run_threads(config, run_dir, resume)
    if resume:  # we hold the lock: temp files here are torn writes of killed writers
        _check_resume_world(run_dir, info)
        store.remove_stale_temp_files(run_dir)
        _check_resume_device(run_dir, device)
        store.update_manifest(run_dir, status="running", error=None)
    else:
        store.write_manifest(run_dir, new_manifest(config, data, threads, model, device, info))
    return status, threads


def _delete_run(run_dir: Path) -> None:
    """``overwrite=True``: delete the store of the run in ``run_dir`` (its lock is held). The
    manifest goes first, so an interrupted deletion leaves a directory that holds no run, never
    a run with missing files; files the store does not own stay."""
    paths = store.RunPaths(run_dir)
    for path in (paths.manifest, paths.history, paths.metrics, paths.checkpoint,
                 run_dir / "affinity.nc"):
        path.unlink(missing_ok=True)
    for folder in (paths.events_dir, paths.activations_dir):
        if folder.exists():
            shutil.rmtree(folder)
    store.remove_stale_temp_files(run_dir)


def _fit_run(config: RunConfig, data: Any, model: BranchedModel | None, resume: bool,
             progress: bool, callbacks: Sequence[Any], run_dir: Path, info: DistInfo) -> None:
    partition, phase = _baseline_partition(config, data, run_dir, progress, model)
    trainer = Trainer(config, data, callbacks, assignment=partition, model=model,
                      run_dir=run_dir)
    if resume and trainer.paths.checkpoint.exists():
        trainer.load_state_dict(load_checkpoint(trainer.paths.checkpoint))
    else:  # a new run, or one killed before its first checkpoint: train from step 0
        trainer.counters.update(phase)
    try:
        trainer.fit(progress and info.is_main)
        if info.is_main:  # rank 0 evaluates and writes; the others wait for it
            write_activations(trainer, "final")
            finish_run(trainer)
        barrier(info)
    finally:  # a user's model keeps no hook of this run
        trainer.sharing.close()


def _check_resume_world(run_dir: Path, info: DistInfo) -> None:
    recorded = int(store.read_manifest(run_dir).get("world_size", 1))
    if recorded != info.world and store.RunPaths(run_dir).checkpoint.exists():
        raise ValueError(
            f"{run_dir} was trained by {recorded} process(es) and this resume has {info.world}: "
            f"resume with the same number (torchrun --nproc_per_node={recorded}), so every rank "
            "reads the batches it read before")


def _defaults_for(config: RunConfig, data: Any) -> RunConfig:
    """The config with the defaults of the data's input kind, when ``make_config`` could not
    know it: a dataset without a registered profile built with the vector defaults whose data
    turn out to be images gets the image defaults, with the same overrides on top."""
    if config.defaults_from != "generic_vector" or data.input_kind != "image":
        return config
    from .config import make_config

    return make_config(config.data.name, config.method, config.seed, config.profile,
                       overrides=config.overrides, out=config.out, input_kind="image")


def _check_resume_device(run_dir: Path, device: torch.device) -> None:
    recorded = store.read_manifest(run_dir).get("device")
    if recorded is not None and recorded != str(device):
        import warnings

        warnings.warn(f"{run_dir} started on {recorded} and resumes on {device}: the resumed "
                      "part's numbers can differ in the last digits from an uninterrupted run",
                      stacklevel=3)


def _run_threads(config: RunConfig, run_dir: Path, resume: bool) -> int:
    """The run's intra-op thread count: the one recorded when it started (a resume), else
    ``train.threads``, else this process's. With MKL the summed gradients differ in the last
    digit between thread counts, so a resumed run must use the count its first part used."""
    recorded = store.read_manifest(run_dir).get("threads") if resume else None
    if recorded is not None:
        if config.train.threads and config.train.threads != recorded:
            import warnings

            warnings.warn(f"train.threads={config.train.threads} ignored: {run_dir} started with "
                          f"{recorded} threads, which its resume must use to give the same "
                          "numbers", stacklevel=3)
        return int(recorded)
    return int(config.train.threads or torch.get_num_threads())


def _baseline_partition(config: RunConfig, data: Any, run_dir: Path, progress: bool,
                        model: BranchedModel | None = None
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
    phase = Trainer(joint, data, assignment=np.arange(data.n_tasks), recorder=recorder,
                    model=None if model is None else copy.deepcopy(model))
    info = phase.dist
    phase.fit(progress and info.is_main)
    phase.sharing.close()
    # each rank recorded affinities on its share of the batches: rank 0's partition holds
    partition = broadcast(affinity_partition(config, recorder, data.n_tasks), info)
    ds = store.encode_affinity(task_names=data.task_names, affinity=recorder.affinity(),
                               partition=partition, method=config.method,
                               recorded_steps=recorder.recorded_steps, counters=phase.counters)
    if info.is_main:
        store.write_affinity(run_dir, ds)
    return partition, dict(phase.counters)


def main(argv: Sequence[str] | None = None) -> None:
    from .cli import main as cli_main

    cli_main(argv)
