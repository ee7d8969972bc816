"""Table 2: every method on the five default datasets over several seeds.

    python reproduce/table2.py --profile quick            # about 15-30 min on 2 CPU cores
    python reproduce/table2.py --executor dask --scheduler tcp://HOST:8786

Each (dataset, method, seed) trains into ``RUNS/<dataset>/<method>/seed<k>/``. Complete runs
are reused; failed or interrupted ones are deleted and trained again from scratch, so a killed
grid resumes where it stopped. A failed run does not stop the grid: failures are listed at the
end (exit status 1). The table is rebuilt from the stores alone and written to
``OUT/table2.{md,tex,csv}``; rebuilding it from the same stores gives identical files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from selective_sharing.analysis.table import collect_runs, summarize_runs, write_table
from selective_sharing.core.cli import add_set_option
from selective_sharing.core.config import METHODS, PROFILES, ConfigError
from selective_sharing.core import store
from selective_sharing.core.grid import (
    EXECUTORS,
    GridError,
    Job,
    plan_grid,
    run_grid,
    summarize_outcomes,
)
from selective_sharing.core.profiles import profile_defaults

DATASETS = ("synthetic", "school", "computer", "mnist_context", "shapes_context")
SEEDS = {"quick": 3, "full": 5}
AFFINITY_METHODS = ("cosine_groups", "tag")
STL_IMAGE_STEP_DIVISOR = 3  # quick: stl trains image datasets for 1/3 of the steps


#: Seconds one quick-profile run took on this project's 2-core machine (training time recorded in
#: the runs' stores, 2026-12-02), used only to start the longest runs first
#: (:func:`~selective_sharing.core.grid.longest_first`): a scheduling hint, never a result.
QUICK_SECONDS = {
    "synthetic": {"*": 2.5},
    "school": {"*": 3.5, "cosine_groups": 19.0, "tag": 24.0},
    "computer": {"*": 3.0, "cosine_groups": 20.0, "tag": 29.0},
    "mnist_context": {"*": 13.0, "stl": 48.0, "cosine_groups": 19.0, "tag": 19.0},
    "shapes_context": {"*": 18.0, "stl": 106.0, "cosine_groups": 26.0, "tag": 27.0},
}
#: Seconds a run costs beyond its training (worker start, data, evaluation, activations).
RUN_OVERHEAD_S = 3.0


def job_cost(job: Job) -> float:
    """Estimated seconds of a job, for longest-first scheduling: the run's own recorded training
    time when an earlier run of the same dataset, method and profile exists in the runs folder
    (any seed), else :data:`QUICK_SECONDS` (scaled by 2.5 for the full profile, whose runs are
    longer), else the overhead alone."""
    folder = Path(job.run_dir).parent
    for run in sorted(folder.glob("seed*")):
        metrics = run / "metrics.nc"
        if metrics.exists():
            try:
                manifest = store.read_manifest(run)
                if manifest.get("config", {}).get("profile", job.profile) == job.profile:
                    return RUN_OVERHEAD_S + float(store.read_metrics(run)["wall_time_s"])
            except Exception:  # noqa: BLE001 - a hint only: an unreadable run is no estimate
                pass
    hints = QUICK_SECONDS.get(job.dataset, {})
    seconds = hints.get(job.method, hints.get("*", 0.0))
    return RUN_OVERHEAD_S + seconds * (1.0 if job.profile == "quick" else 2.5)


def method_overrides(
    profile: str, dataset: str, method: str, extra: dict[str, str] | None = None
) -> dict[str, object]:
    """Per-profile, per-method config overrides (listed in the table's footnotes).

    quick: ``cosine_groups`` and ``tag`` pay one backward pass per task (and ``tag`` one forward
    pass per task) at every recording step; with 139 (school) or 180 (computer) tasks, TAG's
    protocol (every 10th step of the whole run) would dominate the grid. In quick they record
    only during the Selective Sharing warm-up window, about 3 times: the same evidence window
    that ``ss_*`` decide from. full follows TAG (every 10th step, whole run).

    quick also trains ``stl`` on the image datasets for a third of the steps: its T independent
    CNN trunks make each step about 9x an mtl step (mnist_context: 570 vs 60 ms on one core),
    so equal steps would make stl alone about half of the grid's CPU time. Its image rows are
    therefore an under-trained stl (the footnote says so); full trains it for the same steps as
    every other method. ``extra``: the ``--set`` overrides (``train.steps`` and
    ``sharing.warmup_steps`` given there scale these too).
    """
    if profile != "quick":
        return {}
    defaults, extra = profile_defaults(dataset, profile), extra or {}
    if method == "stl" and "conv_channels" in defaults["model"]:
        steps = int(extra.get("train.steps", defaults["train"]["steps"]))
        return {"train.steps": max(1, steps // STL_IMAGE_STEP_DIVISOR)}
    if method not in AFFINITY_METHODS:
        return {}
    warmup = int(extra.get("sharing.warmup_steps", defaults["sharing"]["warmup_steps"]))
    return {"baseline.affinity_steps": warmup, "baseline.affinity_every": max(1, warmup // 3)}


def _parse_set(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid --set {item!r}: expected KEY=VALUE, e.g. train.steps=30")
        out[key.strip()] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python reproduce/table2.py", description=__doc__.split("\n")[0]
    )
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="NAME")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (quick 3, full 5)")
    p.add_argument(
        "--executor",
        default="local",
        choices=EXECUTORS,
        help="local processes (default), dask, or serial (this process; debugging)",
    )
    p.add_argument(
        "--scheduler", default=None, help="dask scheduler address (default: a LocalCluster)"
    )
    p.add_argument("--workers", type=int, default=2, help="local processes / LocalCluster workers")
    p.add_argument("--runs", default="runs", help="folder of the run stores")
    p.add_argument("--out", default="results", help="folder for table2.{md,tex,csv}")
    add_set_option(p, "config override for every run, e.g. train.steps=30 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


NOTES = (
    (
        "Mean ± sample std (ddof=1) over complete seeds. The dataset's variant (real / substitute / "
        "synthetic) follows its name."
    ),
    (
        "Best per column in bold: the main metric in its direction, fewest parameters, highest ARI, "
        "fewest backward passes, shortest wall time (ties at display precision are all bold)."
    ),
    (
        "ARI: adjusted Rand index of the final groups against the true groups. random_groups, "
        "cosine_groups and tag form as many groups as ss_similarity found (same dataset, seed)."
    ),
    (
        "Backward passes include the per-task passes of the affinity baselines; wall time is the "
        "training time recorded in each run's store (one torch thread per run)."
    ),
)


def footnotes(args: argparse.Namespace, methods: list[str], extra: dict[str, str]) -> list[str]:
    """The table's notes: how to read it and every override that was applied."""
    notes = [f"Profile {args.profile}, seeds 0..{args.seeds - 1}.", *NOTES]
    for method in (m for m in ("stl", *AFFINITY_METHODS) if m in methods):
        per = {d: method_overrides(args.profile, d, method, extra) for d in args.datasets}
        if any(per.values()):
            text = "; ".join(
                f"{d}: " + ", ".join(f"{k}={v}" for k, v in o.items())
                for d, o in per.items()
                if o
            )
            notes.append(f"{args.profile} override for {method}: {text}.")
    if extra:
        notes.append("Overrides for every run: " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    return notes


def _cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children: on a shared machine the
    wall time says little, the CPU time says what a dedicated one would need."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _write_timing(args: argparse.Namespace, outcomes: list, wall: float, cpu: float) -> Path:
    """``table2_run.json`` in the runs folder: how long this call took, how many runs it trained
    or skipped, and on what (read by ``reproduce/bench.py`` for the quick-Table-2 budget row,
    which counts only a call that trained every run). Written only by a call that trained
    something: a rerun over complete runs leaves the folder untouched."""
    import datetime
    import json
    import os

    import torch
    from selective_sharing.core.rundir import versions_and_revision

    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    record = {
        "profile": args.profile, "datasets": list(args.datasets), "seeds": args.seeds,
        "workers": args.workers, "executor": args.executor, "wall_s": wall, "cpu_s": cpu,
        "runs": counts, "cpus": os.cpu_count(), "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **versions_and_revision(),
    }
    path = Path(args.runs) / "table2_run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.seeds = SEEDS[args.profile] if args.seeds is None else args.seeds
    start = time.perf_counter()
    try:
        if args.seeds < 1:
            raise ConfigError(f"invalid --seeds {args.seeds}: a positive integer")
        extra = _parse_set(args.overrides)
        jobs = plan_grid(
            args.datasets,
            args.methods,
            range(args.seeds),
            args.profile,
            args.runs,
            lambda d, m: {**method_overrides(args.profile, d, m, extra), **extra},
        )
        outcomes = run_grid(
            jobs, args.executor, args.workers, args.scheduler, progress=not args.no_progress,
            cost=job_cost,
        )
    except (ConfigError, GridError) as err:
        sys.exit(f"error: {err}")
    methods = list(dict.fromkeys(j.method for j in jobs))
    methods.sort(key=METHODS.index)
    runs = collect_runs(args.runs, args.datasets, methods, range(args.seeds))
    paths = write_table(summarize_runs(runs), args.out, footnotes(args, methods, extra))
    wall, cpu = time.perf_counter() - start, _cpu_seconds()
    if any(o.status == "trained" for o in outcomes):  # a rerun that trains nothing keeps it
        paths.append(_write_timing(args, outcomes, wall, cpu))
    print(summarize_outcomes(outcomes))
    print(f"wrote {', '.join(map(str, paths))}")
    print(
        f"wall time {wall:.1f} s; CPU time {cpu:.1f} s "
        "(this process and its finished local workers)"
    )
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
