"""Run a grid of (dataset, method, seed) trainings on local processes or a Dask cluster.

``runs_root/<dataset>/<method>/seed<k>/`` holds each run. Complete runs are skipped. Anything
else (failed, interrupted: ``running`` with no live writer, a directory without a manifest) is
deleted and trained again **from scratch**, so a result never depends on where a run was cut.
A run another live process is writing (it holds ``run.lock``) is left alone and reported.

Grouping baselines that copy a Selective Sharing run's groups (``random_groups``,
``cosine_groups``, ``tag``) wait for ``ss_similarity`` of the same dataset and seed, and
``oracle`` waits for it too: that run's manifest says whether the dataset has true groups
(no groups: the oracle cell is ``n/a``, nothing is trained). A failed run never stops the grid.

This module imports no torch: workers import the training code when they run a job, so the
process that plans and watches the grid stays light, and Dask workers only need the package.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import store
from .config import ConfigError, make_config
from .methods import methods_where

# The Selective Sharing run whose groups the baselines copy (their MethodSpec.needs says which
# need it); oracle waits for it too, to learn from its manifest whether there are true groups.
REFERENCE_METHOD = "ss_similarity"
NEEDS_REFERENCE = methods_where(needs="reference_run")
NEEDS_GROUPS = methods_where(needs="true_groups")
EXECUTORS = ("local", "dask", "serial")  # serial: in this process, one run at a time
# Not part of what a run computes: where it lives and how many threads trained it.
_IGNORED_KEYS = ("out", "train.threads", "baseline.reference_run")


class GridError(RuntimeError):
    """The grid cannot be planned (e.g. a complete run was made with another config)."""


@dataclass(frozen=True)
class Job:
    """One run of the grid. ``after`` is the run directory this job waits for (or None)."""

    dataset: str
    method: str
    seed: int
    profile: str
    run_dir: str
    overrides: dict[str, Any] = field(default_factory=dict)
    after: str | None = None

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.method}/seed{self.seed}"


@dataclass(frozen=True)
class Outcome:
    """What became of a job: status ``trained``, ``skipped`` (already complete), ``n/a``
    (oracle without true groups) or ``failed`` (``error`` says why)."""

    job: Job
    status: str
    error: str | None = None
    seconds: float = 0.0


def job_config(job: Job) -> Any:
    """The :class:`RunConfig` of a job (validated; raises ConfigError on a bad override)."""
    overrides = {"train.threads": 1, "data.allow_substitute": True, **job.overrides}
    if job.method in NEEDS_REFERENCE:
        overrides["baseline.reference_run"] = job.after
    return make_config(job.dataset, job.method, job.seed, job.profile, overrides, out=job.run_dir)


def plan_grid(
    datasets: Sequence[str],
    methods: Sequence[str],
    seeds: Iterable[int],
    profile: str,
    runs_root: str | os.PathLike,
    overrides: Callable[[str, str], dict[str, Any]] | None = None,
) -> list[Job]:
    """Jobs of the grid, ``ss_similarity`` first (it is added when a method needs it).

    ``overrides(dataset, method)`` gives each job's config overrides. Raises ConfigError for a
    bad override and :class:`GridError` when a complete run in ``runs_root`` was made with
    another config than the one asked for (it would otherwise be reused silently).
    """
    methods = list(dict.fromkeys(methods))
    if (
        any(m in NEEDS_REFERENCE + NEEDS_GROUPS for m in methods)
        and REFERENCE_METHOD not in methods
    ):
        methods.insert(0, REFERENCE_METHOD)
    methods.sort(key=lambda m: m != REFERENCE_METHOD)  # stable: the rest keep their order
    jobs = []
    for seed in seeds:
        for dataset in datasets:
            ref = str(Path(runs_root) / dataset / REFERENCE_METHOD / f"seed{seed}")
            for method in methods:
                run_dir = str(Path(runs_root) / dataset / method / f"seed{seed}")
                needs = method in NEEDS_REFERENCE + NEEDS_GROUPS
                jobs.append(
                    Job(
                        dataset,
                        method,
                        int(seed),
                        profile,
                        run_dir,
                        dict(overrides(dataset, method)) if overrides else {},
                        ref if needs else None,
                    )
                )
    check_configs(jobs)
    return jobs


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"steps": 3}}`` -> ``{"train.steps": 3}``, JSON-normalized (tuples: lists)."""
    out: dict[str, Any] = {}
    for key, value in json.loads(json.dumps(config, default=str)).items():
        if isinstance(value, dict) and key != "options":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return {k: v for k, v in out.items() if k not in _IGNORED_KEYS}


def check_configs(jobs: Sequence[Job]) -> None:
    """Validate every job's config before anything trains (a bad override fails in seconds),
    and refuse to reuse a complete run whose config differs from the one asked for."""
    stale = []
    for job in jobs:
        try:
            config = job_config(job)
        except ConfigError as err:
            raise ConfigError(f"run {job.name}: {err}") from err
        if status_of(job.run_dir) != "complete":
            continue
        found = _flat(store.read_manifest(job.run_dir)["config"])
        wanted = _flat(config.to_dict())
        # Keys on one side only are fields added or removed by a code update: not a change.
        keys = sorted(k for k in found.keys() & wanted.keys() if found[k] != wanted[k])
        if keys:
            stale.append(f"{job.run_dir} (differs in {', '.join(keys[:4])})")
    if stale:
        raise GridError(
            f"{len(stale)} complete run(s) were made with another config than this "
            f"grid asks for, e.g. {stale[0]}; pass another --runs folder or delete "
            "those run directories to retrain them"
        )


def status_of(run_dir: str | os.PathLike) -> str:
    """``complete``, ``running``, ``failed`` or ``missing`` (no readable manifest)."""
    try:
        return store.read_manifest(run_dir).get("status", "missing")
    except store.StoreError:
        return "missing"


# ----------------------------------------------------------------------------- worker side


def _clear(run_dir: Path) -> str | None:
    """Delete a run directory that is not complete; None, or why it must be left alone."""
    from .runlock import RunLock, RunLockedError

    if not run_dir.exists():
        return None
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except RunLockedError as err:  # a live writer: never delete under it
        return str(err)
    try:
        shutil.rmtree(run_dir)
    finally:
        lock.release()
    return None


def run_job(job: Job) -> Outcome:
    """Train one job into its run directory (worker side). Never raises: errors are returned.

    A complete run is skipped; anything else there is deleted first (a fresh start).
    """
    start = time.perf_counter()
    run_dir = Path(job.run_dir)
    if status_of(run_dir) == "complete":
        return Outcome(job, "skipped")
    busy = _clear(run_dir)
    if busy:
        return Outcome(job, "failed", f"left alone: {busy}")
    try:
        from .training import train

        train(job_config(job), progress=False)
    except Exception as err:  # noqa: BLE001 - a failed run must not stop the grid
        error = None
        if (run_dir / "manifest.json").exists():
            error = store.read_manifest(run_dir).get("error")
        return Outcome(
            job, "failed", error or f"{type(err).__name__}: {err}", time.perf_counter() - start
        )
    return Outcome(job, "trained", None, time.perf_counter() - start)


def _result(future: Any, job: Job) -> Outcome:
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - the worker itself died (run_job never raises)
        return Outcome(job, "failed", f"worker lost: {type(err).__name__}: {err}")


# ----------------------------------------------------------------------------- the loop


def _decide(job: Job, outcomes: dict[str, Outcome]) -> Outcome | None:
    """For a job whose reference is settled: an outcome without training, or None (run it)."""
    ref = outcomes.get(job.after)
    ok = ref.status in ("trained", "skipped") if ref else status_of(job.after) == "complete"
    if not ok:
        why = ref.status if ref else status_of(job.after)
        return Outcome(job, "failed", f"not run: its reference run {job.after} is {why}")
    if job.method in NEEDS_GROUPS and store.read_manifest(job.after).get("true_groups") is None:
        return Outcome(job, "n/a", "the dataset has no true groups")
    return None


def _start_ready(
    pending: list[Job], running: dict, outcomes: dict[str, Outcome], pool: Any, in_grid: set[str]
) -> int:
    """Submit pending jobs in plan order while slots are free; settle those that need no run.
    Returns how many jobs were settled without running."""
    settled = 0
    for job in list(pending):
        if len(running) >= pool.slots:
            break
        if job.after in in_grid and job.after not in outcomes:
            continue  # its reference has not finished yet
        pending.remove(job)
        decided = _decide(job, outcomes) if job.after else None
        if decided is None:
            running[pool.submit(job)] = job
        else:
            outcomes[job.run_dir] = decided
            settled += 1
    return settled


def longest_first(jobs: Sequence[Job], cost: Callable[[Job], float]) -> list[Job]:
    """``jobs`` by decreasing estimated cost (ties keep plan order); a job that others wait for
    counts with its own cost plus its longest dependent's."""
    own = {j.run_dir: float(cost(j)) for j in jobs}
    chain = dict(own)
    for j in jobs:
        if j.after in chain:
            chain[j.after] = max(chain[j.after], own[j.after] + own[j.run_dir])
    order = sorted(range(len(jobs)), key=lambda i: (-chain[jobs[i].run_dir], i))
    return [jobs[i] for i in order]


def run_grid(
    jobs: Sequence[Job],
    executor: str = "local",
    workers: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
    cost: Callable[[Job], float] | None = None,
) -> list[Outcome]:
    """Run ``jobs`` (from :func:`plan_grid`) and return one :class:`Outcome` per job, in order.

    ``executor``: ``local`` (a pool of ``workers`` processes), ``dask`` (the scheduler at
    ``scheduler``, else a LocalCluster of ``workers`` processes) or ``serial`` (this process).
    At most as many jobs are in flight as there are worker slots; a baseline starts as soon as
    its reference run is done. Jobs start in plan order (seed by seed), or, with ``cost`` (an
    estimate of a job's seconds), longest first: a reference run counts with its longest
    dependent, so the long chains start early and the last slots do not wait on one long job
    (on 2 workers the quick Table 2 finished one long image ``stl`` run minutes after the other
    worker went idle). The order changes when runs finish, never what they compute.
    """
    from tqdm.auto import tqdm

    from .executors import make_pool

    if executor not in EXECUTORS:
        raise ConfigError(f"invalid executor {executor!r}: one of {list(EXECUTORS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"invalid workers={workers!r}: a positive integer")
    done = [j for j in jobs if status_of(j.run_dir) == "complete"]
    outcomes = {j.run_dir: Outcome(j, "skipped") for j in done}
    pending = [j for j in jobs if j.run_dir not in outcomes]
    if cost is not None:
        pending = longest_first(pending, cost)
    bar = tqdm(
        total=len(jobs), initial=len(done), desc="table grid", unit="run",
        disable=None if progress else True,  # None: off when stderr is not a terminal (logs)
    )
    pool, running = make_pool(executor, workers, scheduler), {}
    try:
        while pending or running:
            bar.update(_start_ready(pending, running, outcomes, pool, {j.run_dir for j in jobs}))
            for future in pool.wait_any(running) if running else ():
                job = running.pop(future)
                outcomes[job.run_dir] = _result(future, job)
                bar.update(1)
                bar.set_postfix_str(f"{job.name} {outcomes[job.run_dir].status}")
    finally:
        bar.close()
        pool.close()
    return [outcomes[j.run_dir] for j in jobs]


def summarize_outcomes(outcomes: Sequence[Outcome]) -> str:
    """Counts per status, then one line per failed run: dataset, method, seed, error."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    lines = ["grid: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines.append(f"{len(failed)} failed run(s):")
        lines += [f"  {o.job.dataset} {o.job.method} seed{o.job.seed}: {o.error}" for o in failed]
    return "\n".join(lines)
