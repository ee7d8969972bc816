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
import dataclasses
import json
import sys
import time
from pathlib import Path

import pandas as pd

from selective_sharing.analysis.table import collect_runs, summarize_runs, write_table
from selective_sharing.core.cli import add_set_option, parse_set
from selective_sharing.core.config import METHODS, PROFILES, ConfigError
from selective_sharing.core import store
from selective_sharing.core.linear import (
    LINEAR_METHODS,
    VAL_FRACTION,
    fit_linear,
    linear_applies,
    write_linear_run,
)
from selective_sharing.core.grid import (
    EXECUTORS,
    GridError,
    Job,
    plan_grid,
    run_grid,
    status_of,
    summarize_outcomes,
)
from selective_sharing.core.profiles import profile_defaults

DATASETS = ("synthetic", "school", "computer", "mnist_context", "shapes_context")
#: Names that stand for several table blocks: the Computer survey is published with a person's
#: 16 training items and with the first 8 (``computer_8``).
EXPANDS = {"computer": ("computer", "computer_8")}
SEEDS = {"quick": 3, "full": 5}
#: Datasets whose published protocol asks for more seeds than the profile's default: School is
#: evaluated on 10 random 75/25 splits (Evgeniou & Pontil 2004; Bakker & Heskes 2003).
DATASET_SEEDS = {"full": {"school": 10}}
#: Each dataset's evaluation protocol, stated in the table's footnotes.
PROTOCOLS = {
    "synthetic": "generated data (not a published benchmark); a seeded random split per seed; "
                 "main metric RMSE per task, mean over tasks",
    "school": "a seeded random 75/25 split of each school's students per seed (the protocol of "
              "Bakker & Heskes 2003 and Evgeniou & Pontil 2004, who report 10 splits; the full "
              "profile uses 10 seeds); main metric the explained variance over all test students "
              "pooled, 100 (1 - SSE/SST), in percent, as published; beside it nMSE and the mean "
              "over schools of each school's explained variance (which ignores a bias)",
    "computer": "the file's split: a person's 16 training items, 4 test items (Lenk et al. 1996; "
                "Argyriou et al. 2008); seeds change initialization only; main metric the rating "
                "RMSE over all test ratings (0-10 units), NDCG@10 per person beside it",
    "computer_8": "as computer, with only the first 8 training items per person",
    "mnist_context": "the dataset's test split; main metric accuracy, mean over tasks",
    "shapes_context": "generated scenes (not a published benchmark); accuracy, mean over tasks",
}
AFFINITY_METHODS = ("cosine_groups", "tag")
STL_IMAGE_STEP_DIVISOR = 3  # quick: stl trains image datasets for 1/3 of the steps


#: Seconds one quick-profile run took on this project's 2-core machine (training time recorded in
#: the runs' stores, 2026-12-02; the affinity baselines of the vector datasets 2026-12-04, after
#: their per-task gradients were batched), used only to start the longest runs first
#: (:func:`~selective_sharing.core.grid.longest_first`): a scheduling hint, never a result.
QUICK_SECONDS = {
    "synthetic": {"*": 2.5},
    "school": {"*": 3.5, "cosine_groups": 7.0, "tag": 8.5},
    "computer": {"*": 3.0, "cosine_groups": 2.0, "tag": 6.5},
    "computer_8": {"*": 3.0, "cosine_groups": 1.5, "tag": 5.0},
    "mnist_context": {"*": 13.0, "stl": 48.0, "cosine_groups": 19.0, "tag": 19.0},
    "shapes_context": {"*": 18.0, "stl": 106.0, "cosine_groups": 26.0, "tag": 27.0},
}
#: Seconds one full-profile run took (the training time recorded in the stores of the full grid of
#: 2026-12-04 evening, mean over seeds, rounded: the README's full table), for the same
#: scheduling only. The affinity baselines record over the whole run under the full protocol
#: (every 10th step) against about 3 times under the quick one, so on School and Computer their
#: full runs take 5-6.5x their quick ones (a School ``tag`` run 55 s against 8.5 s), not the 3x
#: of the steps.
FULL_SECONDS = {
    "synthetic": {"*": 3.0, "stl": 5.0, "mtl": 5.0, "ss_variance": 4.0, "cosine_groups": 8.0,
                  "tag": 12.0},
    "school": {"*": 3.0, "stl": 8.5, "mtl": 15.5, "ss_similarity": 13.5, "ss_variance": 13.5,
               "ss_kmeans": 9.5, "cosine_groups": 40.0, "tag": 55.0},
    "computer": {"*": 3.5, "stl": 6.0, "mtl": 5.5, "mtl_full": 1.0, "random_groups": 1.0,
                 "ss_variance": 5.0, "cosine_groups": 13.0, "tag": 37.0},
    "computer_8": {"*": 3.5, "stl": 6.0, "mtl": 4.5, "mtl_full": 1.0, "random_groups": 2.0,
                   "ss_kmeans": 2.5, "cosine_groups": 8.0, "tag": 32.5},
}
#: Seconds a run costs beyond its training (worker start, data, evaluation, activations).
RUN_OVERHEAD_S = 3.0


def job_cost(job: Job) -> float:
    """Estimated seconds of a job, for longest-first scheduling: the run's own recorded training
    time when an earlier run of the same dataset, method and profile exists in the runs folder
    (any seed), else the profile's hint (:data:`QUICK_SECONDS`; :data:`FULL_SECONDS`, or for a
    dataset without a full measurement its quick seconds times the full profile's step factor,
    3, and ``stl``'s quick image divisor), else the overhead alone."""
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
    return RUN_OVERHEAD_S + hinted_seconds(job.dataset, job.method, job.profile)


def hinted_seconds(dataset: str, method: str, profile: str) -> float:
    """The training seconds :func:`job_cost` assumes for a run that has no earlier run to go by
    (0 for a dataset without a hint)."""
    def pick(table: dict[str, dict[str, float]]) -> float | None:
        hints = table.get(dataset)
        return None if hints is None else hints.get(method, hints.get("*", 0.0))

    if profile == "quick":
        return pick(QUICK_SECONDS) or 0.0
    full = pick(FULL_SECONDS)
    if full is not None:
        return full
    quick = pick(QUICK_SECONDS) or 0.0
    quick_steps = profile_defaults(dataset, "quick")["train"]["steps"]
    full_steps = profile_defaults(dataset, profile)["train"]["steps"]
    own_steps = method_overrides("quick", dataset, method).get("train.steps", quick_steps)
    return quick * full_steps / float(own_steps)


def method_overrides(
    profile: str, dataset: str, method: str, extra: dict[str, str] | None = None
) -> dict[str, object]:
    """Per-profile, per-method config overrides (listed in the table's footnotes).

    quick: ``cosine_groups`` and ``tag`` record only during the Selective Sharing warm-up
    window, about 3 times: the same evidence window that ``ss_*`` decide from (chosen when
    each task's gradient cost its own backward pass, and TAG's protocol would have dominated
    the grid; kept so the quick table stays comparable). full follows TAG (every 10th step,
    whole run).

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python reproduce/table2.py", description=__doc__.split("\n")[0]
    )
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="NAME",
                   help="datasets (computer also adds computer_8, its 8-item version)")
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
    p.add_argument("--no-linear", action="store_true",
                   help="no linear baseline rows (ridge per task / pooled / pooled + intercepts)")
    return p


NOTES = (
    (
        "Mean ± sample std (ddof=1) over complete seeds. The dataset's variant (real / "
        "substitute / synthetic) follows its name."
    ),
    (
        "Best per column in bold: the main metric in its direction, fewest parameters, highest "
        "ARI, fewest backward passes, shortest wall time (ties at display precision are all "
        "bold)."
    ),
    (
        "ARI: adjusted Rand index of the final groups against the true groups. random_groups, "
        "cosine_groups and tag form as many groups as ss_similarity found (same dataset, seed)."
    ),
    (
        "Linear baselines (regression and rank data): ridge_per_task (a ridge regression per "
        "task), ridge_pooled (one for all tasks), ridge_pooled_intercept (one weight vector, an "
        f"intercept per task). Each penalty is chosen on a validation split of {VAL_FRACTION:.0%} "
        "of each task's training rows, then refitted on the whole training part (the rows every "
        "trained method fits), and scored once on the same test split with the same metrics."
    ),
    (
        "Backward passes include the per-task passes of the affinity baselines; wall time is the "
        "training time recorded in each run's store (one torch thread per run)."
    ),
)


def footnotes(args: argparse.Namespace, methods: list[str], extra: dict[str, str]) -> list[str]:
    """The table's notes: how to read it and every override that was applied."""
    per = {d: seeds_for(args, d) for d in args.datasets}
    counts = sorted(set(per.values()))
    seeds = (f"seeds 0..{counts[0] - 1}" if len(counts) == 1 else "seeds " + "; ".join(
        f"{d} 0..{n - 1}" for d, n in per.items()))
    notes = [f"Profile {args.profile}, {seeds}.", *NOTES]
    notes += [f"Protocol, {d}: {PROTOCOLS[d]}." for d in args.datasets if d in PROTOCOLS]
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


def seeds_for(args: argparse.Namespace, dataset: str) -> int:
    """How many seeds ``dataset`` runs: ``--seeds`` when given, else the profile's default or the
    dataset's published protocol (:data:`DATASET_SEEDS`)."""
    if args.seeds is not None:
        return args.seeds
    return DATASET_SEEDS.get(args.profile, {}).get(dataset, SEEDS[args.profile])


def _reusable(run_dir: Path, data_config: dict) -> bool:
    """A complete linear baseline run of the same data config (else it is fitted again: it
    costs seconds)."""
    if status_of(run_dir) != "complete":
        return False
    return store.read_manifest(run_dir).get("data_config") == data_config


def linear_runs(args: argparse.Namespace, extra: dict[str, str]) -> list[str]:
    """Fit and store the linear baselines of every regression/rank dataset and seed (complete
    ones are reused); returns one line per failure (a failure does not stop the others)."""
    from selective_sharing.core.config import make_config
    from selective_sharing.datasets import load_dataset

    failures = []
    for dataset in args.datasets:
        for seed in range(seeds_for(args, dataset)):
            try:
                cfg = make_config(dataset, "mtl", seed, args.profile,
                                  {"data.allow_substitute": True, **extra})
                d = cfg.data
                wanted = json.loads(json.dumps(dataclasses.asdict(d)))  # as the manifest has it
                todo = [m for m in LINEAR_METHODS if not _reusable(
                    Path(args.runs) / dataset / m / f"seed{seed}", wanted)]
                if not todo:
                    continue
                data = load_dataset(d.name, profile=cfg.profile, seed=seed,
                                    data_root=d.data_root, allow_substitute=d.allow_substitute,
                                    **{**d.options, "val_fraction": VAL_FRACTION})
                if not linear_applies(data):
                    break
                for method in todo:
                    fit = fit_linear(data, method)
                    write_linear_run(Path(args.runs) / dataset / method / f"seed{seed}", data,
                                     fit, seed=seed, profile=args.profile, dataset=dataset,
                                     data_config=wanted)
            except Exception as err:  # noqa: BLE001 - listed at the end, like a failed run
                failures.append(f"{dataset}/linear/seed{seed}: {type(err).__name__}: {err}")
    return failures


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
        "profile": args.profile, "datasets": list(args.datasets),
        "seeds": {d: seeds_for(args, d) for d in args.datasets},
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
    args.datasets = list(dict.fromkeys(d for name in args.datasets
                                       for d in EXPANDS.get(name, (name,))))
    start = time.perf_counter()
    try:
        if args.seeds is not None and args.seeds < 1:
            raise ConfigError(f"invalid --seeds {args.seeds}: a positive integer")
        extra = parse_set(args.overrides)
        jobs = [job for d in args.datasets for job in plan_grid(
            [d], args.methods, range(seeds_for(args, d)), args.profile, args.runs,
            lambda d, m: {**method_overrides(args.profile, d, m, extra), **extra})]
        outcomes = run_grid(
            jobs, args.executor, args.workers, args.scheduler, progress=not args.no_progress,
            cost=job_cost,
        )
        linear_failures = [] if args.no_linear else linear_runs(args, extra)
    except (ConfigError, GridError) as err:
        sys.exit(f"error: {err}")
    methods = list(dict.fromkeys(j.method for j in jobs))
    methods.sort(key=METHODS.index)
    optional = () if args.no_linear else LINEAR_METHODS
    runs = pd.concat([collect_runs(args.runs, [d], methods, range(seeds_for(args, d)),
                                   optional_methods=optional) for d in args.datasets],
                     ignore_index=True)
    paths = write_table(summarize_runs(runs), args.out, footnotes(args, methods, extra))
    wall, cpu = time.perf_counter() - start, _cpu_seconds()
    if any(o.status == "trained" for o in outcomes):  # a rerun that trains nothing keeps it
        paths.append(_write_timing(args, outcomes, wall, cpu))
    print(summarize_outcomes(outcomes))
    for line in linear_failures:
        print(f"failed: {line}")
    print(f"wrote {', '.join(map(str, paths))}")
    print(
        f"wall time {wall:.1f} s; CPU time {cpu:.1f} s "
        "(this process and its finished local workers)"
    )
    return 1 if linear_failures or any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
