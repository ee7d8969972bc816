"""The ss/mtl step ratio of a 2-process data-parallel run (DDP, gloo, CPU; issue 12).

    python reproduce/bench_ddp.py [--tasks 40] [--size 5k] [--steps 40] [--out results/bench_ddp.json]

Two processes (spawned here, ``gloo`` on localhost, one thread each) each build an ``mtl`` and
an ``ss_similarity`` trainer in ``DistributedDataParallel`` on the benchmark's synthetic data
(full-batch steps, each rank half of every batch) and step them in turn, as
``reproduce/bench.py`` does in one process; the grouping event (window reduction across ranks,
decision on rank 0, broadcast, merge, DDP rebuilt, rank 0's writes queued on its background
writer) is timed apart and amortized over ``--regroup-every`` steps (the median model), and
``--periods`` whole event periods are timed with everything in them (the budget figure, as
``bench_steps.period_ratio``). Rank 0's figures are reported, beside the same
measurement in one process (one thread) for comparison: what DDP adds to the ratio is the
difference. Budget: <= 1.05 at T = 40 (README, "Performance").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path

import torch

BUDGET = 1.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _interleaved(args: argparse.Namespace) -> dict:
    from bench_steps import _summary, _trainers, interleaved

    return interleaved(
        lambda root: _trainers(args.tasks, args.size, root, args.regroup_every,
                               args.warm + args.steps // 2, ("mtl", "ss_similarity")),
        steps=args.steps, warm=args.warm, regroup_every=args.regroup_every,
        n_events=args.events, summary=lambda times: _summary(args.tasks, args.size, times))


def _rank(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    try:
        from bench_steps import period_ratio

        r = _interleaved(args)
        r["period"] = period_ratio(args.tasks, args.size, periods=args.periods,
                                   regroup_every=args.regroup_every)
        if rank == 0:
            Path(out).write_text(json.dumps(r, default=float))
    finally:
        torch.distributed.destroy_process_group()


def measure(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="ss_bench_ddp_") as tmp:
        out = str(Path(tmp) / "rank0.json")
        torch.multiprocessing.spawn(_rank, args=(_free_port(), args, out), nprocs=2, join=True)
        r = json.loads(Path(out).read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from bench_steps import period_ratio

        one = period_ratio(args.tasks, args.size, periods=args.periods,
                           regroup_every=args.regroup_every)["ratio"]
    finally:
        torch.set_num_threads(threads)
    ss = r["ss_similarity"]
    return {"ratio_one_process": one, "processes": 2, "backend": "gloo", "tasks": args.tasks,
            "estimator_params": r["estimator_params"], "ratio": r["period"]["ratio"],
            "ratio_cpu_time": r["period"]["ratio_cpu"], "ratio_median_model": ss["ratio"],
            "period": r["period"], "mtl_step_s": r["mtl_step_s"],
            "event_s": ss["rare_s"], "regroup_every": args.regroup_every, "budget": BUDGET,
            "torch": torch.__version__, "steps": args.steps}


def report(m: dict) -> None:
    verdict = "met" if m["ratio"] <= m["budget"] else "MISSED"
    print(f"2-process DDP (gloo, CPU, 1 thread each), T={m['tasks']}, "
          f"{m['estimator_params']} parameters per estimator (torch {m['torch']})")
    print(f"  mtl step {m['mtl_step_s'] * 1e3:.1f} ms; ss event {m['event_s'] * 1e3:.0f} ms every "
          f"{m['regroup_every']} steps")
    print(f"  ss/mtl step ratio over {m['period']['steps']} steps with {m['period']['events']} "
          f"events {m['ratio']:.3f} (CPU time {m['ratio_cpu_time']:.3f}; median model "
          f"{m['ratio_median_model']:.3f}); budget <= {m['budget']}: {verdict}; one process, "
          f"same data: {m['ratio_one_process']:.3f}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--size", default="5k", choices=("5k", "500k"))
    p.add_argument("--steps", type=int, default=40, help="timed steps per method")
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--events", type=int, default=3, help="events timed for the median")
    p.add_argument("--regroup-every", type=int, default=100)
    p.add_argument("--periods", type=int, default=3,
                   help="event periods timed whole (the budget figure)")
    p.add_argument("--out", default="results/bench_ddp.json")
    return p


def main() -> None:
    args = parser().parse_args()
    m = measure(args)
    report(m)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m, indent=2))


if __name__ == "__main__":
    main()
