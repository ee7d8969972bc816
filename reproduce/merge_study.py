"""Why ``ss_similarity`` ends below ``mtl`` on the image datasets: a measured study (issue 13).

    python reproduce/merge_study.py [--runs runs/merge_study] [--out results] [--workers 2]
                                    [--seeds 0 1 2] [--datasets mnist_context shapes_context]
                                    [--variants KEY ...] [--set KEY=VALUE ...]
                                    [--yield-to reproduce/table2.py] [--report-only]

Trains, on mnist_context (MNIST digits in generated contexts) and shapes_context (generated
scenes), quick profile, one torch thread per run, ``mtl`` and ``ss_similarity`` with their
defaults and the variants below (:data:`VARIANTS`), each over the same seeds, in a pool of
``--workers`` processes. Each run goes to ``RUNS/<dataset>/<variant>/seed<k>``; a complete run
made with the same config is reused, a complete run made with another one stops the study
(delete it or pass another ``--runs``), anything else there is deleted and trained again.
The report is then built from the stores alone (manifest, metrics, events, history) and
written to ``OUT/merge_study.md`` and ``OUT/merge_study.csv`` (one line per run).

Rows (every one compared with ``mtl`` at the same ``train.steps``, same seeds):

1. merge mode: ``sharing.merge=best`` and ``first`` (the default is ``average``);
2. warm restart after the merge: ``train.merge_warmup=20`` (the learning rate restarts at
   lr / 21 and rises back to lr over 20 steps; ``core.merge`` maps Adam's moments with the same
   matrix as the weights); and moving the event: earlier (more steps after the merge to
   recover) or later (fewer steps trained merged), ``train.steps`` unchanged;
3. regrouping schedule: ``sharing.regroup_every=50`` with ``grouping.patience`` 1 and 2;
4. estimator capacity: ``model.estimator_hidden=[128,64]`` for ``ss_similarity`` and ``mtl``;
5. longer training after the merge: ``train.steps=450`` (event at the default step) for
   ``ss_similarity`` and ``mtl``.

The post-merge dip is read from ``history.nc``: the mean over tasks of the per-step training
loss, averaged over the 10 steps before the first event that merged estimators (``pre``); its
highest value over the 50 steps from the event on (``peak``); and the number of steps from the
event until it is first back within 2x ``pre`` (``recovery``). Runs without a merge (``mtl``)
get the same figures at the step where the paired ``ss_similarity`` variant has its event, as a
measure of the loss's ordinary step-to-step noise.

``--set KEY=VALUE`` applies to every run (e.g. ``--set train.steps=20 sharing.warmup_steps=10``
for a smoke test); the event steps, the regrouping interval and the longer training of the
variants are then scaled by ``train.steps / 300``. ``--yield-to PATTERN``: while another
process whose command line contains PATTERN runs (another grid on the same CPUs), keep only one
run in flight; ``--workers`` once it is gone.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selective_sharing.core import store
from selective_sharing.core.cli import parse_set
from selective_sharing.core.config import ConfigError
from selective_sharing.core.grid import GridError, Job, check_configs, run_job, status_of
from selective_sharing.core.profiles import profile_defaults

DATASETS = ("mnist_context", "shapes_context")
SEEDS = (0, 1, 2)
PROFILE = "quick"
BASE_STEPS = 300  # the quick image profiles' train.steps, to which the step values below refer
#: The event steps tried for row 2, per dataset (quick: the default event is at 150 / 200).
EVENT_STEPS = {"mnist_context": (75, 225), "shapes_context": (100, 250)}
REGROUP_EVERY = 50
LONG_STEPS = 450
WIDE_ESTIMATOR = (128, 64)
PRE_STEPS = 10  # the pre-merge level: mean over this many steps before the event
PEAK_STEPS = 50  # the peak: highest value over this many steps from the event on
RECOVERY_FACTOR = 2.0  # recovered: back within this factor of the pre-merge level
FINAL_STEPS = 10  # final training loss: mean over the last this many steps
TIMING_FILE = "merge_study_run.json"  # in the runs folder: the wall time of the training call


@dataclass(frozen=True)
class Variant:
    """One configuration of the study: ``overrides(dataset, steps)`` gives its config overrides
    for a base of ``steps`` training steps; ``paired`` is the mtl variant it is compared with."""

    key: str
    row: str
    label: str
    method: str
    kind: str  # "merge", "event", "regroup", "capacity", "steps", "warmup", "" (the defaults)
    value: Any = None
    paired: str = "mtl"

    def overrides(self, dataset: str, steps: int) -> dict[str, Any]:
        scale = steps / BASE_STEPS
        if self.kind == "merge":
            return {"sharing.merge": self.value}
        if self.kind == "event":
            return {"sharing.warmup_steps": max(1, round(EVENT_STEPS[dataset][self.value]
                                                         * scale))}
        if self.kind == "regroup":
            return {"sharing.regroup_every": max(1, round(REGROUP_EVERY * scale)),
                    "grouping.patience": self.value}
        if self.kind == "capacity":
            return {"model.estimator_hidden": WIDE_ESTIMATOR}
        if self.kind == "steps":
            return {"train.steps": max(1, round(LONG_STEPS * scale))}
        if self.kind == "warmup":
            return {"train.merge_warmup": max(1, round(self.value * scale))}
        return {}


#: In priority order: the study drops from the end (``--variants`` selects).
VARIANTS: tuple[Variant, ...] = (
    Variant("mtl", "0", "mtl (defaults)", "mtl", ""),
    Variant("ss", "0", "ss_similarity (defaults: merge=average)", "ss_similarity", ""),
    Variant("ss_merge_best", "1", "merge=best", "ss_similarity", "merge", "best"),
    Variant("ss_merge_first", "1", "merge=first", "ss_similarity", "merge", "first"),
    Variant("ss_event_early", "2", "earlier event (more steps after the merge)",
            "ss_similarity", "event", 0),
    Variant("ss_event_late", "2", "later event (fewer steps after the merge)",
            "ss_similarity", "event", 1),
    Variant("ss_wide", "4", "estimator_hidden=[128,64]", "ss_similarity", "capacity"),
    Variant("ss_regroup_p1", "3", "regroup_every=50, patience=1", "ss_similarity", "regroup", 1),
    Variant("ss_regroup_p2", "3", "regroup_every=50, patience=2", "ss_similarity", "regroup", 2),
    Variant("mtl_wide", "4", "mtl, estimator_hidden=[128,64]", "mtl", "capacity"),
    Variant("ss_long", "5", "train.steps=450", "ss_similarity", "steps", paired="mtl_long"),
    Variant("mtl_long", "5", "mtl, train.steps=450", "mtl", "steps", paired="mtl_long"),
    Variant("ss_warmup", "2", "learning-rate warm-up over 20 steps after the merge",
            "ss_similarity", "warmup", 20),
)
BY_KEY = {v.key: v for v in VARIANTS}


# --- planning and training ------------------------------------------------------------------


def base_steps(dataset: str, extra: dict[str, Any]) -> int:
    """``train.steps`` of the default runs: the profile's, or the one ``--set`` gives."""
    return int(extra.get("train.steps", profile_defaults(dataset, PROFILE)["train"]["steps"]))


def run_overrides(variant: Variant, dataset: str, extra: dict[str, Any]) -> dict[str, Any]:
    """``--set`` overrides, then the variant's own (scaled to the base steps)."""
    return {**extra, **variant.overrides(dataset, base_steps(dataset, extra))}


def plan(runs: Path, datasets, seeds, variants, extra: dict[str, Any]) -> list[Job]:
    """One job per (dataset, variant, seed), variant by variant in priority order."""
    return [Job(d, v.method, int(s), PROFILE, str(runs / d / v.key / f"seed{s}"),
                run_overrides(v, d, extra))
            for v in variants for d in datasets for s in seeds]


def others_running(pattern: str | None) -> bool:
    """Whether a process other than this study's has ``pattern`` in its command line."""
    if not pattern:
        return False
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmd and "merge_study" not in cmd and int(proc.name) != os.getpid():
            return True
    return False


def train_all(jobs: list[Job], workers: int, yield_to: str | None) -> list:
    """Run the jobs in a process pool, in plan order; at most one in flight while
    ``others_running(yield_to)``. Returns the outcomes (``core.grid.Outcome``), in plan order."""
    pending = [j for j in jobs if status_of(j.run_dir) != "complete"]
    outcomes = {j.run_dir: None for j in jobs if j not in pending}
    running: dict = {}
    start = time.perf_counter()
    with ProcessPoolExecutor(max(1, workers)) as pool:
        while pending or running:
            slots = 1 if others_running(yield_to) else max(1, workers)
            while pending and len(running) < slots:
                job = pending.pop(0)
                running[pool.submit(run_job, job)] = job
            done, _ = wait(running, timeout=20, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                outcome = future.result()
                outcomes[job.run_dir] = outcome
                print(f"[{time.perf_counter() - start:7.0f} s] {job.dataset}/"
                      f"{Path(job.run_dir).parent.name}/seed{job.seed}: {outcome.status} "
                      f"({outcome.seconds:.0f} s, {slots} slot(s)) {outcome.error or ''}",
                      file=sys.stderr, flush=True)
    return [outcomes[j.run_dir] for j in jobs]


# --- reading the stores ---------------------------------------------------------------------


def loss_dip(mean_loss: np.ndarray, steps: np.ndarray, event: int) -> dict[str, float]:
    """Pre-merge level, peak and recovery of the mean task loss around ``event``.

    ``pre``: mean over the :data:`PRE_STEPS` steps before ``event``; ``peak``: highest value over
    the :data:`PEAK_STEPS` steps from ``event`` on; ``recovery``: steps from ``event`` to the
    first step whose loss is within :data:`RECOVERY_FACTOR` x ``pre`` (NaN: never, before the
    end; ``recovered`` is then False and ``recovery`` the steps left).
    """
    before = (steps >= event - PRE_STEPS) & (steps < event)
    after = steps >= event
    pre = float(np.mean(mean_loss[before]))
    post = mean_loss[after]
    peak = float(np.max(post[:PEAK_STEPS]))
    ok = np.flatnonzero(post <= RECOVERY_FACTOR * pre)
    recovered = ok.size > 0
    recovery = float(steps[after][ok[0]] - event) if recovered else float(post.size)
    return {"pre_loss": pre, "peak_loss": peak, "recovery_steps": recovery,
            "recovered": recovered}


def read_run(run_dir: str, nominal_event: int) -> dict[str, Any]:
    """Everything the report needs from one complete run's store."""
    manifest = store.read_manifest(run_dir)
    if manifest.get("status") != "complete":
        raise store.StoreError(f"{run_dir}: status {manifest.get('status')!r}, not complete")
    metrics = store.read_metrics(run_dir)
    history = store.read_history(run_dir)
    steps = history["step"].values
    mean_loss = history["loss"].values.astype(np.float64).mean(axis=1)
    events = [store.read_event(p, bins=False) for p in store.list_events(run_dir)]
    merges = [int(e.attrs["step"]) for e in events
              if int(e.attrs["n_entities_after"]) < int(e.attrs["n_entities_before"])]
    event = merges[0] if merges else nominal_event
    cfg = manifest["config"]
    ari = float(metrics["adjusted_rand_index"]) if "adjusted_rand_index" in metrics else np.nan
    return {
        "accuracy": float(metrics["main"]),
        "ari": ari,
        "groups": int(metrics["n_groups"]),
        "parameters": int(metrics["n_parameters"]),
        "estimator_parameters": int(metrics["n_parameters_estimators"]),
        "steps": int(cfg["train"]["steps"]),
        "n_events": len(events),
        "event_steps": " ".join(str(int(e.attrs["step"])) for e in events),
        "merge_steps": " ".join(map(str, merges)),
        "dip_at": event,
        **loss_dip(mean_loss, steps, event),
        "final_train_loss": float(mean_loss[-FINAL_STEPS:].mean()),
        "wall_time_s": float(metrics["wall_time_s"]),
    }


def nominal_event(variant: Variant, dataset: str, extra: dict[str, Any]) -> int:
    """Where the variant's (or, for mtl, its ss counterpart's) first event is."""
    ov = run_overrides(variant, dataset, extra)
    if "sharing.warmup_steps" in ov:
        return int(ov["sharing.warmup_steps"])
    return int(profile_defaults(dataset, PROFILE)["sharing"]["warmup_steps"])


COLUMNS = ("dataset", "row", "variant", "label", "method", "overrides", "seed", "run",
           "accuracy", "paired_mtl", "mtl_accuracy", "diff_vs_mtl", "ari", "groups",
           "parameters", "mtl_parameters", "estimator_parameters", "steps", "n_events",
           "event_steps", "merge_steps", "dip_at", "pre_loss", "peak_loss", "recovery_steps",
           "recovered", "final_train_loss", "wall_time_s")


def collect(runs: Path, datasets, seeds, variants, extra) -> tuple[list[dict], list[str]]:
    """One row per (dataset, variant, seed) whose run and paired mtl run are complete; and the
    runs that are missing or incomplete."""
    rows, missing = [], []
    for d in datasets:
        for v in variants:
            for s in seeds:
                run = runs / d / v.key / f"seed{s}"
                mtl_run = runs / d / v.paired / f"seed{s}"
                try:
                    r = read_run(str(run), nominal_event(v, d, extra))
                    m = store.read_metrics(str(mtl_run))
                except (store.StoreError, OSError, KeyError, ValueError) as err:
                    missing.append(f"{run}: {type(err).__name__}: {err}")
                    continue
                ov = run_overrides(v, d, {})
                rows.append({
                    "dataset": d, "row": v.row, "variant": v.key, "label": v.label,
                    "method": v.method,
                    "overrides": " ".join(
                        f"{k}={json.dumps(list(x) if isinstance(x, tuple) else x)}"
                        for k, x in ov.items()) or "(defaults)",
                    "seed": s, "run": str(run), "paired_mtl": v.paired,
                    "mtl_accuracy": float(m["main"]),
                    "mtl_parameters": int(m["n_parameters"]), **r,
                    "diff_vs_mtl": r["accuracy"] - float(m["main"]),
                })
    return rows, missing


# --- the report -----------------------------------------------------------------------------


def _pm(values) -> str:
    v = np.asarray(values, dtype=float)
    sd = np.std(v, ddof=1) if v.size > 1 else 0.0
    return f"{np.mean(v):.4f} ± {sd:.4f}"


def _per_seed(values, fmt: str) -> str:
    return " / ".join(format(x, fmt) for x in values)


def _same(rows: list[dict], key: str) -> str:
    """The value when every seed has the same, else the values per seed."""
    values = [r[key] for r in rows]
    return f"{values[0]:,}" if len(set(values)) == 1 else " / ".join(f"{v:,}" for v in values)


def reaches(rows: list[dict], key: str, datasets, seeds) -> bool:
    """Whether the variant is at or above its paired mtl on every seed of every dataset, with
    fewer parameters, and all of those runs exist."""
    mine = [r for r in rows if r["variant"] == key]
    if len(mine) != len(datasets) * len(seeds):
        return False
    return all(r["diff_vs_mtl"] >= 0 and r["parameters"] < r["mtl_parameters"] for r in mine)


def report(rows: list[dict], missing: list[str], datasets, seeds, variants, extra,
           wall: str | None) -> str:
    lines = [
        "# Merge study: why ss_similarity ends below mtl on the image datasets (issue 13)", "",
        "**Quick-profile runs** on `mnist_context` (MNIST digits in generated contexts) and "
        "`shapes_context` (generated scenes); seeds " + ", ".join(map(str, seeds)) + "; one "
        "torch thread per run. Written by `python reproduce/merge_study.py` from the run stores "
        "alone." + (f" Extra overrides on every run: `{extra}`." if extra else ""), "",
        "- accuracy: test accuracy, mean over the 8 tasks; mean ± sample std over seeds.",
        "- ss − mtl: per-seed paired difference to `mtl` at the same `train.steps` (defaults "
        "otherwise; the 450-step rows against `mtl` at 450 steps).",
        f"- pre / peak / recovery: mean task training loss over the {PRE_STEPS} steps before the "
        f"first event that merged estimators; its highest value over the {PEAK_STEPS} steps from "
        f"the event on; steps from the event until it is first within {RECOVERY_FACTOR:g}x pre "
        "(per seed). For `mtl` (no merge) the same figures at the step of the default event: "
        "the loss's ordinary noise.",
        f"- final loss: mean task training loss over the last {FINAL_STEPS} steps (per seed).",
        "- warm restart after the merge (row 2): `train.merge_warmup=20` restarts the "
        "learning rate at lr / 21 and raises it back to lr over 20 steps (the merge maps "
        "Adam's moments with the same matrix as the weights); the other row-2 variants move "
        "the event earlier or later, `train.steps` unchanged.", ""]
    for d in datasets:
        lines += [f"## {d} (quick profile)", "",
                  "| row | variant | accuracy | ss − mtl per seed | mean diff | ARI | groups | "
                  "parameters (vs paired mtl) | estimator params | merge at | pre loss | "
                  "peak loss | recovery (steps) | final loss |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for v in sorted(variants, key=lambda v: v.row):  # stable: priority order within a row
            mine = sorted((r for r in rows if r["dataset"] == d and r["variant"] == v.key),
                          key=lambda r: r["seed"])
            if not mine:
                lines.append(f"| {v.row} | {v.label} | not run | | | | | | | | | | | |")
                continue
            acc = [r["accuracy"] for r in mine]
            diff = [r["diff_vs_mtl"] for r in mine]
            rec = " / ".join(f"{r['recovery_steps']:.0f}" + ("" if r["recovered"] else "+")
                             for r in mine)
            merge = " / ".join(r["merge_steps"] or "none" for r in mine)
            ari = "n/a" if v.method == "mtl" else _per_seed([r["ari"] for r in mine], ".2f")
            seeds_note = "" if len(mine) == len(seeds) else f" ({len(mine)}/{len(seeds)} seeds)"
            lines.append(
                f"| {v.row} | {v.label}{seeds_note} | {_pm(acc)} | {_per_seed(diff, '+.4f')} | "
                f"{np.mean(diff):+.4f} | {ari} | "
                f"{_per_seed([r['groups'] for r in mine], 'd')} | "
                f"{_same(mine, 'parameters')} ({_same(mine, 'mtl_parameters')}) | "
                f"{_same(mine, 'estimator_parameters')} | {merge} | "
                f"{_per_seed([r['pre_loss'] for r in mine], '.3f')} | "
                f"{_per_seed([r['peak_loss'] for r in mine], '.3f')} | {rec} | "
                f"{_per_seed([r['final_train_loss'] for r in mine], '.3f')} |")
        lines.append("")
    lines += ["## Does any row reach mtl?", "",
              "At or above the paired `mtl` on every seed of both datasets, with fewer "
              "parameters:", ""]
    hits = []
    for v in variants:
        if v.method == "mtl":
            continue
        ok = reaches(rows, v.key, datasets, seeds)
        hits += [v.label] if ok else []
        neg = sum(1 for r in rows if r["variant"] == v.key and r["diff_vs_mtl"] < 0)
        tot = sum(1 for r in rows if r["variant"] == v.key)
        fewer = all(r["parameters"] < r["mtl_parameters"] for r in rows if r["variant"] == v.key)
        lines.append(f"- {v.label}: {'**yes**' if ok else 'no'} (below mtl on {neg} of {tot} "
                     f"(dataset, seed) pairs; fewer parameters on every run: "
                     f"{'yes' if fewer else 'no'})")
    for d in datasets:
        alone = [v.label for v in variants if v.method != "mtl"
                 and reaches([r for r in rows if r["dataset"] == d], v.key, [d], seeds)]
        lines.append(f"- on {d} alone, rows that reach it: "
                     + ("; ".join(alone) if alone else "none"))
    wide = {(r["dataset"], r["seed"]): r for r in rows if r["variant"] == "mtl_wide"}
    pairs = [(r, wide[(r["dataset"], r["seed"])]) for r in rows
             if r["variant"] == "ss_wide" and (r["dataset"], r["seed"]) in wide]
    if pairs:
        lines.append("- estimator_hidden=[128,64] against `mtl` with the same estimators "
                     "(ss − mtl_wide per seed): " + "; ".join(
                         f"{d}: " + " / ".join(f"{a['accuracy'] - b['accuracy']:+.4f}"
                                               for a, b in pairs if a["dataset"] == d)
                         for d in datasets) + " (parameters " + "; ".join(
                         f"{a['dataset']}: {a['parameters']:,} vs {b['parameters']:,}"
                         for a, b in pairs if a["seed"] == pairs[0][0]["seed"]) + ")")
    lines += ["", ("**Rows that reach mtl: " + ", ".join(hits) + ".**") if hits else
              "**No row reaches mtl's accuracy on both datasets on all seeds with fewer "
              "parameters.**", ""]
    dropped = [v.label for v in VARIANTS if v not in variants]
    if dropped:
        lines += ["Rows not run (dropped for time): " + "; ".join(dropped) + ".", ""]
    if missing:
        lines += ["Runs missing or incomplete:", ""] + [f"- {m}" for m in missing] + [""]
    if wall:
        lines += [wall, ""]
    return "\n".join(lines)


def write_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{x:.6g}" if isinstance(x, float) else x) for k, x in r.items()})
    return buf.getvalue()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/merge_study")
    p.add_argument("--out", default="results")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--variants", nargs="+", default=[v.key for v in VARIANTS],
                   choices=[v.key for v in VARIANTS],
                   help="variants to train and report (the paired mtl runs are added)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="KEY=VALUE", help="config override for every run")
    p.add_argument("--yield-to", default=None, metavar="PATTERN",
                   help="one run at a time while a process with PATTERN in its command line runs")
    p.add_argument("--report-only", action="store_true", help="rebuild the report, train nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        extra = parse_set(args.overrides)
        keys = set(args.variants) | {BY_KEY[k].paired for k in args.variants}
        variants = [v for v in VARIANTS if v.key in keys]
        jobs = plan(Path(args.runs), args.datasets, args.seeds, variants, extra)
        check_configs(jobs)
    except (ConfigError, GridError) as err:
        sys.exit(f"error: {err}")
    wall = None
    if not args.report_only:
        start = time.perf_counter()
        outcomes = train_all(jobs, args.workers, args.yield_to)
        seconds = time.perf_counter() - start
        trained = sum(1 for o in outcomes if o is not None and o.status == "trained")
        failed = [o for o in outcomes if o is not None and o.status == "failed"]
        wall = (f"Training: {trained} run(s) trained, {len(jobs) - trained - len(failed)} "
                f"reused, {len(failed)} failed, in {seconds:.0f} s wall time with up to "
                f"{args.workers} worker(s) on {os.cpu_count()} CPU(s).")
        for o in failed:
            print(f"failed: {o.job.run_dir}: {o.error}", file=sys.stderr)
        if trained:  # a rerun over complete runs keeps the record of the call that trained
            Path(args.runs).mkdir(parents=True, exist_ok=True)
            (Path(args.runs) / TIMING_FILE).write_text(json.dumps({"note": wall}))
    timing = Path(args.runs) / TIMING_FILE
    if timing.exists():
        wall = json.loads(timing.read_text())["note"]
    rows, missing = collect(Path(args.runs), args.datasets, args.seeds, variants, extra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = report(rows, missing, args.datasets, args.seeds, variants, extra, wall)
    (out / "merge_study.md").write_text(text)
    (out / "merge_study.csv").write_text(write_csv(rows))
    print(text)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
