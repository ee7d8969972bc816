"""Performance benchmark (issue 6): step overhead, decision latency, replay, store size, scaling.

    python reproduce/bench.py [--quick] [--threads 1] [--regroup-every 100] [--out results/bench.json]

Prints a table per figure and the budget table; writes ``results/bench.json`` with the keys
``step_overhead`` (list of ``{tasks, estimator_params, ratio, ...}``), ``decision_latency_s``
(``{entities: seconds}``), ``replay_s``, ``history_bytes_per_1000_steps``, ``event_bytes``,
``baseline_ratio`` (list of ``{tasks, estimator_params, method, ratio}``), ``scaling`` (fitted
exponents), ``budgets`` and ``details`` (everything measured).

On a machine shared with other work, wall times swing with the load: the step-overhead figures
are *ratios* of steps interleaved in one process (the load hits both sides alike), and each
decision is also given in process CPU time (it runs on one thread). ``--quick`` (minutes)
measures the 5k-parameter estimators only, with fewer steps; the full run takes tens of minutes.
Expected output: see the README's Performance section.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import bench_ddp
import bench_images
import bench_memory
import torch
from bench_decision import decision_latency
from bench_report import budget_rows, print_tables, scaling
from bench_steps import METHODS, SIZES, period_ratio, stack_paths, step_overhead
from bench_store import history_growth, make_run, replay_time, store_sizes

TASKS = (8, 40, 139)
#: Task counts with a step-ratio budget (measured over whole event periods as well).
BUDGET_TASKS = (40, 139)
#: ss/mtl step ratios of the previous release (estimators in a per-layer bank, signal read
#: from ``.grad`` after the backward pass), as its README reported them from this benchmark on
#: this project's 2-core machine; printed beside the current path's. (tasks, size) -> ratio.
PREVIOUS_RATIO = {(8, "5k"): 1.4, (40, "5k"): 1.15, (139, "5k"): 1.15,
                  (8, "500k"): 1.04, (40, "500k"): 1.06, (139, "500k"): 1.09}


def measure(args: argparse.Namespace, tmp: Path) -> dict:
    sizes_ = ("5k",) if args.quick else tuple(args.sizes)
    steps = 30 if args.quick else args.steps
    print("decision latency ...", flush=True)
    decisions = decision_latency(repeats=3 if args.quick else 7)
    print("replay run (50 events) ...", flush=True)
    run = make_run(tmp)
    replay = replay_time(run)
    sizes = store_sizes(run)
    history = history_growth(tmp)
    overhead = []
    for size in sizes_:
        for tasks in args.tasks:
            print(f"step overhead T={tasks} P={size} ...", flush=True)
            start = time.perf_counter()
            # 493k estimators: a step takes 0.05-1.5 s, so the baselines (tag: 3x an mtl step at
            # T=139) and more than one event period cost minutes each; --large-baselines adds them
            large = size != "5k"
            methods = METHODS if not large else (
                tuple(m for m in METHODS if m != "ss_countsketch") if args.large_baselines
                else ("mtl", "ss_similarity"))
            r = step_overhead(
                tasks, size, steps=min(steps, 12) if large and not args.large_baselines
                else steps, regroup_every=args.regroup_every, methods=methods
            )
            if tasks in BUDGET_TASKS:  # the budget figure: whole event periods, all included
                periods = min(args.periods, args.large_periods) if large else args.periods
                print(f"  {periods} event period(s) of {args.regroup_every} steps ...",
                      flush=True)
                r["period"] = period_ratio(tasks, size, periods=periods,
                                           regroup_every=args.regroup_every)
            r.update(size=size, seconds=time.perf_counter() - start,
                     stack_paths=stack_paths(tasks, size, steps=10 if args.quick else 30),
                     ratio_previous_release=PREVIOUS_RATIO.get((tasks, size)))
            overhead.append(r)
    images = None
    if not args.no_images:
        print("ResNet-18 trunk, 64x64 images: step ratio and images/s ...", flush=True)
        images = bench_images.measure(argparse.Namespace(
            device="cpu", amp="none", image_size=64, batch=64, steps=8 if args.quick else 16,
            warm=2, events=2, regroup_every=args.regroup_every, workers=2, read_batches=10))
    ddp = None
    if not args.no_ddp:
        print("2-process DDP (gloo) step ratio, T=40 ...", flush=True)
        ddp = bench_ddp.measure(argparse.Namespace(
            tasks=40, size="5k", steps=20 if args.quick else args.steps, warm=3, events=3,
            regroup_every=args.regroup_every, periods=args.periods))
    memory = None
    if not args.no_memory:
        print("peak memory, streamed images (2,000 and 20,000 generated images) ...", flush=True)
        memory = bench_memory.run([2000, 20000])
    table2 = {"path": args.table2_run}
    if Path(args.table2_run).exists():
        record = json.loads(Path(args.table2_run).read_text())
        runs = record.get("runs", {})  # the whole grid trained: nothing reused, nothing failed
        complete = runs.get("trained", 0) > 0 and not runs.get("skipped") and not runs.get("failed")
        if record.get("profile") == "quick" and len(record.get("datasets", [])) >= 5 and complete:
            table2.update(record)
    return {
        "memory": memory,
        "table2": table2,
        "ddp": ddp,
        "images": images,
        "decisions": decisions,
        "replay": replay,
        "sizes": sizes,
        "history": history,
        "overhead": overhead,
    }


def report(m: dict, args: argparse.Namespace) -> dict:
    steps = [
        {
            "tasks": r["tasks"],
            "estimator_params": r["estimator_params"],
            # the budget figure: total time over whole event periods (None: not measured)
            "ratio": r["period"]["ratio"] if "period" in r else None,
            "ratio_cpu": r["period"]["ratio_cpu"] if "period" in r else None,
            "period": r.get("period"),
            # the per-part model: median step + median event / period
            "ratio_median": r["ss_similarity"]["ratio"],
            "ratio_median_cpu": r["ss_similarity"]["ratio_cpu"],
            "mtl_step_s": r["mtl_step_s"],
            "event_s": r["ss_similarity"]["rare_s"],
            "ratio_previous_release": r["ratio_previous_release"],
            "vmap_over_einsum": r["stack_paths"]["vmap_over_einsum"],
            "regroup_every": args.regroup_every,
        }
        for r in m["overhead"]
    ]
    baselines = [
        {
            "tasks": r["tasks"],
            "estimator_params": r["estimator_params"],
            "method": k,
            "ratio": r[k]["ratio"],
            "ratio_cpu": r[k]["ratio_cpu"],
            "affinity_every": r[k]["period"],
        }
        for r in m["overhead"]
        for k in ("tag", "cosine_groups")
        if k in r
    ]
    return {
        "step_overhead": steps,
        "decision_latency_s": {str(e): d["cpu_s"] for e, d in m["decisions"].items()},
        "decision_latency_wall_s": {str(e): d["wall_s"] for e, d in m["decisions"].items()},
        "replay_s": m["replay"]["replay_s"],
        "history_bytes_per_1000_steps": m["sizes"]["history_bytes_per_1000_steps"],
        "event_bytes": m["sizes"]["event_bytes"],
        "baseline_ratio": baselines,
        "scaling": scaling(m["overhead"], m["decisions"], m["history"], m["replay"]),
        "images": m["images"],
        "ddp": m["ddp"],
        "budgets": budget_rows(steps, m["decisions"], m["replay"], m["sizes"], m["images"],
                               m["ddp"], baselines, m["memory"], m["table2"]),
        "details": {
            **m,
            "torch_threads": torch.get_num_threads(),
            "regroup_every": args.regroup_every,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k estimators only, fewer steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per method (>= 30)")
    parser.add_argument("--tasks", type=int, nargs="+", default=list(TASKS))
    parser.add_argument("--periods", type=int, default=3,
                        help="event periods timed whole for the step-ratio budgets (default 3)")
    parser.add_argument("--large-periods", type=int, default=1,
                        help="the same for 493k-parameter estimators (default 1: 100 steps of "
                             "up to 1.5 s each)")
    parser.add_argument("--large-baselines", action="store_true",
                        help="also time tag, cosine_groups and 40 median-model steps with 493k "
                             "estimators (adds about 10 minutes)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument(
        "--regroup-every",
        type=int,
        default=100,
        help="steps between grouping events, for the amortized event cost",
    )
    parser.add_argument("--no-ddp", action="store_true",
                        help="skip the 2-process DDP step ratio (about a minute)")
    parser.add_argument("--no-images", action="store_true",
                        help="skip the ResNet-18 image step ratio (about 1-2 minutes on a CPU)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the streamed-images peak memory runs (about 2 minutes)")
    parser.add_argument("--table2-run", default="runs/table2_run.json",
                        help="the timing record of a quick Table 2 run (written by "
                             "reproduce/table2.py) for its budget row")
    parser.add_argument("--out", default="results/bench.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ss_bench_") as tmp:
        out = report(measure(args, Path(tmp)), args)
    print_tables(out)
    if out["images"] is not None:
        print()
        bench_images.report(out["images"])
    if out["ddp"] is not None:
        print()
        bench_ddp.report(out["ddp"])
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
