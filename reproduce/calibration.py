"""Calibration of the merge rule on planted-group generators (GENERATED data only).

    python reproduce/calibration.py [--runs runs/calibration] [--out results] [--workers 2]
                                    [--seeds 0 1 2 3 4] [--generators NAME ...] [--quick]
                                    [--report-only]

Trains ``ss_similarity`` with the defaults (``make_config(name, "ss_similarity", seed,
"quick")``: the generic vector defaults, one torch thread per run) on every generator of
``selective_sharing.datasets.planted`` in its structured and its structure-free version, for
every seed, in a process pool. Each run goes to ``RUNS/<generator>/<structured|free>/seed<k>``;
a complete run on the same data (the manifest's dataset hash) is reused, anything else there is
deleted and trained again. The report is then built from the stores alone (manifests, metrics,
event files, and three counterfactual replays per run with the silhouette floor off: the
recorded rule, cosine only, subspace only) and written to ``OUT/calibration.md`` and
``OUT/calibration.csv`` (one row per run and event); rebuilding it from the same stores
(``--report-only``) gives the same files.

Reported: the ARI of the structured runs per seed, the share of (generator, seed) pairs with
ARI >= 0.9, whether the structure-free runs merged any two tasks, the best-cut silhouette of
every event, the silhouette distributions structured vs structure-free per generator (for the
chosen distance and for each candidate distance), the targets (ARI >= 0.9 on >= 90% of pairs;
merges on <= 5% of structure-free runs) as met/missed, and what fixed floors, per-generator
floors and per-distance floors would have decided (exact for runs with a single grouping event,
as with the defaults), and a training-free reference: the same cut on each task's linear fit
(:func:`reference_rows`; ``OUT/calibration_reference.csv``), which shows how much group signal
the data carry. ``--quick``: 2 seeds of 2 generators, for tests.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from selective_sharing.core import make_config, store
from selective_sharing.datasets.planted import GENERATORS, planted

SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0, 1)
QUICK_GENERATORS = ("issue_binary_uneven", "own_regression_equal")
ARI_GOAL = 0.9  # a structured pair counts as recovered at ARI >= this
PAIR_TARGET = 0.9  # ... on at least this share of (generator, seed) pairs
FALSE_MERGE_TARGET = 0.05  # merges on at most this share of structure-free runs
#: Fixed floors of the sweep (min_silhouette); the recorded floor is added to them.
FLOORS = tuple(round(0.025 * i, 3) for i in range(17))  # 0.0 .. 0.4
VERSIONS = {True: "structured", False: "free"}
DISTANCES = ("cosine", "subspace")  # the candidates of distance=auto
COLUMNS = ("data", "generator", "kind", "version", "seed", "run", "n_tasks", "n_planted_groups",
           "groups_found", "merged", "ari", "ari_best_cut", "ari_best_cut_cosine",
           "ari_best_cut_subspace", "n_events", "event", "step",
           "chosen_distance", "silhouette", "silhouette_cosine", "silhouette_subspace",
           "min_silhouette", "null_p", "merged_null", "ari_null", "null_p_cosine",
           "merged_null_cosine", "ari_null_cosine", "wall_time_s")


@dataclass(frozen=True)
class Job:
    generator: str
    structured: bool
    seed: int
    out: str

    @property
    def version(self) -> str:
        return VERSIONS[self.structured]

    @property
    def label(self) -> str:
        return f"{self.generator}/{self.version}/seed{self.seed}"


def plan(runs: Path, generators, seeds) -> list[Job]:
    """One job per (generator, structured/free, seed), in that order."""
    return [Job(g, s, int(seed), str(runs / g / VERSIONS[s] / f"seed{seed}"))
            for g in generators for s in (True, False) for seed in seeds]


def _complete_on(out: str, sha256: str) -> bool:
    """Whether ``out`` holds a complete run trained on the data with this hash."""
    try:
        manifest = store.read_manifest(out)
    except (store.StoreError, OSError, ValueError):
        return False
    return manifest.get("status") == "complete" and \
        manifest.get("dataset", {}).get("sha256") == sha256


def run_job(job: Job) -> tuple[Job, str]:
    """Train one run (in a worker) unless a complete run on the same data is there already.

    Returns ``(job, "reused" | "trained")``.
    """
    from selective_sharing.core.training import train

    data = planted(job.generator, job.seed, job.structured)
    if _complete_on(job.out, data.provenance["sha256"]):
        return job, "reused"
    if Path(job.out).exists():
        shutil.rmtree(job.out)
    config = make_config(data.name, "ss_similarity", job.seed, "quick",
                         overrides={"train.threads": 1}, out=job.out)
    train(config, data=data, progress=False)
    return job, "trained"


def train_all(jobs: list, workers: int, run=None) -> dict[str, list]:
    """Run every job in a process pool (``run(job) -> (job, "trained" | "reused")``, default
    :func:`run_job`); failures are collected, not raised."""
    run = run_job if run is None else run
    outcome: dict[str, list] = {"trained": [], "reused": [], "failed": []}
    with ProcessPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(run, job): job for job in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            try:
                _, how = future.result()
            except Exception as err:  # noqa: BLE001  (reported, the grid goes on)
                outcome["failed"].append((job, f"{type(err).__name__}: {err}"))
                how = "FAILED"
            else:
                outcome[how].append(job)
            print(f"[{done}/{len(jobs)}] {job.label}: {how}", file=sys.stderr, flush=True)
    return outcome


# --- reading the stores ------------------------------------------------------------------------


def read_run(job: Job) -> list[dict]:
    """One row per grouping event of the run in ``job.out`` (one row without event fields when
    it has none), from its manifest, metrics, event files and a replay with the floor off."""
    from selective_sharing.analysis import replay

    manifest = store.read_manifest(job.out)
    if manifest.get("status") != "complete":
        raise store.StoreError(f"{job.out}: run status {manifest.get('status')!r}, not complete")
    metrics = store.read_metrics(job.out)
    partition = np.asarray(metrics["partition"].values)
    planted_groups = np.asarray(manifest["true_groups"])
    n_tasks = partition.size
    # The silhouette-best cut of the chosen distance, whatever the floor said: what any fixed
    # floor would have merged into (the decision of a single-event run).
    best_cut = replay(job.out, min_silhouette=-1.0).assignment
    per_distance = {d: replay(job.out, distance=d, min_silhouette=-1.0).assignment
                    for d in DISTANCES}
    # The opt-in edge-permutation null (grouping.null=permutation, default B and alpha) in
    # place of the floor: counterfactual replay, exact for single-event runs.
    # Once with the run's distance (auto), once with cosine only (the distance the null was
    # studied with in the README).
    null_cols = {}
    for suffix, extra in (("", {}), ("_cosine", {"distance": "cosine"})):
        with_null = replay(job.out, null="permutation", **extra)
        tests = [e.result.null_test for e in with_null.events if e.result.null_test is not None]
        null_cols.update({
            f"null_p{suffix}": float(tests[0]["p_value"]) if tests else np.nan,
            f"merged_null{suffix}": bool(np.unique(with_null.assignment).size < n_tasks),
            f"ari_null{suffix}": float(adjusted_rand_score(planted_groups, with_null.assignment)),
        })
    base = {
        "data": f"GENERATED (variant {manifest['dataset']['variant']})",
        "generator": job.generator,
        "kind": _kind(manifest["dataset"]["knobs"]),
        "version": job.version,
        "seed": job.seed,
        "run": job.out,
        "n_tasks": n_tasks,
        "n_planted_groups": int(np.unique(planted_groups).size),
        "groups_found": int(np.unique(partition).size),
        "merged": bool(np.unique(partition).size < n_tasks),
        "ari": float(metrics["adjusted_rand_index"]),
        "ari_best_cut": float(adjusted_rand_score(planted_groups, best_cut)),
        **{f"ari_best_cut_{d}": float(adjusted_rand_score(planted_groups, a))
           for d, a in per_distance.items()},
        **null_cols,
        "wall_time_s": float(metrics["wall_time_s"]),
    }
    events = store.list_events(job.out)
    rows = []
    for path in events:
        ev = store.read_event(path)
        chosen = str(ev.attrs["chosen_distance"])
        sil = ev["silhouettes"]
        by_name = {str(d): float(sil.sel(distance=d)) for d in sil["distance"].values}
        rows.append({**base, "n_events": len(events), "event": int(ev.attrs["index"]),
                     "step": int(ev.attrs["step"]), "chosen_distance": chosen,
                     "silhouette": by_name[chosen],
                     "silhouette_cosine": by_name.get("cosine", np.nan),
                     "silhouette_subspace": by_name.get("subspace", np.nan),
                     "min_silhouette": float(_grouping(ev)["min_silhouette"])})
    if not rows:
        rows.append({**base, "n_events": 0, "event": -1, "step": -1, "chosen_distance": "",
                     "silhouette": np.nan, "silhouette_cosine": np.nan,
                     "silhouette_subspace": np.nan, "min_silhouette": np.nan})
    return rows


def _grouping(ev) -> dict:
    return json.loads(ev.attrs["grouping_config"])


def _kind(knobs: dict) -> str:
    sizes = knobs["group_sizes"]
    shape = "equal" if len(set(sizes)) == 1 else "uneven"
    noise = "label flips" if knobs["task_type"] != "regression" else "noise std"
    task = knobs["task_type"] + (f" ({knobs['n_classes']} classes)"
                                 if knobs["task_type"] == "multiclass" else "")
    return (f"{knobs['inputs']} inputs, {task}, {knobs['sharing']}, "
            f"{shape} groups {sizes}, {noise} {knobs['noise']}")


# --- the report --------------------------------------------------------------------------------


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f}%)" if n else "0/0"


def _stats(values) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not v.size:
        return "n/a"
    return f"{v.min():.3f} / {np.median(v):.3f} / {v.max():.3f}"


def run_table(rows: list[dict]) -> list[dict]:
    """One entry per run: the first event row of each run (run-level fields are repeated)."""
    seen, out = set(), []
    for r in rows:
        if r["run"] not in seen:
            seen.add(r["run"])
            out.append(r)
    return out


def floor_outcome(run: dict, floor: float) -> tuple[bool, float]:
    """``(merged, ari)`` a fixed ``min_silhouette = floor`` gives a single-event run: the
    silhouette-best cut when its silhouette reaches the floor, else every task apart (ARI 0)."""
    merged = run["n_events"] == 1 and bool(run["silhouette"] >= floor)
    return merged, (run["ari_best_cut"] if merged else 0.0)


# --- reference: what the generated data carry, without gradients ------------------------------


def task_coefficients(data) -> np.ndarray:
    """``(T, K * d)``: each task's linear fit on its own training samples (scikit-learn
    defaults): least squares for regression, L2 logistic regression (``C = 1``) for binary and
    multiclass (the ``K x d`` class coefficients, flattened in class order)."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    rows = []
    for t, spec in enumerate(data.tasks):
        m = np.asarray(data.m_train[:, t], dtype=bool)
        x, y = np.asarray(data.x_train[m], np.float64), np.asarray(data.y_train[m, t])
        fit = (LinearRegression().fit(x, y) if spec.type == "regression"
               else LogisticRegression(max_iter=2000).fit(x, y.astype(np.int64)))
        rows.append(np.ravel(fit.coef_))
    return np.asarray(rows)


def reference_rows(generators, seeds) -> list[dict]:
    """The decision's cut (cosine distance, average linkage, silhouette-best cut, no floor)
    applied to per-task linear fits instead of gradients: one row per (generator, version,
    seed). Training-free and deterministic; an upper reference for what a task-similarity
    signal can recover from these data, not a method of this project."""
    from selective_sharing.core.grouping.distances import finalize_distances
    from selective_sharing.core.grouping.silhouette import average_linkage, best_cut

    out = []
    for g in generators:
        for structured in (True, False):
            for seed in seeds:
                data = planted(g, int(seed), structured)
                w = task_coefficients(data)
                unit = w / np.linalg.norm(w, axis=1, keepdims=True)
                d = finalize_distances(1.0 - unit @ unit.T, np.zeros(len(w), bool), 2.0)
                cut = best_cut(d, average_linkage(d))
                out.append({"generator": g, "version": VERSIONS[structured], "seed": int(seed),
                            # against the version's own groups (all apart when structure-free)
                            "ari": float(adjusted_rand_score(data.groups, cut.labels)),
                            "silhouette": float(cut.silhouette),
                            "groups_found": int(np.unique(cut.labels).size),
                            "n_tasks": int(data.n_tasks)})
    return out


def _reference(ref: list[dict], runs: list[dict], generators) -> list[str]:
    """The report's section on :func:`reference_rows`, beside the events' own best cuts."""
    lines = ["", "## Reference: the same cut on per-task linear fits (no gradients)", "",
             ("Each task's linear fit on its own training samples (least squares; logistic "
              "regression, scikit-learn defaults), clustered exactly as an event clusters "
              "gradients (cosine distance, average linkage, silhouette-best cut, no floor). It "
              "says how much group signal the data themselves carry for this cut; it is not a "
              "method of this project (it fits every task to convergence and needs no shared "
              "model). Best-cut silhouettes are given for the structured and the "
              "structure-free version; `event` columns repeat the runs' own (gradient) best "
              "cuts for comparison."),
             "",
             ("| generator | linear fits: best-cut ARI per seed | pairs ARI >= 0.9 | silhouette "
              "structured | silhouette structure-free | event: best-cut ARI >= 0.9 | event: "
              "silhouette structured | event: silhouette structure-free |"),
             "|---|---|---|---|---|---|---|---|"]
    totals = [0, 0, 0, 0]
    for g in generators:
        rs = [r for r in ref if r["generator"] == g and r["version"] == "structured"]
        rf = [r for r in ref if r["generator"] == g and r["version"] == "free"]
        es = [r for r in runs if r["generator"] == g and r["version"] == "structured"]
        ef = [r for r in runs if r["generator"] == g and r["version"] == "free"]
        if not rs:
            continue
        hit, ev_hit = sum(r["ari"] >= ARI_GOAL for r in rs), sum(
            r["ari_best_cut_cosine"] >= ARI_GOAL for r in es)
        totals = [totals[0] + hit, totals[1] + len(rs), totals[2] + ev_hit, totals[3] + len(es)]
        lines.append(
            f"| {g} | {', '.join(_fmt(r['ari'], 2) for r in rs)} | {_pct(hit, len(rs))} | "
            f"{_stats(r['silhouette'] for r in rs)} | {_stats(r['silhouette'] for r in rf)} | "
            f"{_pct(ev_hit, len(es)) if es else 'n/a'} | "
            f"{_stats(r['silhouette_cosine'] for r in es) if es else 'n/a'} | "
            f"{_stats(r['silhouette_cosine'] for r in ef) if ef else 'n/a'} |")
    lines += ["", (f"All generators: linear fits {_pct(totals[0], totals[1])} of the "
                   f"structured pairs at ARI >= {ARI_GOAL}; the events' cosine best cut "
                   f"{_pct(totals[2], totals[3])} (same cut, gradient features of the event "
                   "window). `event` silhouettes are those of the cosine distance.")]
    return lines


def report(rows: list[dict], seeds, generators, failed=(),
           reference: list[dict] | None = None) -> str:
    runs = run_table(rows)
    structured = [r for r in runs if r["version"] == "structured"]
    free = [r for r in runs if r["version"] == "free"]
    floors = sorted({*(r["min_silhouette"] for r in rows if np.isfinite(r["min_silhouette"]))})
    floor_text = ", ".join(f"{f:g}" for f in floors) or "n/a"
    recovered = sum(r["ari"] >= ARI_GOAL for r in structured)
    merged_free = sum(r["merged"] for r in free)
    pair_share = recovered / len(structured) if structured else np.nan
    merge_share = merged_free / len(free) if free else np.nan
    ok = lambda good: "**met**" if good else "**missed**"  # noqa: E731
    lines = [
        "# Calibration of the merge rule on planted-group generators (GENERATED data)",
        "",
        "**All numbers below come from GENERATED data** (`selective_sharing.datasets.planted`, "
        "dataset variant `synthetic`): planted task groups, and a structure-free version of "
        "each generator with the same inputs, noise and per-task target statistics but no "
        "generating function shared between tasks.",
        "",
        f"Rule: `ss_similarity` with the generic vector defaults (quick profile: 200 full-batch "
        f"steps, one grouping event at step 40, `distance=auto`), `min_silhouette` = "
        f"{floor_text} (read from the event files). Seeds: {', '.join(map(str, seeds))}. "
        f"Runs: {len(runs)} ({len(structured)} structured, {len(free)} structure-free); "
        f"training time recorded in the stores: "
        f"{sum(r['wall_time_s'] for r in runs):.0f} s in all.",
        "",
        "## Against the targets",
        "",
        "| figure | target | measured | verdict |",
        "|---|---|---|---|",
        f"| structured (generator, seed) pairs with ARI >= {ARI_GOAL} | >= "
        f"{PAIR_TARGET:.0%} | {_pct(recovered, len(structured))} | "
        f"{ok(pair_share >= PAIR_TARGET)} |",
        f"| structure-free runs that merged any two tasks | <= {FALSE_MERGE_TARGET:.0%} | "
        f"{_pct(merged_free, len(free))} | {ok(merge_share <= FALSE_MERGE_TARGET)} |",
        "",
        "## Per generator",
        "",
        "ARI: adjusted Rand index of the final partition against the planted groups. "
        "Best-cut ARI: that of the silhouette-best cut of the chosen distance at the event, "
        "with the floor off (counterfactual replay, `min_silhouette=-1`): whether the cut "
        "itself is right, whatever the floor decides.",
        "",
        "| generator | kind | ARI per seed (structured) | pairs ARI >= 0.9 | groups found "
        "(structured; planted) | best-cut ARI per seed | structure-free runs merged | groups "
        "found (structure-free; tasks) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in generators:
        s = [r for r in structured if r["generator"] == g]
        f = [r for r in free if r["generator"] == g]
        if not s and not f:
            continue
        any_row = (s or f)[0]
        lines.append(
            f"| {g} | {any_row['kind']} | {', '.join(_fmt(r['ari'], 2) for r in s)} | "
            f"{_pct(sum(r['ari'] >= ARI_GOAL for r in s), len(s))} | "
            f"{', '.join(str(r['groups_found']) for r in s)}; "
            f"{s[0]['n_planted_groups'] if s else 'n/a'} | "
            f"{', '.join(_fmt(r['ari_best_cut'], 2) for r in s)} | "
            f"{_pct(sum(r['merged'] for r in f), len(f))} | "
            f"{', '.join(str(r['groups_found']) for r in f)}; "
            f"{f[0]['n_tasks'] if f else 'n/a'} |")
    lines += [
        "",
        "## Best-cut silhouette of every event (chosen distance)",
        "",
        "Per seed: the silhouette of the silhouette-best average-linkage cut of the distance "
        "`auto` chose (c = cosine, s = subspace), `*` where the run merged.",
        "",
        "| generator | version | silhouette per seed | min / median / max |",
        "|---|---|---|---|",
    ]
    for g in generators:
        for version in ("structured", "free"):
            evs = [r for r in rows if r["generator"] == g and r["version"] == version]
            if not evs:
                continue
            cells = []
            for r in run_table(evs):
                own = [e for e in evs if e["run"] == r["run"]]
                cells.append("/".join(
                    f"{_fmt(e['silhouette'])}{e['chosen_distance'][:1]}" for e in own)
                    + ("*" if r["merged"] else ""))
            lines.append(f"| {g} | {version} | {', '.join(cells)} | "
                         f"{_stats(e['silhouette'] for e in evs)} |")
    lines += [
        "",
        "## Silhouette distributions: structured vs structure-free",
        "",
        "Best-cut silhouettes of the chosen distance over all events, min / median / max. "
        "Gap = lowest structured minus highest structure-free: a fixed floor can separate the "
        "two only where the gap is positive.",
        "",
        "| generator | structured | structure-free | gap | a fixed floor separates them |",
        "|---|---|---|---|---|",
    ]
    for g in [*generators, None]:
        sel = [r for r in rows if g is None or r["generator"] == g]
        ss = [r["silhouette"] for r in sel if r["version"] == "structured"]
        ff = [r["silhouette"] for r in sel if r["version"] == "free"]
        if not ss or not ff:
            continue
        gap = np.nanmin(ss) - np.nanmax(ff)
        lines.append(f"| {g or '**all generators**'} | {_stats(ss)} | {_stats(ff)} | "
                     f"{gap:+.3f} | {'yes' if gap > 0 else 'no'} |")
    lines += _per_distance(rows, generators)
    lines += _sweep(runs, floors)
    lines += _null_rule(runs)
    if reference:
        lines += _reference(reference, runs, generators)
    if failed:
        lines += ["", "## Failed runs (left out above)", ""]
        lines += [f"- {job.out}: {why}" for job, why in failed]
    return "\n".join(lines) + "\n"


def _per_distance(rows: list[dict], generators) -> list[str]:
    """Each candidate distance on its own: silhouettes structured vs structure-free, and what a
    per-distance null (an in-sample oracle) would recover."""
    runs = run_table(rows)
    lines = ["", "## Each distance on its own", "",
             "`distance=auto` takes the distance with the higher best-cut silhouette. Below, "
             "each candidate's own best-cut silhouettes (min / median / max) and best-cut ARI "
             "(counterfactual replay with that distance and the floor off).", "",
             "| generator | distance | structured | structure-free | gap | best-cut ARI per "
             "seed (structured) |", "|---|---|---|---|---|---|"]
    for g in generators:
        for d in DISTANCES:
            ss = [r[f"silhouette_{d}"] for r in runs
                  if r["generator"] == g and r["version"] == "structured"]
            ff = [r[f"silhouette_{d}"] for r in runs
                  if r["generator"] == g and r["version"] == "free"]
            if not ss or not ff:
                continue
            aris = [r[f"ari_best_cut_{d}"] for r in runs
                    if r["generator"] == g and r["version"] == "structured"]
            lines.append(f"| {g} | {d} | {_stats(ss)} | {_stats(ff)} | "
                         f"{np.nanmin(ss) - np.nanmax(ff):+.3f} | "
                         f"{', '.join(_fmt(a, 2) for a in aris)} |")
    # Oracle: per generator and distance, the null is the highest structure-free silhouette of
    # that distance; a structured run merges with the distance of largest excess over its null.
    single = [r for r in runs if r["n_events"] == 1]
    s = [r for r in single if r["version"] == "structured"]
    null = {(r["generator"], d): max(x[f"silhouette_{d}"] for x in single
                                      if x["generator"] == r["generator"]
                                      and x["version"] == "free")
            for r in s for d in DISTANCES
            if any(x["generator"] == r["generator"] and x["version"] == "free" for x in single)}
    rec = 0
    for r in s:
        excess = {d: r[f"silhouette_{d}"] - null[(r["generator"], d)]
                  for d in DISTANCES if (r["generator"], d) in null}
        if excess and max(excess.values()) > 0:
            rec += r[f"ari_best_cut_{max(excess, key=excess.get)}"] >= ARI_GOAL
    lines += ["", f"Per-distance null (in-sample oracle: for each generator and distance the "
              f"floor is just above that distance's highest structure-free silhouette; a run "
              f"merges with the distance of largest excess, so 0 false merges by "
              f"construction): structured pairs with ARI >= {ARI_GOAL}: {_pct(rec, len(s))}."]
    return lines


def _sweep(runs: list[dict], recorded: list[float]) -> list[str]:
    """What fixed floors would have decided (single-event runs only: exact)."""
    single = [r for r in runs if r["n_events"] == 1]
    s = [r for r in single if r["version"] == "structured"]
    f = [r for r in single if r["version"] == "free"]
    lines = ["", "## Fixed floors: what each `min_silhouette` would have decided", "",
             "Exact for runs with a single grouping event (here: "
             f"{len(single)} of {len(runs)}): a floor merges into the silhouette-best cut when "
             "the cut's silhouette reaches it, else leaves every task apart (ARI 0 against the "
             "planted groups). Floors at which both targets hold are marked.", "",
             "| floor | structured pairs ARI >= 0.9 | structure-free runs merged | both targets |",
             "|---|---|---|---|"]
    if not s or not f:
        return lines + ["| n/a | n/a | n/a | n/a |"]
    for floor in sorted({*FLOORS, *recorded}):
        rec = sum(floor_outcome(r, floor)[1] >= ARI_GOAL for r in s)
        fm = sum(floor_outcome(r, floor)[0] for r in f)
        both = rec / len(s) >= PAIR_TARGET and fm / len(f) <= FALSE_MERGE_TARGET
        mark = " (recorded floor)" if floor in recorded else ""
        lines.append(f"| {floor:g}{mark} | {_pct(rec, len(s))} | {_pct(fm, len(f))} | "
                     f"{'**yes**' if both else 'no'} |")
    lines += ["", "Per-generator floors (an oracle for a data-calibrated null that is exactly "
              "right: each generator's floor just above its own highest structure-free "
              "silhouette, so 0 false merges by construction):", "",
              "| generator | floor | structured pairs ARI >= 0.9 | merged, any ARI |",
              "|---|---|---|---|"]
    total = 0
    for g in dict.fromkeys(r["generator"] for r in single):
        null = max((r["silhouette"] for r in f if r["generator"] == g), default=np.nan)
        mine = [r for r in s if r["generator"] == g]
        if not mine or not np.isfinite(null):
            continue
        above = [r for r in mine if r["silhouette"] > null]
        rec = sum(r["ari_best_cut"] >= ARI_GOAL for r in above)
        total += rec
        lines.append(f"| {g} | > {null:.3f} | {_pct(rec, len(mine))} | "
                     f"{', '.join(_fmt(r['ari_best_cut'], 2) for r in above) or 'none'} |")
    lines.append(f"| **all** | | {_pct(total, len(s))} | |")
    ceiling = sum(r["ari_best_cut"] >= ARI_GOAL for r in s)
    same = sum(floor_outcome(r, r["min_silhouette"])[0] == r["merged"] for r in single)
    lines += ["", f"Ceiling for any floor: the silhouette-best cut itself reaches ARI >= "
              f"{ARI_GOAL} on {_pct(ceiling, len(s))} of the structured pairs. Check: at each "
              f"run's recorded floor the sweep reproduces the recorded decision (merged or not) "
              f"on {same} of {len(single)} runs."]
    return lines


def _null_rule(runs: list[dict]) -> list[str]:
    """The opt-in edge-permutation null (``grouping.null=permutation``) in place of the floor,
    by counterfactual replay of every run (exact for single-event runs), with the run's
    distance (``auto``) and with ``distance=cosine``. The null keeps each event's own distance
    distribution and destroys only its block structure."""
    s = [r for r in runs if r["version"] == "structured"]
    f = [r for r in runs if r["version"] == "free"]
    lines = ["", "## The edge-permutation null (`grouping.null=permutation`)", "",
             "Counterfactual replay of every run with `null=permutation` (B = 200 shuffles of "
             "the chosen distance's off-diagonal values, alpha = 0.05; `min_silhouette` not "
             "applied): the best cut is merged iff p <= alpha. With `distance=auto` the test "
             "sees only the distance that won the silhouette comparison, not the choice "
             "itself.", "",
             f"| distance | structured pairs ARI >= {ARI_GOAL} (target >= {PAIR_TARGET:.0%}) | "
             f"structure-free runs merged (target <= {FALSE_MERGE_TARGET:.0%}) |", "|---|---|---|"]
    for name, suffix in (("run's (auto)", ""), ("cosine", "_cosine")):
        rec = sum(r[f"ari_null{suffix}"] >= ARI_GOAL for r in s)
        fm = sum(r[f"merged_null{suffix}"] for r in f)
        lines.append(f"| {name} | {_pct(rec, len(s))} | {_pct(fm, len(f))} |")
    return lines


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k])
                         for k in COLUMNS})
    path.write_text(buf.getvalue())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/calibration")
    p.add_argument("--out", default="results")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"default {' '.join(map(str, SEEDS))} ({' '.join(map(str, QUICK_SEEDS))} "
                        "with --quick)")
    p.add_argument("--generators", nargs="+", default=None, choices=sorted(GENERATORS),
                   metavar="NAME", help="default: every generator (2 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"seeds {QUICK_SEEDS} of {', '.join(QUICK_GENERATORS)} (for tests)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild the report from the stores in --runs")
    args = p.parse_args(argv)
    seeds = tuple(args.seeds or (QUICK_SEEDS if args.quick else SEEDS))
    generators = tuple(args.generators or (QUICK_GENERATORS if args.quick else GENERATORS))
    jobs = plan(Path(args.runs), generators, seeds)
    start = time.perf_counter()
    failed = []
    if not args.report_only:
        outcome = train_all(jobs, args.workers)
        failed = outcome["failed"]
        print(f"trained {len(outcome['trained'])}, reused {len(outcome['reused'])}, "
              f"failed {len(failed)} of {len(jobs)} runs in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)
    bad = {job.out for job, _ in failed}
    rows = []
    for job in jobs:
        if job.out in bad:
            continue
        try:
            rows += read_run(job)
        except (store.StoreError, OSError, KeyError) as err:
            failed.append((job, f"unreadable store: {type(err).__name__}: {err}"))
    reference = reference_rows(generators, seeds)
    text = report(rows, seeds, generators, failed, reference)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.md").write_text(text)
    write_csv(rows, out / "calibration.csv")
    with (out / "calibration_reference.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(reference[0]) if reference else ["generator"])
        writer.writeheader()
        writer.writerows(reference)
    print(text)
    print(f"wrote {out / 'calibration.md'}, {out / 'calibration.csv'} and "
          f"{out / 'calibration_reference.csv'}; wall time "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
