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

import numpy as np
import torch
from bench_decision import decision_latency
from bench_steps import METHODS, SIZES, patch_sparse_path, step_overhead
from bench_store import history_growth, make_run, replay_time, store_sizes

TASKS = (8, 40, 139)
BUDGETS = {"ratio_T40": 1.05, "ratio_T139": 1.10, "decision_139_s": 0.05, "decision_500_s": 1.0,
           "replay_50_s": 1.0, "history_T40_bytes": 2e6, "event_T40_bytes": 2e6}


def exponent(x: list[float], y: list[float]) -> float | None:
    """Slope of log(y) against log(x) (least squares); None with fewer than 2 distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0)
    if len(np.unique(x[ok])) < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def scaling(rows: list[dict], decisions: dict, history: list[dict], replay: dict) -> dict:
    """Exponents b of ``figure ~ x^b`` for x = tasks T, estimator parameters P, steps, events."""
    out: dict[str, object] = {}
    for size in {r["size"] for r in rows}:
        sub = [r for r in rows if r["size"] == size]
        t = [r["tasks"] for r in sub]
        out[f"mtl_step_vs_T[{size}]"] = exponent(t, [r["mtl_step_s"] for r in sub])
        out[f"ss_step_vs_T[{size}]"] = exponent(t, [r["ss_step_s"] for r in sub])
        out[f"ss_event_vs_T[{size}]"] = exponent(t, [r["event_s"] for r in sub])
        out[f"event_bytes_vs_T[{size}]"] = exponent(t, [r["event_bytes"] for r in sub])
    for tasks in {r["tasks"] for r in rows}:
        sub = [r for r in rows if r["tasks"] == tasks]
        p = [r["estimator_params"] for r in sub]
        out[f"ss_step_vs_P[T={tasks}]"] = exponent(p, [r["ss_step_s"] for r in sub])
        out[f"event_bytes_vs_P[T={tasks}]"] = exponent(p, [r["event_bytes"] for r in sub])
    e = sorted(decisions)
    out["decision_cpu_vs_E"] = exponent(e, [decisions[k]["cpu_s"] for k in e])
    for t in sorted({h["tasks"] for h in history}):
        sub = [h for h in history if h["tasks"] == t]
        out[f"history_bytes_vs_steps[T={t}]"] = exponent([h["steps"] for h in sub],
                                                        [h["bytes"] for h in sub])
        out[f"history_write_vs_steps[T={t}]"] = exponent([h["steps"] for h in sub],
                                                        [h["write_s"] for h in sub])
    longest = max(h["steps"] for h in history)
    sub = [h for h in history if h["steps"] == longest]
    out["history_bytes_vs_T"] = exponent([h["tasks"] for h in sub], [h["bytes"] for h in sub])
    by = replay["by_events_s"]
    out["replay_vs_events"] = exponent(list(by), list(by.values()))
    return out


def _row(r: dict, size: str) -> dict:
    ss = r["ss_similarity"]
    return {"size": size, "tasks": r["tasks"], "estimator_params": r["estimator_params"],
            "mtl_step_s": r["mtl_step_s"], "ss_step_s": ss["step_s"], "event_s": ss["rare_s"],
            "event_bytes": r["event_bytes"]}


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    lines = [f"\n### {title}", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def budget_rows(steps: list[dict], decisions: dict, replay: dict, sizes: dict) -> list[dict]:
    rows = []
    for r in steps:
        if r["tasks"] in (40, 139):
            limit = BUDGETS["ratio_T40"] if r["tasks"] == 40 else BUDGETS["ratio_T139"]
            rows.append({"figure": f"ss/mtl step, T={r['tasks']}, P={r['estimator_params']}",
                         "budget": limit, "measured": r["ratio"],
                         "met": r["ratio"] <= limit})
    for e, key in ((139, "decision_139_s"), (500, "decision_500_s")):
        if e in decisions:
            d = decisions[e]
            rows.append({"figure": f"decision E={e} (CPU s; wall {d['wall_s']:.3f})",
                         "budget": BUDGETS[key], "measured": d["cpu_s"],
                         "met": d["cpu_s"] <= BUDGETS[key]})
    rows.append({"figure": f"replay of {replay['n_events']} events (s)",
                 "budget": BUDGETS["replay_50_s"], "measured": replay["replay_s"],
                 "met": replay["replay_s"] <= BUDGETS["replay_50_s"]})
    for key, name in (("history_bytes_per_1000_steps", "history_T40_bytes"),
                      ("event_bytes", "event_T40_bytes")):
        rows.append({"figure": f"{key}, T=40", "budget": BUDGETS[name],
                     "measured": sizes[key], "met": sizes[key] <= BUDGETS[name]})
    return rows


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
            methods = METHODS if size == "5k" else tuple(m for m in METHODS if m != "ss_countsketch")
            r = step_overhead(tasks, size, steps=steps, regroup_every=args.regroup_every,
                              methods=methods)
            r.update(size=size, seconds=time.perf_counter() - start)
            overhead.append(r)
    return {"decisions": decisions, "replay": replay, "sizes": sizes, "history": history,
            "overhead": overhead}


def report(m: dict, args: argparse.Namespace) -> dict:
    steps = [{"tasks": r["tasks"], "estimator_params": r["estimator_params"],
              "ratio": r["ss_similarity"]["ratio"], "ratio_cpu": r["ss_similarity"]["ratio_cpu"],
              "ratio_async_writes": r["ss_similarity"]["ratio_async_writes"],
              "mtl_step_s": r["mtl_step_s"], "event_s": r["ss_similarity"]["rare_s"],
              "regroup_every": args.regroup_every} for r in m["overhead"]]
    baselines = [{"tasks": r["tasks"], "estimator_params": r["estimator_params"], "method": k,
                  "ratio": r[k]["ratio"], "ratio_cpu": r[k]["ratio_cpu"],
                  "affinity_every": r[k]["period"]}
                 for r in m["overhead"] for k in ("tag", "cosine_groups")]
    rows = [_row(r, r["size"]) for r in m["overhead"]]
    return {
        "step_overhead": steps,
        "decision_latency_s": {str(e): d["cpu_s"] for e, d in m["decisions"].items()},
        "decision_latency_wall_s": {str(e): d["wall_s"] for e, d in m["decisions"].items()},
        "replay_s": m["replay"]["replay_s"],
        "history_bytes_per_1000_steps": m["sizes"]["history_bytes_per_1000_steps"],
        "event_bytes": m["sizes"]["event_bytes"],
        "baseline_ratio": baselines,
        "scaling": scaling(rows, m["decisions"], m["history"], m["replay"]),
        "budgets": budget_rows(steps, m["decisions"], m["replay"], m["sizes"]),
        "details": {**m, "torch_threads": torch.get_num_threads(),
                    "regroup_every": args.regroup_every, "sparse_path_patched": not args.as_is},
    }


def _g(r: dict, method: str, key: str) -> object:
    return r[method][key] if method in r else "-"


def print_tables(out: dict) -> None:
    d, s, r = out["details"], out["details"]["sizes"], out["details"]["replay"]
    ov = d["overhead"]
    tables = [
        ("Step overhead: amortized step time / mtl step time (wall; CPU)",
         ["T", "P/estimator", "mtl ms", "ss", "ss CPU", "ss async writes", "ss countsketch",
          "tag", "cosine_groups"],
         [[x["tasks"], x["estimator_params"], 1e3 * x["mtl_step_s"],
           *(x["ss_similarity"][k] for k in ("ratio", "ratio_cpu", "ratio_async_writes")),
           _g(x, "ss_countsketch", "ratio"), x["tag"]["ratio"], x["cosine_groups"]["ratio"]]
          for x in ov]),
        ("ss event and flush, wall seconds",
         ["T", "P/estimator", "event", "decide", "event file", "history", "checkpoint", "rest",
          "flush", "countsketch flush"],
         [[x["tasks"], x["estimator_params"], x["ss_similarity"]["rare_s"],
           *x["ss_similarity"]["event_split"].values(), x["ss_similarity"]["flush_s"],
           _g(x, "ss_countsketch", "flush_s")] for x in ov]),
        ("Decision latency, (E, 64, 128) gradients", ["E", "CPU ms", "wall ms", "groups", "ARI"],
         [[e, 1e3 * v["cpu_s"], 1e3 * v["wall_s"], v["groups"], v["ari"]]
          for e, v in d["decisions"].items()]),
        (f"Replay of a {r['n_events']}-event run (T=40, matched={r['matched']})",
         ["part", "wall s", "CPU s"],
         [["replay()", r["replay_s"], r["replay_cpu_s"]],
          ["read + decode events", r["read_s"], r["read_cpu_s"]],
          ["recompute decisions", r["decide_s"], r["decide_cpu_s"]]]),
        (f"Store of that run ({s['steps']} steps, {s['n_events']} events)", ["file", "bytes"],
         [[k, v] for k, v in s["files"].items()]
         + [["events/ (all)", s["events_total_bytes"]], ["one event (mean)", s["event_bytes"]],
            ["history per 1000 steps", s["history_bytes_per_1000_steps"]]]),
        ("One event file by variable", ["variable", "compressed bytes", "raw bytes"],
         [[k, v, s["event_var_raw_bytes"][k]] for k, v in s["event_var_bytes"].items()]),
        ("Scaling exponents b (figure ~ x^b)", ["figure", "b"],
         [[k, v] for k, v in out["scaling"].items()]),
        ("Budgets", ["figure", "budget", "measured", "met"],
         [[b["figure"], b["budget"], b["measured"], b["met"]] for b in out["budgets"]]),
    ]
    for title, header, rows in tables:
        print(table(title, header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k estimators only, fewer steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per method (>= 30)")
    parser.add_argument("--tasks", type=int, nargs="+", default=list(TASKS))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--regroup-every", type=int, default=100,
                        help="steps between grouping events, for the amortized event cost")
    parser.add_argument("--as-is", action="store_true",
                        help="do not patch MTLNet._sparse (see bench_steps.patch_sparse_path)")
    parser.add_argument("--out", default="results/bench.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.as_is:
        patch_sparse_path()
    with tempfile.TemporaryDirectory(prefix="ss_bench_") as tmp:
        out = report(measure(args, Path(tmp)), args)
    print_tables(out)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
