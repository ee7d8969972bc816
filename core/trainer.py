"""The built-in training loop: one backward pass per step, gradient capture, grouping events,
merges, the history and checkpoints (:class:`Trainer`). :func:`~.training.train` runs it for
one run; this module holds the loop alone.

The loss and gradient-norm functions are looked up in this module's namespace at every step
(``entry_losses``, ``entity_grad_norms``): the fault-injection tests replace them here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import store
from .branched import BranchedModel
from .capture import entity_grad_norms
from .checkpoint import CheckpointError, SnapshotBuffers, save_checkpoint
from .config import RunConfig
from .data import StepBatchSampler, train_loader
from .devices import (
    Precision,
    compile_trunk,
    device_rng_state,
    resolve_device,
    set_device_rng_state,
)
from .distributed import current, rank_device, sum_
from .grouping import EventResult
from .losses import entry_losses, task_codes
from .methods import MethodSpec, method_spec
from .model import build_model
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
    harness around them (mini-batches, history, checkpoints). Use :func:`~.training.train`;
    this class exists so tests can poke at it.

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
        spec = method_spec(config.method)
        start = (spec.initial_assignment(self.n_tasks) if assignment is None
                 else np.asarray(assignment, dtype=np.int64))
        if model is None:
            model = build_model(data.input_shape, tasks, config.model, start,
                                spec.trunk_copies(self.n_tasks), seed=config.seed)
        else:
            _start_user_model(model, data, start, spec)
        self.model = model.to(self.device)
        compile_trunk(self.model, config.train.compile, self.device)
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
        #: the history of the steps not yet in a part on disk (:meth:`save` appends parts)
        self.hist: dict[str, list] = _empty_history()
        self.counters = {"backward_passes": 0, "forward_passes": 0, "wall_time_s": 0.0}
        #: steps of the learning-rate warm-up after a merge still to come (``train.merge_warmup``)
        self.warmup_left = 0
        self._snapshots = SnapshotBuffers()  # the host copy of the state each save writes

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
        """Stop the DataLoader's workers; let go of the host copy kept for the next save."""
        self._batches = None
        self._snapshots.clear()

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
        if self.cfg.train.merge_warmup:
            self._set_lr()
        self.precision.step(self.opt)
        for key, val in (("step", self.step), ("loss", loss_np), ("grad_norm", norms),
                         ("lr", self.opt.param_groups[0]["lr"]),
                         ("assignment", self.assignment.copy())):
            self.hist[key].append(val)
        self.step += 1
        result = self.sharing.step(loss_np)
        if result is not None and self.sharing.parameters_replaced:
            self._wrap()
            self.warmup_left = self.cfg.train.merge_warmup
        return result

    def _set_lr(self) -> None:
        """``train.merge_warmup``: this step's learning rate, ``lr * k / (K + 1)`` on the k-th
        of the K steps after a merge, ``lr`` otherwise (every parameter group)."""
        k_total, lr = self.cfg.train.merge_warmup, self.cfg.train.lr
        if self.warmup_left > 0:
            lr *= (k_total - self.warmup_left + 1) / (k_total + 1)
            self.warmup_left -= 1
        for group in self.opt.param_groups:
            group["lr"] = lr

    # -- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The live state (tensors shared with the model): :func:`~.checkpoint.snapshot` it
        before the next step if it is to be written later."""
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sharing": self.sharing.state_dict(flush=False), "step": self.step,
                "hist": {k: list(v) for k, v in self.hist.items()},
                "counters": self.counters, "torch_rng": torch.get_rng_state(),
                "device_rng": device_rng_state(self.device),
                "precision": self.precision.state_dict(),
                "sampler": self.sampler().state_dict(consumed=self.step),
                "warmup_left": self.warmup_left}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if "sharing" not in st:
            raise CheckpointError(f"{self.paths.checkpoint} was written by an earlier version "
                                  "of selective-sharing; train this run again without --resume")
        self.model.load_state_dict(st["model"])  # resizes the stacks to the merged count
        self.opt.load_state_dict(st["opt"])
        self.sharing.load_state_dict(st["sharing"])
        for key in ("step", "hist", "counters"):
            setattr(self, key, st[key])
        self.warmup_left = int(st.get("warmup_left", 0))
        if self.dist.is_main:  # history written after this checkpoint is written again
            first = self.step - len(self.hist["step"])  # the checkpoint's own steps start here
            store.trim_history(self.paths.run_dir, from_step=first)
        torch.set_rng_state(st["torch_rng"])
        set_device_rng_state(self.device, st.get("device_rng"))
        self.precision.load_state_dict(st.get("precision", {}))
        if "sampler" in st:  # refuses other data, batch size, seed or process count
            self.sampler().load_state_dict(st["sampler"])
        self._batches = None
        self._wrap()  # the stacks may have been resized to the merged count

    def save(self) -> None:
        """Queue the steps since the previous save and a checkpoint on the store's background
        writer, after the event just decided: the training thread pays for a copy of the state,
        not for the writes. The history is appended: the previous save's ``history.nc`` is
        renamed to a part and the new one holds these steps alone (see
        :func:`~.store.shelve_history`)."""
        if not self.dist.is_main:  # rank 0 writes the store and the checkpoint
            return
        part = self.hist
        self.hist = _empty_history()
        # its history: the steps after this part (none); host memory reused between saves
        state = self._snapshots.take(self.state_dict())
        self.sharing.writer.submit(self._write_saved, part, state)

    def _write_saved(self, part: dict[str, list], state: dict[str, Any]) -> None:
        """The writer thread's part of :meth:`save`: the history, then the checkpoint."""
        if part["step"]:
            store.shelve_history(self.paths.run_dir)
            store.write_history(self.paths.run_dir, self._history_dataset(part))
        save_checkpoint(self.paths.checkpoint, state)
        self._snapshots.give_back(state)  # written: its memory takes the next save's copy

    def flush(self) -> None:
        """Wait until every queued store write and checkpoint is on disk."""
        self.sharing.flush()

    def write_history(self) -> None:
        """Write the whole history as ``history.nc`` now: the parts on disk and the steps after
        them (after the writer's queue)."""
        self.flush()
        tail = self._history_dataset(self.hist) if self.hist["step"] else None
        store.join_history(self.paths.run_dir, tail)
        self.hist = _empty_history()  # every step is in history.nc: a checkpoint now holds none

    def _history_dataset(self, h: dict[str, list]) -> Any:
        return store.encode_history(
            step=np.asarray(h["step"], dtype=np.int64),
            loss=np.asarray(h["loss"], dtype=np.float32),
            grad_norm=np.asarray(h["grad_norm"], dtype=np.float32),
            lr=np.asarray(h["lr"], dtype=np.float64),
            assignment=np.asarray(h["assignment"], dtype=np.int64),
            task_names=self.data.task_names)

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
                self.counters["wall_time_s"] = time.perf_counter() - start
                self.save()
                if self.callbacks:  # callbacks see the event and its checkpoint on disk, and
                    self.flush()  # the event's complete record (k-means filled on the writer)
                result = self.sharing.last_result
                for cb in self.callbacks:  # after the checkpoint: a callback may end it
                    getattr(cb, "on_event", lambda *a: None)(self, result)
                bar.set_postfix(groups=self.model.n_entities)


def _empty_history() -> dict[str, list]:
    return {"step": [], "loss": [], "grad_norm": [], "lr": [], "assignment": []}


class _Entries(torch.nn.Module):
    """``forward`` = the model's ``forward_entries``: what DistributedDataParallel wraps."""

    def __init__(self, model: BranchedModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor) -> torch.Tensor:
        return self.model.forward_entries(x, b_idx, t_idx)


def _start_user_model(model: Any, data: Any, start: np.ndarray, spec: MethodSpec) -> None:
    """Check a user's BranchedModel against the data; put it in the method's starting partition
    (one estimator per task -> e.g. mtl_full's single one: the first member's weights)."""
    if not isinstance(model, BranchedModel):
        raise TypeError(f"invalid model={type(model).__name__}: train(config, model=...) takes "
                        "a selective_sharing.core.BranchedModel")
    if spec.trunks == "per_task":
        raise ValueError(f"method {spec.name!r} trains one whole network per task and cannot "
                         "use a shared trunk: run method 'mtl' with your model, or train "
                         f"{spec.name} built-in")
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

