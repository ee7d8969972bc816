"""Tables, budgets and scaling fits of ``reproduce/bench.py`` (issue 6): pure formatting of
the measured figures; no timing happens here."""

from __future__ import annotations

import numpy as np

BUDGETS = {
    "ratio_T40": 1.05,
    "ratio_T139": 1.10,
    "decision_139_s": 0.05,
    "decision_500_s": 1.0,
    "replay_50_s": 1.0,
    "history_T40_bytes": 2e6,
    "event_T40_bytes": 2e6,
    "table2_quick_s": 900.0,
}


def exponent(x: list[float], y: list[float]) -> float | None:
    """Slope of log(y) against log(x) (least squares); None with fewer than 2 distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0)
    if len(np.unique(x[ok])) < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def scaling(overhead: list[dict], decisions: dict, history: list[dict], replay: dict) -> dict:
    """Exponents b of ``figure ~ x^b`` for x = tasks T, estimator parameters P, steps, events."""
    rows = [_row(r, r["size"]) for r in overhead]
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
        out[f"history_bytes_vs_steps[T={t}]"] = exponent(
            [h["steps"] for h in sub], [h["bytes"] for h in sub]
        )
        out[f"history_write_vs_steps[T={t}]"] = exponent(
            [h["steps"] for h in sub], [h["write_s"] for h in sub]
        )
    longest = max(h["steps"] for h in history)
    sub = [h for h in history if h["steps"] == longest]
    out["history_bytes_vs_T"] = exponent([h["tasks"] for h in sub], [h["bytes"] for h in sub])
    by = replay["by_events_s"]
    out["replay_vs_events"] = exponent(list(by), list(by.values()))
    return out


def _row(r: dict, size: str) -> dict:
    ss = r["ss_similarity"]
    return {
        "size": size,
        "tasks": r["tasks"],
        "estimator_params": r["estimator_params"],
        "mtl_step_s": r["mtl_step_s"],
        "ss_step_s": ss["step_s"],
        "event_s": ss["rare_s"],
        "event_bytes": r["event_bytes"],
    }


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    lines = [f"\n### {title}", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def budget_rows(steps: list[dict], decisions: dict, replay: dict, sizes: dict,
                images: dict | None = None, ddp: dict | None = None,
                baselines: list[dict] | None = None, memory: dict | None = None,
                table2: dict | None = None) -> list[dict]:
    """One row per budget: ``{figure, budget, measured, met}``; ``met`` is None where the
    figure cannot be measured here (the GPU budget without a GPU, a Table 2 run not found)."""
    rows = []
    if ddp is not None:
        rows.append({
            "figure": f"ss/mtl step, 2-process DDP (gloo, CPU), T={ddp['tasks']} (one process: "
                      f"{ddp['ratio_one_process']:.3f})",
            "budget": ddp["budget"], "measured": ddp["ratio"], "met": ddp["ratio"] <= ddp["budget"]})
    if images is not None:
        gpu = str(images["device"]).startswith("cuda")
        rows.append({
            "figure": f"ss/mtl step on a GPU, resnet18 trunk {images['image_size']}px"
                      + ("" if gpu else f" (no GPU here: measured on {images['device']}, "
                         f"{images['ratio']:.3f}, {images['ss_images_per_s']:.0f} images/s)"),
            "budget": images["budget"], "measured": images["ratio"] if gpu else "n/a",
            "met": images["ratio"] <= images["budget"] if gpu else None})
    for b in baselines or ():
        if b["method"] == "tag" and b["tasks"] == 40 and b["estimator_params"] < 10**5:
            ss = next(r for r in steps if r["tasks"] == 40
                      and r["estimator_params"] == b["estimator_params"])
            ss_cost, tag_cost = ss["ratio_median"] - 1.0, b["ratio"] - 1.0
            factor = tag_cost / ss_cost if ss_cost > 0 else float("inf")
            rows.append({
                "figure": f"grouping cost against TAG's, same run, T=40, P={b['estimator_params']}"
                          f" (step cost above mtl: tag {tag_cost:.3f}, ss {ss_cost:.3f})",
                "budget": ">= 5x cheaper", "measured": factor, "met": factor >= 5.0})
    if memory is not None:
        growth = memory["growth_mb_streamed"]
        rows.append({
            "figure": f"peak memory growth, streamed images, {memory['sizes'][0]} -> "
                      f"{memory['sizes'][1]} (MB; generated fixture images)",
            "budget": f"< {memory['budget_mb']}", "measured": growth,
            "met": growth < memory["budget_mb"]})
    if table2 is not None:
        found = table2.get("wall_s") is not None
        rows.append({
            "figure": "quick Table 2 (s, install excluded; "
                      + (f"{table2['path']}, {table2['date']}, torch {table2['torch']})" if found
                         else f"no {table2['path']}: run python reproduce/table2.py --profile "
                         "quick first)"),
            "budget": BUDGETS["table2_quick_s"], "measured": table2.get("wall_s", "n/a"),
            "met": table2["wall_s"] <= BUDGETS["table2_quick_s"] if found else None})
    for r in steps:
        if r["ratio"] is not None:
            limit = BUDGETS["ratio_T40"] if r["tasks"] == 40 else BUDGETS["ratio_T139"]
            rows.append(
                {
                    "figure": f"ss/mtl step, T={r['tasks']}, P={r['estimator_params']}, "
                    f"{r['period']['steps']} steps with {r['period']['events']} events "
                    f"(CPU {r['ratio_cpu']:.3f}; median model {r['ratio_median']:.3f})",
                    "budget": limit,
                    "measured": r["ratio"],
                    "met": r["ratio"] <= limit,
                }
            )
    for e, key in ((139, "decision_139_s"), (500, "decision_500_s")):
        if e in decisions:
            d = decisions[e]
            rows.append(
                {
                    "figure": f"decision E={e} (CPU s; wall {d['wall_s']:.3f})",
                    "budget": BUDGETS[key],
                    "measured": d["cpu_s"],
                    "met": d["cpu_s"] <= BUDGETS[key],
                }
            )
    rows.append(
        {
            "figure": f"replay of {replay['n_events']} events (s)",
            "budget": BUDGETS["replay_50_s"],
            "measured": replay["replay_s"],
            "met": replay["replay_s"] <= BUDGETS["replay_50_s"],
        }
    )
    for key, name in (
        ("history_bytes_per_1000_steps", "history_T40_bytes"),
        ("event_bytes", "event_T40_bytes"),
    ):
        rows.append(
            {
                "figure": f"{key}, T=40",
                "budget": BUDGETS[name],
                "measured": sizes[key],
                "met": sizes[key] <= BUDGETS[name],
            }
        )
    return rows


def _g(r: dict, method: str, key: str) -> object:
    return r[method][key] if method in r else "-"


def print_tables(out: dict) -> None:
    d, s, r = out["details"], out["details"]["sizes"], out["details"]["replay"]
    ov = d["overhead"]
    tables = [
        (
            (
                "Step overhead against mtl. 'periods': total wall (CPU) time of whole event "
                "periods, everything included (events, their background writes and renames, "
                "flushes); the budget figure. 'median model': median step + median event / "
                "period, the event timed in the step (its writes now only queued)"
            ),
            [
                "T",
                "P/estimator",
                "mtl ms",
                "ss periods",
                "ss periods CPU",
                "ss median model",
                "ss countsketch",
                "tag",
                "cosine_groups",
            ],
            [
                [
                    x["tasks"],
                    x["estimator_params"],
                    1e3 * x["mtl_step_s"],
                    *((x["period"]["ratio"], x["period"]["ratio_cpu"]) if "period" in x
                      else ("-", "-")),
                    x["ss_similarity"]["ratio"],
                    _g(x, "ss_countsketch", "ratio"),
                    _g(x, "tag", "ratio"),
                    _g(x, "cosine_groups", "ratio"),
                ]
                for x in ov
            ],
        ),
        (
            (
                "ss/mtl step ratio beside the previous release's (README figures of the bank "
                "layout, same benchmark and machine, another day); stacked estimators' "
                "forward+backward through vmap(functional_call) / through einsum"
            ),
            ["T", "P/estimator", "ss now", "ss previous release", "vmap / einsum"],
            [
                [
                    x["tasks"],
                    x["estimator_params"],
                    x["ss_similarity"]["ratio"],
                    "-" if x.get("ratio_previous_release") is None
                    else x["ratio_previous_release"],
                    x["stack_paths"]["vmap_over_einsum"],
                ]
                for x in ov
            ],
        ),
        (
            "ss event on the training thread (the writes run on the background writer) and "
            "flush, wall seconds",
            [
                "T",
                "P/estimator",
                "event",
                "decide",
                "snapshot",
                "rest",
                "flush",
                "countsketch flush",
            ],
            [
                [
                    x["tasks"],
                    x["estimator_params"],
                    x["ss_similarity"]["rare_s"],
                    *x["ss_similarity"]["event_split"].values(),
                    x["ss_similarity"]["flush_s"],
                    _g(x, "ss_countsketch", "flush_s"),
                ]
                for x in ov
            ],
        ),
        (
            "Decision latency, (E, 64, 128) gradients",
            ["E", "CPU ms", "wall ms", "groups", "ARI"],
            [
                [e, 1e3 * v["cpu_s"], 1e3 * v["wall_s"], v["groups"], v["ari"]]
                for e, v in d["decisions"].items()
            ],
        ),
        (
            f"Replay of a {r['n_events']}-event run (T=40, P=5k, exact match: {r['matched']})",
            ["part", "wall s", "CPU s"],
            [
                ["replay()", r["replay_s"], r["replay_cpu_s"]],
                ["read + decode events", r["read_s"], r["read_cpu_s"]],
                ["recompute decisions", r["decide_s"], r["decide_cpu_s"]],
            ],
        ),
        (
            f"Store of that run ({s['steps']} steps, {s['n_events']} events)",
            ["file", "bytes"],
            [[k, v] for k, v in s["files"].items()]
            + [
                ["events/ (all)", s["events_total_bytes"]],
                ["one event (mean)", s["event_bytes"]],
                ["history per 1000 steps", s["history_bytes_per_1000_steps"]],
            ],
        ),
        (
            "One event file by variable",
            ["variable", "compressed bytes", "raw bytes"],
            [
                [k, v, s["event_var_raw_bytes"][k]]
                for k, v in s["event_var_bytes"].items()
                if v >= 0.01 * s["event_bytes"]
            ],
        ),
        (
            "Scaling exponents b (figure ~ x^b)",
            ["figure", "b"],
            [[k, v] for k, v in out["scaling"].items()],
        ),
        (
            "Budgets",
            ["figure", "budget", "measured", "met"],
            [[b["figure"], b["budget"], b["measured"], "n/a" if b["met"] is None else b["met"]]
             for b in out["budgets"]],
        ),
    ]
    for title, header, rows in tables:
        print(table(title, header, rows))
    missed = [b["figure"] for b in out["budgets"] if b["met"] is False]
    unmeasured = [b["figure"] for b in out["budgets"] if b["met"] is None]
    print(f"\nbudgets: {sum(b['met'] is True for b in out['budgets'])} met, {len(missed)} "
          f"missed, {len(unmeasured)} not measurable here"
          + "".join(f"\n  MISSED: {f}" for f in missed)
          + "".join(f"\n  not measured: {f}" for f in unmeasured))
