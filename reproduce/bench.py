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
import torch
from bench_decision import decision_latency
from bench_report import budget_rows, print_tables, scaling
from bench_steps import METHODS, SIZES, stack_paths, step_overhead
from bench_store import history_growth, make_run, replay_time, store_sizes

TASKS = (8, 40, 139)
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
            methods = (
                METHODS if size == "5k" else tuple(m for m in METHODS if m != "ss_countsketch")
            )
            r = step_overhead(
                tasks, size, steps=steps, regroup_every=args.regroup_every, methods=methods
            )
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
            regroup_every=args.regroup_every))
    return {
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
            "ratio": r["ss_similarity"]["ratio"],
            "ratio_cpu": r["ss_similarity"]["ratio_cpu"],
            "ratio_async_writes": r["ss_similarity"]["ratio_async_writes"],
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
                               m["ddp"]),
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
