"""Step overhead of Selective Sharing and of the grouping baselines against ``mtl`` (issue 6).

All trainers are built on the same synthetic data with the same model and stepped in turn,
one step each, in one process, so the load of a shared machine falls on all of them alike:
their *ratios* are what this measures. Per step it records the wall time (``perf_counter``) and
the process CPU time, and the time spent in the parts that do not run on every step:

- ``ss_similarity``: a window flush (every ``window_len / window_bins`` steps: a bin is sketched)
  and the grouping event (every ``regroup_every`` steps). The event is timed as
  ``SharingScheduler._event`` (decision, merge, the event queued on the background writer)
  plus the trainer's ``save`` (a snapshot of the state, queued with the history): what stays on
  the training thread. The writes themselves run on the writer thread; :func:`period_ratio`
  times whole event periods, which includes whatever they cost the training thread.
- ``tag`` / ``cosine_groups``: the affinity recording (every ``affinity_every`` steps: one
  backward pass per task, and for ``tag`` one lookahead forward pass per task).

A method's cost per step, amortized, is ``median(steps without the rare part) + median(rare
part) / its period``; ratio = that / the median ``mtl`` step. Grouping is kept from merging
(``min_silhouette=1``: every event computes everything and merges nothing), so the model keeps
its size and the ratio is the overhead before any merge (merges make later steps cheaper).
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from selective_sharing.core import scheduler as scheduler_module
from selective_sharing.core import store
from selective_sharing.core.checkpoint import SnapshotBuffers
from selective_sharing.core.baselines import AffinityRecorder
from selective_sharing.core.estimators import EstimatorStack
from selective_sharing.core.capture import GradientWindow
from selective_sharing.core.config import make_config
from selective_sharing.core.model import estimator_template
from selective_sharing.core.rundir import new_manifest
from selective_sharing.core.scheduler import SharingScheduler
from selective_sharing.core.training import Trainer
from selective_sharing.datasets import load_dataset

#: Estimator shapes: representation_dim and estimator_hidden, ~5k and ~500k parameters.
SIZES = {
    "5k": {"representation_dim": 64, "estimator_hidden": (64, 16)},
    "500k": {"representation_dim": 128, "estimator_hidden": (512, 832)},
}
METHODS = ("mtl", "ss_similarity", "ss_countsketch", "tag", "cosine_groups")
#: Extra config of the method names that are not config methods.
VARIANTS = {"ss_countsketch": ("ss_similarity", {"sketch_kind": "countsketch"})}


def _flush_timer() -> list[tuple[float, float]]:
    """Time (wall, cpu) every ``GradientWindow._flush`` (bin sketches) into the returned list."""
    record: list[tuple[float, float]] = []
    inner = GradientWindow._flush

    def timed(self: GradientWindow) -> None:
        record.append(_timed(lambda: inner(self)))

    timed.__wrapped__ = inner  # type: ignore[attr-defined]
    GradientWindow._flush = timed  # type: ignore[method-assign]
    return record


class _TimedRecorder:
    """Wraps an AffinityRecorder; ``last`` is the (wall, cpu) time of its latest call."""

    def __init__(self, inner: AffinityRecorder):
        self.inner, self.last = inner, (0.0, 0.0)

    def __call__(self, *args) -> None:
        start, start_cpu = time.perf_counter(), time.process_time()
        self.inner(*args)
        self.last = (time.perf_counter() - start, time.process_time() - start_cpu)


def _timed(fn) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


@dataclass
class Timings:
    """Per-step wall/CPU seconds of one method and its rare part, with its period in steps."""

    period: float = float("inf")
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rare: list[float] = field(default_factory=list)
    rare_cpu: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)
    total: float = 0.0  # wall of the timed steps with everything in them (events included)
    flushes: list[tuple[float, float]] = field(default_factory=list)  # (wall, cpu) per flush

    def amortized(self, cpu: bool = False) -> float:
        steps, rare = (self.cpu, self.rare_cpu) if cpu else (self.wall, self.rare)
        return float(np.median(steps)) + (float(np.median(rare)) / self.period if rare else 0.0)


def model_params(size: str, n_tasks: int) -> int:
    """Parameters of one estimator of shape ``SIZES[size]``."""
    widths = [SIZES[size]["representation_dim"], *SIZES[size]["estimator_hidden"]]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def bench_data(n_tasks: int) -> object:
    """The benchmark's data: ``n_tasks`` synthetic regression tasks in (up to) 5 groups, 20
    training samples each (full-batch steps; the model size, not the data, sets the cost)."""
    return load_dataset(
        "synthetic",
        n_tasks=n_tasks,
        n_groups=min(5, n_tasks),
        samples_per_task=20,
        test_per_task=5,
        seed=0,
    )


def _trainers(
    n_tasks: int, size: str | None, root: Path, regroup_every: int, warmup: int,
    methods: tuple[str, ...], data: object = None, overrides: dict | None = None,
) -> dict[str, Trainer]:
    """One Trainer per method on the same data (default: :func:`bench_data`), kept from merging
    (``min_silhouette=1``); ``overrides`` on top (e.g. an image model and device)."""
    data = bench_data(n_tasks) if data is None else data
    overrides = {
        **(SIZES[size] if size else {}),
        "train.steps": 10**6,
        "batch_size": None,
        "warmup_steps": warmup,
        "regroup_every": regroup_every,
        "min_silhouette": 1.0,
        "n_groups": min(5, n_tasks),
        **(overrides or {}),
    }
    out: dict[str, Trainer] = {}
    for method in methods:
        name, extra = VARIANTS.get(method, (method, {}))
        cfg = make_config(
            data.name, name, overrides={**overrides, **extra}, out=str(root / method)
        )
        recorder = None
        if method in ("tag", "cosine_groups"):
            recorder = _TimedRecorder(
                AffinityRecorder(method, cfg.baseline.affinity_every, n_tasks)
            )
        Path(cfg.out).mkdir(parents=True)
        store.write_manifest(cfg.out, new_manifest(cfg, data, torch.get_num_threads()))
        out[method] = Trainer(cfg, data, assignment=np.arange(n_tasks), recorder=recorder,
                              run_dir=Path(cfg.out))
    return out


def _event_timer() -> list[tuple[float, float]]:
    """Time (wall, cpu) every ``SharingScheduler._event`` into the returned list."""
    record: list[tuple[float, float]] = []
    inner = SharingScheduler._event

    def timed(self: SharingScheduler):
        out: list = []
        record.append(_timed(lambda: out.append(inner(self))))
        return out[0]

    timed.__wrapped__ = inner  # type: ignore[attr-defined]
    SharingScheduler._event = timed  # type: ignore[method-assign]
    return record


def _one_step(method: str, tr: Trainer, t: Timings, flushes: list, events: list) -> None:
    """One timed step; its rare part (flush / recording) is moved from the step to ``t.rare``
    and an event that falls due (with the save that follows it) is timed into ``t.rare``."""
    n_flush, n_event = len(flushes), len(events)
    _CURRENT.clear()
    recorded = tr.recorder.inner.recorded_steps if tr.recorder is not None else 0
    wall, cpu = _timed(tr._step)
    t.flushes += flushes[n_flush:]
    rare = [sum(f[i] for f in flushes[n_flush:]) for i in (0, 1)]
    if tr.recorder is not None and tr.recorder.inner.recorded_steps > recorded:
        rare = list(tr.recorder.last)
        t.rare.append(rare[0])
        t.rare_cpu.append(rare[1])
    if len(events) > n_event:  # this step held an event: charge it, and the save, to rare
        event = events[-1]
        save = _timed(tr.save)
        rare = [rare[i] + event[i] for i in (0, 1)]
        t.rare.append(event[0] + save[0])
        t.rare_cpu.append(event[1] + save[1])
        parts = {name: _CURRENT.get(name, 0.0) for name in _PARTS.values()}
        t.parts.append({**parts, "rest": t.rare[-1] - sum(parts.values())})
        t.total += save[0]
    t.wall.append(wall - rare[0])
    t.cpu.append(cpu - rare[1])
    t.total += wall


#: Parts of an event timed separately: (owner, attribute) -> name.
_PARTS = {  # on the training thread: the writes themselves run on the background writer
    (scheduler_module, "grouping_event"): "decide",
    (SnapshotBuffers, "take"): "snapshot",  # the host copy of the state for the checkpoint
}
_CURRENT: dict[str, float] = {}


@contextlib.contextmanager
def _event_parts():
    """Wrap the parts of an event so that each call adds its wall time to ``_CURRENT``."""
    saved = {key: getattr(*key) for key in _PARTS}

    def wrap(fn, name):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _CURRENT[name] = _CURRENT.get(name, 0.0) + time.perf_counter() - start

        return timed

    for (owner, attr), name in _PARTS.items():
        setattr(owner, attr, wrap(saved[(owner, attr)], name))
    try:
        yield
    finally:
        for (owner, attr), fn in saved.items():
            setattr(owner, attr, fn)


def step_overhead(
    n_tasks: int,
    size: str,
    *,
    steps: int = 40,
    warm: int = 3,
    regroup_every: int = 100,
    methods: tuple[str, ...] = METHODS,
    n_events: int = 3,
) -> dict[str, object]:
    """Interleave one step of each method ``warm + steps`` times; amortize rare parts.

    The ss run's first event fires after ``warm + steps // 2`` steps; ``n_events - 1`` more are
    forced after the measured steps (each after a few untimed steps) to get a median. Returns
    ``{tasks, estimator_params, mtl_step_s, <method>: {ratio, ratio_cpu, step_s, rare_s}}``.
    """
    return interleaved(lambda tmp: _trainers(n_tasks, size, tmp, regroup_every,
                                             warm + steps // 2, methods),
                       steps=steps, warm=warm, regroup_every=regroup_every, n_events=n_events,
                       summary=lambda times: _summary(n_tasks, size, times))


def interleaved(make_trainers, *, steps: int, warm: int, regroup_every: int, n_events: int,
                summary) -> dict[str, object]:
    """Step the trainers ``make_trainers(tmp_dir)`` in turn, ``warm + steps`` times, timing the
    last ``steps``; force ``n_events - 1`` more events; ``summary(times)`` and the file sizes."""
    flushes, events = _flush_timer(), _event_timer()
    try:
        with tempfile.TemporaryDirectory(prefix="ss_bench_") as tmp, _event_parts():
            trainers = make_trainers(Path(tmp))
            times = {m: Timings() for m in trainers}
            for i in range(warm + steps):
                for m, tr in trainers.items():
                    if i < warm:
                        tr._step()
                    else:
                        _one_step(m, tr, times[m], flushes, events)
            for m, tr in trainers.items():
                times[m].period = tr.recorder.inner.every if tr.recorder is not None else 1
            files = {}
            for m in (m for m in trainers if m.startswith("ss_")):
                _more_events(trainers[m], times[m], regroup_every, n_events - 1, flushes,
                             events)
            if "ss_similarity" in trainers and trainers["ss_similarity"].dist.is_main:
                ss = trainers["ss_similarity"]  # (data-parallel ranks but 0 write nothing)
                ss.flush()  # the background writer's queue, before the files are measured
                files = {
                    "event_bytes": float(
                        np.mean([p.stat().st_size for p in store.list_events(ss.paths.run_dir)])
                    ),
                    "checkpoint_bytes": ss.paths.checkpoint.stat().st_size,
                }
            for tr in trainers.values():  # every queued write lands before the folder goes
                tr.sharing.close()
                tr.close()  # and let go of the host copy it keeps for its next checkpoint
    finally:
        GradientWindow._flush = GradientWindow._flush.__wrapped__  # type: ignore[attr-defined]
        SharingScheduler._event = SharingScheduler._event.__wrapped__  # type: ignore
    return {**summary(times), **files}


def _more_events(ss: Trainer, t: Timings, regroup_every: int, n: int, flushes: list,
                 events: list) -> None:
    """Force ``n`` more events (each after a few untimed steps); charge the median flush at the
    nominal rate to every step."""
    for _ in range(n):
        for _ in range(3):
            ss._step()
        ss.sharing.next_event = ss.sharing.step_count + 1  # the next step holds an event
        probe = Timings()
        _one_step("ss_similarity", ss, probe, flushes, events)
        t.rare += probe.rare
        t.rare_cpu += probe.rare_cpu
        t.parts += probe.parts
    per_step = min(ss.cfg.sharing.window_bins, regroup_every) / regroup_every
    flush = np.median(np.asarray(t.flushes), axis=0) if t.flushes else np.zeros(2)
    t.wall = [w + flush[0] * per_step for w in t.wall]
    t.cpu = [c + flush[1] * per_step for c in t.cpu]
    t.period = regroup_every


def _summary(n_tasks: int, size: str | None, times: dict[str, Timings]) -> dict[str, object]:
    base, base_cpu = times["mtl"].amortized(), times["mtl"].amortized(cpu=True)
    out: dict[str, object] = {
        "tasks": n_tasks,
        "estimator_params": model_params(size, n_tasks) if size else None,
        "mtl_step_s": base,
        "mtl_step_cpu_s": base_cpu,
        "n_steps": len(times["mtl"].wall),
    }
    for m, t in times.items():
        if m == "mtl":
            continue
        out[m] = {
            "ratio": t.amortized() / base,
            "ratio_cpu": t.amortized(cpu=True) / base_cpu,
            "step_s": float(np.median(t.wall)),
            "rare_s": float(np.median(t.rare)) if t.rare else 0.0,
            "rare_cpu_s": float(np.median(t.rare_cpu)) if t.rare_cpu else 0.0,
            "period": t.period,
            "n_steps": len(t.wall),
            "n_rare": len(t.rare),
            "ratio_of_sums": t.total / times["mtl"].total,
        }
        if m.startswith("ss_"):
            out[m]["flush_s"] = float(np.median([f[0] for f in t.flushes])) if t.flushes else 0.0
            split = {k: float(np.median([p[k] for p in t.parts])) for k in t.parts[0]}
            out[m]["event_split"] = split
    return out


def _train_step(tr: Trainer) -> None:
    """One step as ``Trainer.fit`` takes it: the step, and after an event the save it queues."""
    before = tr.sharing.n_events
    tr._step()
    if tr.sharing.n_events != before:
        tr.save()


def period_ratio(
    n_tasks: int, size: str | None, *, periods: int = 3, regroup_every: int = 100,
    data: object = None, overrides: dict | None = None,
) -> dict[str, float]:
    """``ss_similarity`` against ``mtl`` over ``periods`` whole event periods, everything
    included: every step, ``periods`` events (decision, merge bookkeeping, the event file,
    history part and checkpoint they queue on the background writer, and the renames that
    commit them), every sketch flush, and the wait for the last writes at the end.

    The two trainers take one step each in turn (the load of a shared machine hits both alike);
    the figure is the ratio of their total wall times, and of the process CPU time spent while
    each stepped (which includes the writer thread's work during that step: a stricter
    figure, since the writer runs on another core). No median or amortization model: what a
    run of this length costs.

    Returns ``{ratio, ratio_cpu, ss_s, mtl_s, steps, events}``.
    """
    with tempfile.TemporaryDirectory(prefix="ss_bench_") as tmp:
        trainers = _trainers(n_tasks, size, Path(tmp), regroup_every, regroup_every,
                             ("mtl", "ss_similarity"), data, overrides)
        for tr in trainers.values():  # warm-up steps, untimed: allocator and caches
            for _ in range(2):
                tr._step()
        wall = dict.fromkeys(trainers, 0.0)
        cpu = dict.fromkeys(trainers, 0.0)
        ss = trainers["ss_similarity"]
        for _ in range(periods * regroup_every):  # events at steps 100, 200, ... (warmup 100)
            for m, tr in trainers.items():
                w, c = _timed(lambda tr=tr: _train_step(tr))
                wall[m] += w
                cpu[m] += c
        w, c = _timed(ss.flush)  # writes still queued at the end count too
        wall["ss_similarity"] += w
        cpu["ss_similarity"] += c
        events = ss.sharing.n_events
        for tr in trainers.values():
            tr.sharing.close()
            tr.close()  # and let go of the host copy it keeps for its next checkpoint
    return {"ratio": wall["ss_similarity"] / wall["mtl"],
            "ratio_cpu": cpu["ss_similarity"] / cpu["mtl"],
            "ss_s": wall["ss_similarity"], "mtl_s": wall["mtl"],
            "steps": periods * regroup_every, "events": events}


def stack_paths(n_tasks: int, size: str, *, steps: int = 30, warm: int = 3) -> dict[str, float]:
    """Forward + backward of the stacked estimators through both paths of
    :class:`~selective_sharing.core.estimators.EstimatorStack`: ``einsum`` (plain Linear/ReLU
    templates, the layout of the earlier bank) and ``vmap(functional_call)`` (any template),
    same weights and batch (20 samples per task, as the step benchmark), interleaved in one
    process. Returns the median seconds of each and ``vmap_over_einsum``."""
    cfg = SIZES[size]
    template = estimator_template(cfg["representation_dim"], cfg["estimator_hidden"])
    stacks = {"einsum": EstimatorStack(template, n_tasks), "vmap": EstimatorStack(template, n_tasks)}
    stacks["vmap"].fast = False
    assert stacks["einsum"].fast, "the einsum path must apply to a plain Linear/ReLU template"
    h = torch.randn(20 * n_tasks, cfg["representation_dim"])
    times: dict[str, list[float]] = {k: [] for k in stacks}
    for i in range(warm + steps):
        for name, stack in stacks.items():
            stack.zero_grad()
            start = time.perf_counter()
            stack(h).square().sum().backward()
            if i >= warm:
                times[name].append(time.perf_counter() - start)
    out = {f"{k}_s": float(np.median(v)) for k, v in times.items()}
    out["vmap_over_einsum"] = out["vmap_s"] / out["einsum_s"]
    return out


if __name__ == "__main__":
    import json
    import sys

    torch.set_num_threads(1)
    n, size = int(sys.argv[1]), sys.argv[2]
    print(
        json.dumps(
            step_overhead(n, size, steps=int(sys.argv[3]) if len(sys.argv) > 3 else 40), indent=1
        )
    )
