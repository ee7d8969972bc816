"""``SharingScheduler``: Selective Sharing inside any training loop, stepped like an LR scheduler.

    loss = task_losses(model(x), y, mask, model.tasks).sum()
    loss.backward(); opt.step(); opt.zero_grad()
    sharing.step()                 # decides and merges at event steps

Capture is a gradient hook on the signal parameter (``Tensor.register_hook``): during every
backward pass the parameter's incoming gradient is added in place into the window, on the
training device. The hook sees each backward's own contribution, so several backward passes
before one optimizer step (gradient accumulation) add up to exactly the gradient that step
applied, and count as one step. At an event the window goes to the host once, the pure
:func:`~.grouping.grouping_event` decides, the merge maps estimators and optimizer state, and
the event is written through :mod:`.store` exactly as the built-in trainer writes it, so
``analysis.replay`` / ``explain`` cannot tell a user loop from the harness.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import store
from .capture import GradientWindow
from .config import RunConfig, make_config
from .distributed import average_, broadcast, current
from .grouping import DECISION_RULE_VERSION, EventResult, complete_record, grouping_event
from .grouping.clustering import single_threaded
from .merge import apply_merge_map, merge_estimators, replaces_parameters

if TYPE_CHECKING:
    from typing_extensions import Self

SKETCH_SEED_OFFSET = 7919  # the sketch's seed is seed + this; stored with every event


def resolve_config(config: RunConfig | Mapping[str, Any] | None) -> RunConfig:
    """A RunConfig from ``None`` (defaults), a RunConfig, or a mapping of overrides such as
    ``{"method": "ss_similarity", "warmup_steps": 100, "distance": "cosine", "seed": 1}``."""
    if isinstance(config, RunConfig):
        return config
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise TypeError(f"invalid config={config!r}: pass a RunConfig (make_config(...)), a dict "
                        "of overrides, or None for the defaults")
    over = dict(config)
    method, seed = over.pop("method", "ss_similarity"), over.pop("seed", 0)
    return make_config("custom", method, seed, overrides=over)


def event_step(config: RunConfig, k: int, total_steps: int | None) -> int | None:
    """The step (counted after the step) of the ``k``-th grouping event, or None if there is none:
    after ``warmup_steps``, then every ``regroup_every``, at most ``max_events``, before
    ``total_steps`` when it is known."""
    sh = config.sharing
    if not config.is_selective or (sh.max_events and k >= sh.max_events):
        return None
    if k > 0 and sh.regroup_every == 0:
        return None
    step = sh.warmup_steps + k * sh.regroup_every
    if k > 0 and total_steps is not None and step >= total_steps:
        return None
    return step


class SharingScheduler:
    """Gradient capture, grouping events and merges for a :class:`~.branched.BranchedModel`.

    Parameters
    ----------
    model : BranchedModel
    optimizer : torch.optim.Optimizer
        Any optimizer with per-parameter state (Adam, AdamW, SGD with momentum...): a merge maps
        that state with the weights.
    config : RunConfig, dict or None
        The ``sharing`` (capture, event schedule, merge) and ``grouping`` (decision rule)
        sections and the seed are used; a dict holds overrides (see :func:`resolve_config`).
    run_dir : path, optional
        Write every event to this run store (``manifest.json`` + ``events/``) so
        ``selective_sharing.analysis`` can load, replay and explain it. A new directory is
        created and locked until :meth:`close`.
    total_steps : int, optional
        Training length, if known: no event is scheduled at or after it.
    resume : bool
        ``run_dir`` already holds this run: continue it (then call :meth:`load_state_dict`
        with the state saved beside your checkpoint). Without it, a ``run_dir`` that holds
        events is refused, so no run is overwritten or mixed with another.
    scaler : torch.amp.GradScaler, optional
        The GradScaler of an fp16 loop. Captured gradients are then divided by the scale their
        backward used, and the capture of a step the scaler skipped (non-finite gradients) is
        dropped: the window holds what an fp32 run would see. Call :meth:`step` after
        ``scaler.update()``. (bf16 autocast needs no scaler: gradients are unscaled.)

    The window lives on the device of the signal parameter; the host sees it once per event.

    In a data-parallel loop (``torch.distributed`` initialized, the model in
    ``DistributedDataParallel``), give every rank a scheduler: each captures its local gradient;
    at an event the windows are averaged across ranks once, rank 0 decides and broadcasts the
    result, and every rank applies the same merge. Only rank 0 writes ``run_dir``. A merge
    replaces estimator parameters, so wrap the model in a new ``DistributedDataParallel`` after
    every step whose event did (``parameters_replaced``); an event that merged nothing keeps
    the parameters and the wrapper.

    Attributes
    ----------
    step_count : int
        Optimizer steps taken (calls to :meth:`step`).
    n_events : int
        Grouping events so far.
    last_result : EventResult or None
        The decision of the latest event (None before the first). Its pooled k-means record
        (``kmeans_k``, ``kmeans_labels``, ``membership``; not part of the decision unless the
        strategy is ``kmeans``) is computed on the background writer: it is None in the result
        that :meth:`step` returns, and filled in ``last_result`` after :meth:`flush` (on rank 0
        of a data-parallel run).
    assignment : ndarray (n_tasks,)
        Current entity of each task.
    parameters_replaced : bool
        Whether the latest event replaced estimator parameters (it merged entities); False
        before the first event and after an event that merged nothing.
    """

    def __init__(self, model: Any, optimizer: torch.optim.Optimizer,
                 config: RunConfig | Mapping[str, Any] | None = None,
                 run_dir: str | Path | None = None, *, total_steps: int | None = None,
                 resume: bool = False, scaler: Any = None):
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self._scale: float | None = None  # the loss scale the next backward uses (fp16)
        self.config = resolve_config(config)
        self.total_steps = total_steps
        self.dist = current()
        # only rank 0 writes the run store
        self.run_dir = None if run_dir is None or not self.dist.is_main else Path(run_dir)
        self.step_count, self.n_events = 0, 0
        self.assignment = model.assignment.detach().cpu().numpy().astype(np.int64)
        n_tasks = self.assignment.size
        self.streak = np.zeros((n_tasks, n_tasks), dtype=np.int64)
        self.window_loss = np.zeros(n_tasks)
        self.window: GradientWindow | None = None
        self.window_start = 0
        self._losses_seen = False
        self.last_result: EventResult | None = None
        #: whether the last event replaced estimator parameters (a merge): a
        #: DistributedDataParallel wrapper must then be built anew around the model
        self.parameters_replaced = False
        #: the merge the latest step() applied: (M, assignment after), for apply_merge
        self._merge: tuple[torch.Tensor, np.ndarray] | None = None
        self._lock = None
        #: the store's writes (events; the built-in trainer's history and checkpoints) run here,
        #: off the training step, in submission order (see :class:`~.store.BackgroundWriter`)
        self.writer = store.BackgroundWriter()
        if self.run_dir is not None:
            store.warm_up()  # the first write's imports, here and not during the first event
            self._attach_run(resume)
        with single_threaded():  # the decision's one-time scan of the loaded BLAS libraries
            pass
        if self._scaled:
            self._scale = float(scaler.get_scale())
        self._hooks = self._register_hooks()
        self._open_window()

    # -- capture ---------------------------------------------------------------------------
    @property
    def _scaled(self) -> bool:
        return self.scaler is not None and self.scaler.is_enabled()

    def _register_hooks(self) -> list[Any]:
        if self.config.sharing.signal == "first_layer":
            def capture(grad: torch.Tensor) -> None:
                if self.window is not None:
                    self.window.accumulate(grad.detach())
            return [self.model.signal_parameter().register_hook(capture)]
        hooks, start = [], 0
        for p in self.model.estimator_params():
            def capture_part(grad: torch.Tensor, start: int = start) -> None:
                if self.window is not None:
                    self.window.accumulate_columns(grad.detach(), start)
            hooks.append(p.register_hook(capture_part))
            start += p[0].numel()
        return hooks

    def _signal_shape(self) -> tuple[int, int]:
        if self.config.sharing.signal == "first_layer":
            shape = self.model.signal_parameter().shape[1:]
            return int(shape[0]), int(np.prod(shape[1:], dtype=np.int64))
        return 1, sum(p[0].numel() for p in self.model.estimator_params())

    def _open_window(self, start: int | None = None) -> None:
        """The window of the next event, started at step ``start`` (default: now; a resumed
        window keeps its start, which sets the bins' boundaries)."""
        start = self.step_count if start is None else start
        upcoming = event_step(self.config, self.n_events, self.total_steps)
        if (upcoming is None or upcoming <= self.step_count
                or self.model.n_entities <= max(1, self.config.grouping.min_groups)):
            self.window = None  # nothing left to decide: capture stops costing anything
            return
        sh = self.config.sharing
        self.window = GradientWindow(
            self.model.n_entities, self._signal_shape(), upcoming - start,
            sh.window_bins, sh.sketch_dim, self.config.seed + SKETCH_SEED_OFFSET, sh.sketch_kind,
            device=self.model.signal_parameter().device, scaled=self._scaled)
        self.next_event = upcoming
        self.window_start = start
        self.window_loss = np.zeros(self.assignment.size)

    # -- stepping --------------------------------------------------------------------------
    def step(self, losses: Any = None) -> EventResult | None:
        """Count one optimizer step; at an event step decide, merge, and write the event.

        Parameters
        ----------
        losses : (n_tasks,) tensor or array, optional
            This step's per-task losses (NaN: task absent). Needed only for ``merge="best"``,
            which keeps the member with the lowest loss summed over the window.

        Returns
        -------
        EventResult or None
            The decision, at an event step.
        """
        if losses is not None:
            values = losses.detach().cpu().numpy() if torch.is_tensor(losses) else losses
            self.window_loss += np.nan_to_num(np.asarray(values, dtype=float))
            self._losses_seen = True
        self.step_count += 1
        self._merge = None  # apply_merge applies this step's merge only
        self.writer.poll()  # commit the writes the background writer has ready, in order
        if self.window is None:
            return None
        if self._scaled:
            used = self._scale
            self._scale = float(self.scaler.get_scale())  # after update(): the next backward's scale
            # a GradScaler lowers its scale exactly when it skipped the step
            self.window.end_step(scale=used, skipped=self._scale < used)
        else:
            self.window.end_step()
        if self.step_count != self.next_event:
            return None
        return self._event()

    def _event(self) -> EventResult:
        cfg, info = self.config, self.dist
        summed, bins = self.window.finish(reduce=lambda t: average_(t, info))
        before = self.model.count_parameters()[0]
        result = None
        if info.is_main:  # the pure decision, once; every rank applies it. Its k-means record
            # (not part of the decision for the built-in strategies but kmeans) is completed
            # on the background writer, before the event is written
            result = grouping_event(summed, self.assignment, self.streak, cfg.grouping,
                                    record=False)
        result = broadcast(result, info)
        window_loss = self.window_loss
        if info.active:
            loss = torch.as_tensor(window_loss, dtype=torch.float64,
                                   device=self.window.summed.device)
            window_loss = average_(loss, info).cpu().numpy()
        scores = np.array([window_loss[self.assignment == e].mean()
                           for e in range(self.model.n_entities)])
        if cfg.sharing.merge == "best" and not self._losses_seen:
            raise RuntimeError("merge='best' keeps the member with the lowest windowed loss: "
                               "pass this step's per-task losses, scheduler.step(losses)")
        # an event that merged nothing keeps the parameter objects (a data-parallel wrapper
        # around them stays valid: issue 16 measured 170-280 ms per rebuild on 2 CPU ranks)
        self.parameters_replaced = replaces_parameters(result.parent)
        if self.parameters_replaced:
            m = merge_estimators(self.model, self.optimizer, result.parent,
                                 result.assignment_after, cfg.sharing.merge, scores)
            self._merge = (m, result.assignment_after.astype(np.int64))
            for h in self._hooks:  # the merge made new parameter objects: hook those
                h.remove()
            self._hooks = self._register_hooks()
        # last_result before the write is queued: the writer replaces it by the completed
        # record only if it is still this event's (set after, a fast writer found the previous
        # event's there and the completed record never reached last_result)
        self.last_result = result
        if self.run_dir is not None:
            self._write_event(result, summed_bins=bins, before=before)
        elif info.is_main:  # no store: the record is still completed, off the step
            self.writer.submit(self._complete_and_write, result, None)
        self.assignment = result.assignment_after.astype(np.int64)
        self.streak = result.streak_after
        self.n_events += 1
        self._open_window()
        return result

    def apply_merge(self, other: Any, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Apply the merge of the latest :meth:`step` to another copy of the model: an EMA or
        SWA average (``torch.optim.swa_utils.AveragedModel``), a teacher, a copy on another
        device. Call it after every ``step()``; it does nothing where that step merged nothing.

        The copy's estimators go through the same map ``M`` (E_after, E_before) as the model's
        (the mean of the members for ``merge="average"``, the chosen member for ``best`` and
        ``first``), its task assignment becomes the model's, and ``optimizer``, if given (the
        copy's own), has its per-parameter state mapped too. An EMA then keeps averaging
        weights of the same shape::

            sharing.step()
            sharing.apply_merge(ema)        # ema = AveragedModel(model, multi_avg_fn=...)
            ema.update_parameters(model)

        Parameters
        ----------
        other : BranchedModel, or a wrapper with one as ``.module`` (AveragedModel, DDP)
            With the estimators the model had before this step's event.
        optimizer : torch.optim.Optimizer, optional
            An optimizer over ``other``'s parameters.

        Returns
        -------
        bool
            Whether a merge was applied.

        Raises
        ------
        TypeError
            ``other`` is not a BranchedModel (nor wraps one).
        ValueError
            ``other`` does not have the estimator count the merge starts from (it was given
            this merge already, or missed an earlier one).
        """
        target = other.module if hasattr(other, "module") and not hasattr(other, "estimators") \
            else other
        if not (hasattr(target, "estimators") and hasattr(target, "assignment")):
            raise TypeError(
                f"apply_merge needs a BranchedModel (or an AveragedModel/DDP wrapping one), got "
                f"{type(other).__name__}"
            )
        if self._merge is None:
            return False
        m, assignment = self._merge
        if target.n_entities != m.shape[1] or target.n_tasks != assignment.size:
            raise ValueError(
                f"apply_merge: the merge of step {self.step_count} maps {m.shape[1]} estimators "
                f"to {m.shape[0]}, but the given model has {target.n_entities} estimators for "
                f"{target.n_tasks} tasks. Call apply_merge once after every sharing.step(), on "
                "a copy made from this model (same tasks), and not twice for one step"
            )
        apply_merge_map(target, m, assignment, optimizer)
        return True

    # -- the run store ---------------------------------------------------------------------
    def _write_event(self, result: EventResult, summed_bins: np.ndarray, before: int) -> None:
        """Hand the event to the background writer: encoded and written off the training step.
        Everything it reads is fixed now (the decision's arrays are its own, never changed)."""
        cfg = self.config
        context = dict(
            index=self.n_events, step=self.step_count, window_start=self.window_start,
            bins=summed_bins, sketch_seed=cfg.seed + SKETCH_SEED_OFFSET,
            sketch_kind=cfg.sharing.sketch_kind, task_names=tuple(self.model.task_names),
            n_params_before=before, n_params_after=self.model.count_parameters()[0],
            merge_mode=cfg.sharing.merge, grouping_config=dataclasses.asdict(cfg.grouping),
            decision_rule=DECISION_RULE_VERSION)
        self.writer.submit(self._complete_and_write, result, context)

    def _complete_and_write(self, result: EventResult, context: dict[str, Any] | None) -> None:
        """(writer thread) Complete the event's record, make it ``last_result`` if no later
        event has replaced it, and write it."""
        completed = complete_record(result, self.config.grouping)
        if self.last_result is result:
            self.last_result = completed
        if context is not None:
            _write_event(self.run_dir, completed, context)

    def flush(self) -> None:
        """Wait until every event handed to the background writer is on disk (raises the error
        of a write that failed). :meth:`state_dict` calls it: a checkpoint saved beside it never
        refers to an event that is not written."""
        self.writer.barrier()

    def _attach_run(self, resume: bool) -> None:
        """Create and lock a new run store, or continue an existing one (``resume``). A store
        being written by the built-in ``train`` (which holds its lock) is only written to."""
        from .runlock import RunLock

        path = self.run_dir / "manifest.json"
        if not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(self.run_dir)
            self._lock.__enter__()
            self._create_run()
            return
        manifest = store.read_manifest(self.run_dir)
        if not resume and (manifest.get("events") or manifest.get("status") == "complete"):
            raise FileExistsError(
                f"{self.run_dir} already holds a run ({len(manifest.get('events', []))} events, "
                f"status {manifest.get('status')!r}): pass a new run_dir, or resume=True (and "
                "load_state_dict) to continue that run")
        if manifest.get("trained_by") == "SharingScheduler":
            self._lock = RunLock(self.run_dir)
            self._lock.__enter__()
            store.update_manifest(self.run_dir, status="running", error=None)

    def _create_run(self) -> None:
        from .branched import describe
        from .methods import method_spec
        from .rundir import versions_and_revision

        model = self.model
        manifest = {
            "status": "running", "method": self.config.method, "seed": self.config.seed,
            "method_spec": method_spec(self.config.method).to_dict(),
            "config": self.config.to_dict(), "trained_by": "SharingScheduler",
            "dataset": {"name": "user", "variant": "user"},
            "task_names": model.task_names, "task_types": [t.type for t in model.tasks],
            "true_groups": None, "main_metric": None, **versions_and_revision(),
            "user_model": describe(model),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "events": [],
            "error": None,
        }
        store.write_manifest(self.run_dir, manifest)

    def close(self, error: BaseException | None = None) -> None:
        """Remove the hooks; a run store this scheduler created is marked complete (or failed,
        with ``error``) and unlocked."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        try:
            self.writer.close(raise_errors=error is None)
        except BaseException as err:  # the run failed writing: say so in its manifest
            error = err
            raise
        finally:
            if self._lock is not None:
                self._finish_run(error)

    def _finish_run(self, error: BaseException | None) -> None:
        if self._lock is not None:
            status = {"status": "complete"} if error is None else {
                "status": "failed", "error": f"{type(error).__name__}: {error}"}
            try:
                store.update_manifest(self.run_dir, **status)
            finally:
                self._lock.__exit__(None, None, None)
                self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(exc)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self, *, flush: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly: save it beside the model's and optimizer's.

        ``flush`` (default): first wait until the events this scheduler wrote are on disk
        (:meth:`flush`). The built-in trainer passes False: it queues its checkpoint on the same
        writer, after the events, which orders them without waiting."""
        if flush:
            self.flush()
        return {"step_count": self.step_count, "n_events": self.n_events,
                "assignment": self.assignment.copy(), "streak": self.streak.copy(),
                "window_loss": self.window_loss.copy(), "window_start": self.window_start,
                "window": None if self.window is None else self.window.state_dict(),
                "scale": self._scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; load the model's state first (it sets the entity count)."""
        assignment = np.asarray(state["assignment"], dtype=np.int64)
        if int(assignment.max()) + 1 != self.model.n_entities:
            raise ValueError(
                f"the scheduler state has {int(assignment.max()) + 1} estimators but the model "
                f"has {self.model.n_entities}: call model.load_state_dict(...) first")
        self.assignment, self.streak = assignment, np.asarray(state["streak"])
        self.step_count, self.n_events = int(state["step_count"]), int(state["n_events"])
        self._open_window(int(state["window_start"]))
        self.window_loss = np.asarray(state["window_loss"], dtype=float).copy()
        if state.get("scale") is not None:
            self._scale = float(state["scale"])
        if state["window"] is not None and self.window is not None:
            self.window.load_state_dict(state["window"])


def _write_event(run_dir: Path, result: EventResult, context: dict[str, Any]) -> None:
    """Encode and write one event (on the writer thread): the decision's fields by name (the
    store takes plain fields, not the grouping rule's type) and the writer's context."""
    decision = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    store.write_event(run_dir, store.encode_event(**decision, **context))


__all__ = ["SKETCH_SEED_OFFSET", "SharingScheduler", "event_step", "resolve_config"]
