"""Grouping baselines: partitions decided before the grouped model trains.

- ``oracle``: the dataset's true groups.
- ``random_groups``: random groups with the sizes the reference Selective Sharing run found.
- ``cosine_groups`` (TAG's "CS"): mean pairwise cosine similarity of the tasks' gradients on the
  shared trunk, recorded every ``affinity_every`` steps of a joint (mtl) training phase.
- ``tag`` (Fifty et al. 2021): lookahead inter-task affinity. At a recording step, for each task
  i take an SGD lookahead step on the shared trunk with task i's gradient and measure every task
  j's relative loss change on the same batch, ``Z_ij = 1 - L_j(theta - lr g_i) / L_j(theta)``.

Per-task trunk gradients are counted as one backward pass per task (and ``tag`` one forward
pass per lookahead) in ``backward_passes`` / ``forward_passes``, so Table 2 shows the grouping
cost beside Selective Sharing's, which needs none. They are computed with one backward pass
through the estimators and a batched vector-Jacobian product through the trunk
(:func:`task_trunk_gradients`), equal to one ``autograd.grad`` per task. ``tag``'s lookaheads
run the shifted trunks one by one and the estimators once per block of lookaheads
(:func:`lookahead_chunk`), equal to one forward pass per lookahead up to rounding.

Which method is which baseline is read from its :class:`~.methods.MethodSpec` (``partition``);
:func:`baseline_partition` is the phase :func:`~.training.train` runs before the grouped model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import store
from .config import ConfigError, RunConfig
from .distributed import broadcast, sum_
from .grouping.affinity import groups_from_affinity, random_partition
from .grouping.partition import canonical, group_sizes
from .losses import entry_losses
from .methods import method_spec, methods_where
from .trainer import Trainer


def _reference(config: RunConfig) -> np.ndarray:
    ref = config.baseline.reference_run
    if ref is None:
        raise ConfigError(
            f"method {config.method!r} needs the groups of a Selective Sharing run: set "
            "baseline.reference_run=RUN_DIR (or baseline.n_groups / baseline.group_sizes)")
    try:
        return np.asarray(store.read_metrics(Path(ref))["partition"].values)
    except Exception as err:
        raise ConfigError(f"invalid baseline.reference_run={ref!r}: cannot read its "
                          f"metrics.nc ({err}); finish that run first") from err


def target_sizes(config: RunConfig, n_tasks: int) -> list[int]:
    """Group sizes the baseline must reproduce (largest first)."""
    b = config.baseline
    if b.group_sizes is not None:
        sizes = list(b.group_sizes)
    elif b.n_groups is not None:
        sizes = [len(c) for c in np.array_split(np.arange(n_tasks), b.n_groups)]
    else:
        sizes = sorted(group_sizes(_reference(config)).tolist(), reverse=True)
    if sum(sizes) != n_tasks:
        raise ConfigError(f"invalid baseline group sizes {sizes}: they must add up to the "
                          f"number of tasks, {n_tasks}")
    return sizes


def fixed_partition(config: RunConfig, data: Any) -> np.ndarray | None:
    """The partition of ``oracle`` and ``random_groups`` (None for affinity baselines and
    methods that fix no partition)."""
    kind = method_spec(config.method).partition
    if kind == "true_groups":
        if data.groups is None:
            raise ConfigError(f"method {config.method!r} needs true groups, and dataset "
                              f"{data.name!r} has none; use another method")
        return canonical(np.asarray(data.groups))
    if kind == "random_sizes":
        return random_partition(target_sizes(config, data.n_tasks), config.seed)
    return None


class AffinityRecorder:
    """Accumulates a (T, T) task affinity during joint training (called by the Trainer)."""

    def __init__(self, kind: str, every: int, n_tasks: int):
        """``kind``: the method whose affinity is recorded (``cosine_groups`` or ``tag``)."""
        affinity = list(methods_where(records_affinity=True))
        if kind not in affinity:
            raise ValueError(f"invalid affinity kind {kind!r}: one of {affinity}")
        self.kind, self.every = kind, every
        self.lookahead = method_spec(kind).partition == "lookahead_affinity"
        self.total = np.zeros((n_tasks, n_tasks))
        self.count = np.zeros((n_tasks, n_tasks))
        self.recorded_steps = 0
        #: ``tag``: run blocks of lookaheads through the estimators at once
        #: (:func:`lookahead_chunk`); False: one forward pass per lookahead (the same numbers up
        #: to rounding; tested).
        self.batched = True

    def affinity(self) -> np.ndarray:
        """Mean affinity per pair; pairs never measured together get the overall mean."""
        with np.errstate(invalid="ignore"):
            mean = self.total / self.count
        fill = np.nanmean(mean) if np.isfinite(mean).any() else 0.0
        return np.where(self.count > 0, mean, fill)

    def __call__(self, trainer: Any, x: torch.Tensor, y: torch.Tensor, b_idx: torch.Tensor,
                 t_idx: torch.Tensor) -> None:
        if trainer.step % self.every:
            return
        model, n_tasks, info = trainer.model, trainer.n_tasks, trainer.dist
        shared = [p for p in model.trunk.parameters()]
        # data-parallel: each task's entries in the global batch normalize every rank's share,
        # so the ranks' losses and gradients add up to the global batch's (as in training)
        counts = trainer._counts if info.active else None
        present = ((torch.bincount(t_idx, minlength=n_tasks) if counts is None else counts)
                   > 0).nonzero()[:, 0]
        if present.numel() == 0:  # a batch without labelled entries measures nothing
            return
        with buffers_kept(model):  # the measurement's forwards must not train BatchNorm stats
            losses, flat = task_trunk_gradients(trainer, shared, x, y, b_idx, t_idx, present,
                                                counts)
            sum_(losses, info)
            sum_(flat, info)
            trainer.counters["backward_passes"] += len(present)
            trainer.counters["forward_passes"] += 1
            idx = present.cpu().numpy()
            if not self.lookahead:  # mean pairwise cosine of the per-task trunk gradients
                unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
                cos = (unit @ unit.T).cpu().numpy()
                self.total[np.ix_(idx, idx)] += cos
                self.count[np.ix_(idx, idx)] += 1
            else:
                self._lookahead(trainer, shared, flat, losses, x, y, b_idx, t_idx, idx, counts)
        self.recorded_steps += 1

    @torch.no_grad()
    def _lookahead(self, trainer, shared, flat, base, x, y, b_idx, t_idx, idx, counts) -> None:
        model = trainer.model
        lr = trainer.opt.param_groups[0]["lr"]
        saved = [p.detach().clone() for p in shared]
        sizes = [p.numel() for p in shared]
        args = (trainer.codes, trainer.n_classes, trainer.cfg.train.rank_mse_weight)
        after = base.new_empty((len(idx), trainer.n_tasks))

        def shifted(g: torch.Tensor, run: Any) -> torch.Tensor:
            """``run()`` with the trunk moved by ``-lr g`` (put back afterwards)."""
            for p, gi in zip(shared, g.split(sizes)):
                p.sub_(lr * gi.view_as(p))
            try:
                return run()
            finally:
                for p, s in zip(shared, saved):
                    p.copy_(s)

        chunk = lookahead_chunk(model, x, b_idx, t_idx) if self.batched else 0
        if not chunk:  # one forward pass through trunk and estimators per lookahead
            for k, g in enumerate(flat):
                pred = shifted(g, lambda: model.forward_entries(x, b_idx, t_idx))
                after[k] = entry_losses(pred, y, t_idx, *args, counts=counts)
        else:  # the shifted trunks' outputs, stacked along the batch: the estimators (which
            n = len(b_idx)  # read no other row) run once for each block of lookaheads
            for lo in range(0, len(flat), chunk):
                reps = [shifted(g, lambda: model.representation(x)) for g in flat[lo:lo + chunk]]
                batch = reps[0].shape[0]
                offset = torch.arange(len(reps), device=b_idx.device).repeat_interleave(n) * batch
                pred = model.forward_entries(x, b_idx.repeat(len(reps)) + offset,
                                             t_idx.repeat(len(reps)),
                                             representation=torch.cat(reps))
                for j, part in enumerate(pred.split(n)):
                    after[lo + j] = entry_losses(part, y, t_idx, *args, counts=counts)
        sum_(after, trainer.dist)  # the global batch's losses after each lookahead
        z = 1.0 - after[:, idx] / base[idx].clamp_min(1e-12)
        self.total[np.ix_(idx, idx)] += z.cpu().numpy()
        self.count[np.ix_(idx, idx)] += 1
        trainer.counters["forward_passes"] += len(idx)


#: Most elements of the estimators' widest activation in one block of ``tag`` lookaheads (the
#: (sample, estimator) pairs computed, times the template's widest layer, times the lookaheads):
#: 2**21 floats, 8 MB (School: 11 lookaheads per block, Computer 45). Chosen on one School and
#: one Computer recording step (one thread, 2026-12-05): blocks of 8-32 lookaheads took School's
#: lookaheads from 0.77 s to 0.38-0.42 s (blocks of 11: 0.46 s) and Computer's from 0.83 s to
#: 0.34-0.41 s, while blocks of 45 on School (8.3M elements) were slower again (0.65 s).
LOOKAHEAD_ELEMENTS = 2 ** 21


def lookahead_chunk(model: Any, x: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor
                    ) -> int:
    """How many ``tag`` lookaheads one estimator pass takes (their shifted trunks' outputs
    stacked along the batch; :data:`LOOKAHEAD_ELEMENTS` over :func:`lookahead_elements`), or 0
    where lookaheads must run one at a time."""
    per = lookahead_elements(model, x, b_idx, t_idx)
    return 0 if per is None else max(1, LOOKAHEAD_ELEMENTS // per)


def lookahead_elements(model: Any, x: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor
                       ) -> int | None:
    """The elements of the estimators' widest activation in one lookahead: as many (sample,
    estimator) pairs as the forward pass computes (every pair when most are labelled, the
    dense path, else the labelled ones; :meth:`~.branched.BranchedModel.forward_entries`),
    times the template's widest layer. None where lookaheads must run one at a time: per-task
    trunks (``stl``), and estimator templates with BatchNorm, whose batch statistics would mix
    the lookaheads (the rows of one must not see another's)."""
    if getattr(model.trunk, "copies", 1) > 1:
        return None
    template = model.estimators._template[0]
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in template.modules()):
        return None
    widths = [p.shape[1] for p in model.estimators.params().values() if p.dim() >= 2]
    return max(1, model.computed_pairs(b_idx, t_idx, x.shape[0]) * max(widths, default=1))


@contextmanager
def buffers_kept(model: torch.nn.Module) -> Iterator[None]:
    """Restore ``model``'s buffers (BatchNorm running statistics and batch counts) on exit.

    A recording step's forward passes, one for the gradients and, for ``tag``, one per
    lookahead on a shifted trunk, run in train mode; without this, each would update the
    running statistics as a training step does (``tag``: once per task per recording step,
    with statistics of trunks that are never trained)."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


#: Most elements of one chunk of per-task cotangents on the trunk's output (tasks x B x D):
#: 2**24 floats = 64 MB (School's ~11k training students x 64 would allow 23 tasks at a time).
COTANGENT_ELEMENTS = 2 ** 24
#: Most tasks per batched product through the trunk: its intermediate gradients are this many
#: times a backward pass's (a convolutional trunk's feature maps), whatever the output's size.
COTANGENT_TASKS = 16


def task_trunk_gradients(trainer: Any, shared: list[torch.Tensor], x: torch.Tensor,
                         y: torch.Tensor, b_idx: torch.Tensor, t_idx: torch.Tensor,
                         present: torch.Tensor, counts: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each present task's loss gradient on the shared trunk parameters, flattened: returns
    ``(losses (n_tasks,), gradients (len(present), n_shared))``, both detached. ``counts``:
    as in :func:`~.losses.entry_losses` (a data-parallel rank's share of a global batch).

    A task's loss reads only its own entries, so one backward pass through the estimators to a
    per-entry copy of the trunk's output gives every task's gradient on that output at once
    (entry ``n``'s row is ``dL_t(n) / dh``); summed per task into their samples, these are the
    cotangents of one vector-Jacobian product through the trunk per task, batched with
    ``is_grads_batched``. The same gradients as one ``autograd.grad(L_i, trunk)`` per task
    (equal to rounding; tested), without walking every estimator's graph once per task: the
    gradients of one School recording step (139 tasks, full batch, one thread) took 8.8 s with
    one ``autograd.grad`` per task and 0.8 s this way (2026-12-04).
    """
    model = trainer.model
    args = (trainer.codes, trainer.n_classes, trainer.cfg.train.rank_mse_weight, counts)
    if getattr(model.trunk, "copies", 1) > 1:  # per-task trunks: no shared output to split
        losses = entry_losses(model.forward_entries(x, b_idx, t_idx), y, t_idx, *args)
        rows = [torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)
                for i in present.tolist()]
        return losses.detach(), torch.stack([
            torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                       for g, p in zip(row, shared)]) for row in rows])
    rep = model.representation(x)
    entry_rep = rep.detach()[b_idx].requires_grad_(True)  # (N, D): one row per entry
    arange = torch.arange(len(b_idx), device=b_idx.device)
    losses = entry_losses(model.forward_entries(x, arange, t_idx, representation=entry_rep),
                          y, t_idx, *args)
    (per_entry,) = torch.autograd.grad(losses[present].sum(), entry_rep, allow_unused=True)
    if per_entry is None:  # no entry of a present task here (a data-parallel rank's share)
        per_entry = torch.zeros_like(entry_rep)
    slot = torch.full((trainer.n_tasks,), -1, dtype=torch.long, device=t_idx.device)
    slot[present] = torch.arange(len(present), device=t_idx.device)
    chunk = max(1, min(COTANGENT_TASKS, COTANGENT_ELEMENTS // max(1, rep.numel())))
    out = []
    for lo in range(0, len(present), chunk):
        hi = min(lo + chunk, len(present))
        keep = (slot[t_idx] >= lo) & (slot[t_idx] < hi)
        cot = rep.new_zeros((hi - lo, *rep.shape))
        cot.index_put_((slot[t_idx][keep] - lo, b_idx[keep]), per_entry[keep], accumulate=True)
        grads = torch.autograd.grad(rep, shared, grad_outputs=cot, retain_graph=True,
                                    is_grads_batched=True, allow_unused=True)
        out.append(torch.cat([(p.new_zeros((hi - lo, p.numel())) if g is None
                               else g.reshape(hi - lo, -1)) for g, p in zip(grads, shared)],
                             dim=1))
    return losses.detach(), torch.cat(out)


def affinity_partition(config: RunConfig, recorder: AffinityRecorder, n_tasks: int
                       ) -> np.ndarray:
    """Groups from the recorded affinity, with as many groups as :func:`target_sizes` asks."""
    k = len(target_sizes(config, n_tasks))
    # TAG's own protocol searches every partition when there are few tasks; cosine_groups never
    lookahead = method_spec(config.method).partition == "lookahead_affinity"
    limit = config.baseline.exhaustive_max_tasks if lookahead else 0
    return groups_from_affinity(recorder.affinity(), k, exhaustive_max_tasks=limit)


def baseline_partition(config: RunConfig, data: Any, run_dir: Path, progress: bool,
                       model: Any = None) -> tuple[np.ndarray | None, dict[str, float]]:
    """The fixed partition of a grouping baseline (None for other methods) and the cost of
    deciding it. Affinity baselines first train jointly (one estimator per task, ``model``'s
    copy or the built-in one) while recording affinities; the result goes to ``affinity.nc``
    so a resumed run does not repeat that phase."""
    counters = {"backward_passes": 0, "forward_passes": 0, "wall_time_s": 0.0}
    if not method_spec(config.method).records_affinity:
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
    # every rank recorded the global batches' affinities; rank 0's partition holds (one
    # decision, whatever the ranks' last bits)
    partition = broadcast(affinity_partition(config, recorder, data.n_tasks), info)
    ds = store.encode_affinity(task_names=data.task_names, affinity=recorder.affinity(),
                               partition=partition, method=config.method,
                               recorded_steps=recorder.recorded_steps, counters=phase.counters)
    if info.is_main:
        store.write_affinity(run_dir, ds)
    return partition, dict(phase.counters)
