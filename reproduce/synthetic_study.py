"""The synthetic-data study behind the defaults (core issue): grouping recovery, accuracy and
size, and the (noise, samples per task) grid. Reads and writes stores; safe to re-run (finished
runs are reused).

    python reproduce/synthetic_study.py [--runs runs/synthetic_study] [--out results/] [--workers 2]

Writes results/synthetic_study.md. Takes about 10 minutes on 2 CPU cores. All numbers come from
*generated* data (Kang-style synthetic regression, variant "synthetic").
"""

from __future__ import annotations

import argparse
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from selective_sharing.core import make_config, store

SEEDS = (0, 1, 2)
ARI_VARIANTS = {"default (auto)": {}, "branch_init=independent": {"branch_init": "independent"},
                "distance=cosine": {"distance": "cosine"},
                "distance=subspace": {"distance": "subspace"}}
ACCURACY_METHODS = ("stl", "mtl", "mtl_full", "ss_similarity")
NOISES, SAMPLES = (0.1, 0.5, 1.0), (15, 50, 100)
# Structure-free data: as many planted groups as tasks (no two tasks related); and one group.
SILHOUETTE_CASES = {"planted 3 groups": {}, "no structure (30 groups of 1)": {"data.n_groups": 30},
                    "one group": {"data.n_groups": 1}}


def _job(args: tuple[str, str, int, dict]) -> str:
    out, method, seed, overrides = args
    from selective_sharing.core.training import train

    if Path(out).exists():
        try:
            if store.read_manifest(out)["status"] == "complete":
                return out
        except store.StoreError:
            pass
        shutil.rmtree(out)
    cfg = make_config("synthetic", method, seed, overrides={"train.threads": 1, **overrides},
                      out=out)
    train(cfg, progress=False)
    return out


def _name(method: str, overrides: dict) -> str:
    tag = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in sorted(overrides.items()))
    return f"{method}{'_' + tag if tag else ''}"


def plan(runs: Path) -> dict[tuple, tuple]:
    jobs = {}

    def add(method, overrides, seed):
        jobs[(method, tuple(sorted(overrides.items())), seed)] = (
            str(runs / _name(method, overrides) / f"seed{seed}"), method, seed, overrides)

    for seed in SEEDS:
        for ov in [*ARI_VARIANTS.values(), *SILHOUETTE_CASES.values()]:
            add("ss_similarity", ov, seed)
        for m in ACCURACY_METHODS:
            add(m, {}, seed)
        for noise in NOISES:
            for n in SAMPLES:
                for m in ("mtl", "ss_similarity"):
                    add(m, {"noise": noise, "samples_per_task": n}, seed)
    return jobs


def _metric(jobs, method, overrides, name) -> np.ndarray:
    key = tuple(sorted(overrides.items()))
    vals = []
    for seed in SEEDS:
        out = jobs[(method, key, seed)][0]
        m = store.read_metrics(out)
        vals.append(float(m[name]) if name in m else np.nan)
    return np.asarray(vals)


def _silhouettes(jobs, overrides) -> list[float]:
    out = []
    for seed in SEEDS:
        ev = store.read_event(store.list_events(jobs[("ss_similarity",
                                                      tuple(sorted(overrides.items())), seed)][0])[0])
        out.append(float(ev["silhouettes"].sel(distance=ev.attrs["chosen_distance"])))
    return out


def pm(v: np.ndarray) -> str:
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"


def report(jobs) -> str:
    lines = ["# Synthetic study (generated data: variant `synthetic`)", "",
             "## Planted groups recovered (ARI per seed 0, 1, 2)", "",
             "| setting | ARI per seed | groups found |", "|---|---|---|"]
    for label, ov in ARI_VARIANTS.items():
        ari = _metric(jobs, "ss_similarity", ov, "adjusted_rand_index")
        ng = _metric(jobs, "ss_similarity", ov, "n_groups")
        lines.append(f"| {label} | {', '.join(f'{a:.2f}' for a in ari)} | "
                     f"{', '.join(str(int(g)) for g in ng)} |")
    lines += ["", "## Accuracy and size (default config, mean ± std over 3 seeds)", "",
              "| method | test RMSE | estimator parameters | all parameters |", "|---|---|---|---|"]
    for m in ACCURACY_METHODS:
        lines.append(f"| {m} | {pm(_metric(jobs, m, {}, 'main'))} | "
                     f"{pm(_metric(jobs, m, {}, 'n_parameters_estimators'))} | "
                     f"{pm(_metric(jobs, m, {}, 'n_parameters'))} |")
    lines += ["", "## ss_similarity vs mtl over (noise, samples per task): test RMSE", "",
              "| noise | samples/task | mtl | ss_similarity | ss - mtl | ARI | verdict |",
              "|---|---|---|---|---|---|---|"]
    for noise in NOISES:
        for n in SAMPLES:
            ov = {"noise": noise, "samples_per_task": n}
            a, b = _metric(jobs, "mtl", ov, "main"), _metric(jobs, "ss_similarity", ov,
                                                                   "main")
            diff = b - a
            se = np.std(diff, ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.inf
            verdict = "tie" if abs(diff.mean()) <= 2 * se else (
                "ss wins" if diff.mean() < 0 else "ss loses")
            ari = _metric(jobs, "ss_similarity", ov, "adjusted_rand_index")
            lines.append(f"| {noise} | {n} | {pm(a)} | {pm(b)} | {diff.mean():+.3f} | "
                         f"{np.mean(ari):.2f} | {verdict} |")
    lines += ["", "## Best-cut silhouette of the chosen distance at the event (min_silhouette)",
              "", "| data | silhouette per seed | groups found |", "|---|---|---|"]
    for label, ov in SILHOUETTE_CASES.items():
        ng = _metric(jobs, "ss_similarity", ov, "n_groups")
        lines.append(f"| {label} | {', '.join(f'{s:.3f}' for s in _silhouettes(jobs, ov))} | "
                     f"{', '.join(str(int(g)) for g in ng)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/synthetic_study")
    p.add_argument("--out", default="results")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    jobs = plan(Path(args.runs))
    with ProcessPoolExecutor(args.workers) as pool:
        list(tqdm(pool.map(_job, jobs.values()), total=len(jobs), desc="synthetic study"))
    text = report(jobs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "synthetic_study.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
