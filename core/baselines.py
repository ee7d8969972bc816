"""Grouping baselines: partitions decided before the grouped model trains.

- ``oracle``: the dataset's true groups.
- ``random_groups``: random groups with the sizes the reference Selective Sharing run found.
- ``cosine_groups`` (TAG's "CS"): mean pairwise cosine similarity of the tasks' gradients on the
  shared trunk, recorded every ``affinity_every`` steps of a joint (mtl) training phase.
- ``tag`` (Fifty et al. 2021): lookahead inter-task affinity. At a recording step, for each task
  i take an SGD lookahead step on the shared trunk with task i's gradient and measure every task
  j's relative loss change on the same batch, ``Z_ij = 1 - L_j(theta - lr g_i) / L_j(theta)``.

Per-task trunk gradients need one backward pass per task (and ``tag`` one forward pass per
lookahead): both are counted in ``backward_passes`` / ``forward_passes`` so Table 2 shows the
grouping cost beside Selective Sharing's, which needs none.

Which method is which baseline is read from its :class:`~.methods.MethodSpec` (``partition``);
:func:`baseline_partition` is the phase :func:`~.training.train` runs before the grouped model.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import store
from .config import ConfigError, RunConfig
from .distributed import broadcast
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
        model, n_tasks = trainer.model, trainer.n_tasks
        shared = [p for p in model.trunk.parameters()]
        pred = model.forward_entries(x, b_idx, t_idx)
        losses = entry_losses(pred, y, t_idx, trainer.codes, trainer.n_classes,
                              trainer.cfg.train.rank_mse_weight)
        present = torch.bincount(t_idx, minlength=n_tasks).nonzero()[:, 0].tolist()
        grads = []
        for i in present:
            g = torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)
            grads.append([torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, shared)])
        trainer.counters["backward_passes"] += len(present)
        trainer.counters["forward_passes"] += 1
        idx = np.asarray(present)
        if not self.lookahead:  # mean pairwise cosine of the per-task trunk gradients
            flat = torch.stack([torch.cat([gi.flatten() for gi in g]) for g in grads])
            norms = flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
            cos = ((flat / norms) @ (flat / norms).T).detach().cpu().numpy()
            self.total[np.ix_(idx, idx)] += cos
            self.count[np.ix_(idx, idx)] += 1
        else:
            self._lookahead(trainer, shared, grads, losses.detach(), x, y, b_idx, t_idx, idx)
        self.recorded_steps += 1

    @torch.no_grad()
    def _lookahead(self, trainer, shared, grads, base, x, y, b_idx, t_idx, idx) -> None:
        lr = trainer.opt.param_groups[0]["lr"]
        saved = [p.detach().clone() for p in shared]
        for row, g in zip(idx, grads):
            for p, gi in zip(shared, g):
                p.sub_(lr * gi)
            pred = trainer.model.forward_entries(x, b_idx, t_idx)
            after = entry_losses(pred, y, t_idx, trainer.codes, trainer.n_classes,
                                 trainer.cfg.train.rank_mse_weight)
            for p, s in zip(shared, saved):
                p.copy_(s)
            z = 1.0 - after[idx] / base[idx].clamp_min(1e-12)
            self.total[row, idx] += z.cpu().numpy()
            self.count[row, idx] += 1
        trainer.counters["forward_passes"] += len(idx)


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
    # each rank recorded affinities on its share of the batches: rank 0's partition holds
    partition = broadcast(affinity_partition(config, recorder, data.n_tasks), info)
    ds = store.encode_affinity(task_names=data.task_names, affinity=recorder.affinity(),
                               partition=partition, method=config.method,
                               recorded_steps=recorder.recorded_steps, counters=phase.counters)
    if info.is_main:
        store.write_affinity(run_dir, ds)
    return partition, dict(phase.counters)
