"""Check that every dataset trains with a profile: run a grid and print one row per run.

Usage::

    python reproduce/check_datasets.py                       # mtl + ss_similarity, seeds 0 1 2
    python reproduce/check_datasets.py --datasets mnist_context --methods ss_similarity \\
        --seeds 0 1 2 --set train.steps=200 --events
    python reproduce/check_datasets.py --methods stl mtl_full ss_variance ss_kmeans --seeds 0

Columns: dataset, method, seed, wall s (the whole run: data, training, evaluation, store
writes), cpu s (this process's CPU time for the same span: with one thread, about the wall time
the run would take on an idle core, since the machine is shared), train s (the training loop
alone, from metrics.nc), the dataset's main metric, the adjusted Rand index of the final
groups against the true ones (``-`` where a dataset has none) and the number of groups. ``--events`` adds, per grouping event, the distance that ``auto``
chose and both silhouettes, which is what decides whether the image groups are recovered.
When School is in the grid, each seed's main metric (pooled explained variance) is printed beside
the three linear ridge baselines of Table 2 on the same split (:mod:`selective_sharing.core.linear`:
penalties chosen on a validation split of the training part, refitted on all of it).

Runs go one after another in this process; ``--threads`` (default 1) keeps a run from
oversubscribing a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from selective_sharing.core import store
from selective_sharing.core.cli import add_set_option
from selective_sharing.core.config import METHODS, PROFILES, make_config

DATASETS = ("synthetic", "school", "computer", "mnist_context", "shapes_context")
HEADER = (
    "dataset",
    "method",
    "seed",
    "wall s",
    "cpu s",
    "train s",
    "metric",
    "main",
    "ARI",
    "groups",
)


def run_one(
    dataset: str, method: str, seed: int, profile: str, out: Path, overrides: dict[str, str]
) -> dict[str, object]:
    """Train one run into ``out`` and return its table row as a dict."""
    from selective_sharing.core.training import train

    config = make_config(dataset, method, seed, profile, overrides, out=str(out))
    start, cpu = time.perf_counter(), time.process_time()
    run_dir = train(config, progress=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    metrics = store.read_metrics(run_dir)
    ari = float(metrics["adjusted_rand_index"]) if "adjusted_rand_index" in metrics else None
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "wall s": wall,
        "cpu s": cpu,
        "train s": float(metrics["wall_time_s"]),
        "metric": metrics.attrs["main_metric"],
        "main": float(metrics["main"]),
        "ARI": ari,
        "groups": int(metrics["n_groups"]),
        "events": event_summaries(run_dir),
    }


def event_summaries(run_dir: Path) -> list[str]:
    """One line per grouping event: step, chosen distance, silhouettes, entities before/after."""
    lines = []
    for path in store.list_events(run_dir):
        ev = store.read_event(path)
        sil = ", ".join(
            f"{d!s}={float(s):.3f}" for d, s in zip(ev["distance"].values, ev["silhouettes"].values)
        )
        lines.append(
            f"step {int(ev.attrs['step'])}: chose {ev.attrs.get('chosen_distance')}"
            f" (silhouettes {sil}), entities {int(ev.attrs['n_entities_before'])}"
            f" -> {int(ev.attrs['n_entities_after'])}"
        )
        ev.close()
    return lines


def format_row(row: dict[str, object]) -> list[str]:
    ari = "-" if row["ARI"] is None else f"{row['ARI']:.3f}"
    return [
        str(row["dataset"]),
        str(row["method"]),
        str(row["seed"]),
        f"{row['wall s']:.1f}",
        f"{row['cpu s']:.1f}",
        f"{row['train s']:.1f}",
        str(row["metric"]),
        f"{row['main']:.4f}",
        ari,
        str(row["groups"]),
    ]


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """Fixed-width text table of ``rows`` (dicts from :func:`run_one`)."""
    cells = [list(HEADER)] + [format_row(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(rows: Sequence[dict[str, object]]) -> str:
    """Mean main metric, ARI and wall time per (dataset, method) over seeds."""
    keys = sorted(
        {(r["dataset"], r["method"]) for r in rows},
        key=lambda k: (DATASETS.index(k[0]) if k[0] in DATASETS else len(DATASETS), k[1]),
    )
    out = ["", "mean over seeds:"]
    for ds, method in keys:
        sel = [r for r in rows if (r["dataset"], r["method"]) == (ds, method)]
        aris = [r["ARI"] for r in sel if r["ARI"] is not None]
        ari = f"  ARI {np.mean(aris):.3f} (min {np.min(aris):.3f})" if aris else ""
        out.append(
            f"  {ds:15s} {method:14s} {sel[0]['metric']} "
            f"{np.mean([r['main'] for r in sel]):.4f}{ari}"
            f"  wall {np.mean([r['wall s'] for r in sel]):.1f} s"
            f"  cpu {np.mean([r['cpu s'] for r in sel]):.1f} s  (n={len(sel)})"
        )
    return "\n".join(out)


def school_baselines(rows: Sequence[dict[str, object]], profile: str) -> str:
    """Per seed of the School rows: each method's pooled explained variance beside the linear
    ridge baselines of Table 2 on the same split (loaded as the runs loaded it)."""
    from selective_sharing.core.linear import LINEAR_METHODS, VAL_FRACTION, fit_linear
    from selective_sharing.datasets import load_dataset

    seeds = sorted({int(r["seed"]) for r in rows if r["dataset"] == "school"})
    if not seeds:
        return ""
    out = ["", "school: test pooled explained variance (%) per seed, runs vs ridge baselines "
           "(same split):"]
    for seed in seeds:
        data = load_dataset("school", profile=profile, seed=seed, val_fraction=VAL_FRACTION)
        runs = {r["method"]: r["main"] for r in rows if r["dataset"] == "school" and r["seed"] == seed}
        cells = [f"{m} {v:.2f}" for m, v in runs.items()]
        cells += [f"{m} {fit_linear(data, m).run_metrics['pooled_explained_variance']:.2f}"
                  for m in LINEAR_METHODS]
        out.append(f"  seed {seed} ({data.provenance.get('variant', '?')}): " + ", ".join(cells))
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--methods", nargs="+", default=["mtl", "ss_similarity"], choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--profile", default="quick", choices=PROFILES)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    add_set_option(p, "override a config value for every run (repeatable)")
    p.add_argument("--out", default=None, help="keep the run stores here (default: temporary)")
    p.add_argument("--events", action="store_true", help="print each run's grouping events")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    overrides.setdefault("train.threads", str(args.threads))
    rows = []
    with tempfile.TemporaryDirectory(prefix="check_datasets_") as tmp:
        root = Path(args.out or tmp)
        for ds in args.datasets:
            for method in args.methods:
                for seed in args.seeds:
                    out = root / ds / method / f"seed{seed}"
                    row = run_one(ds, method, seed, args.profile, out, overrides)
                    rows.append(row)
                    print(" | ".join(format_row(row)), flush=True)
                    if args.events:
                        for line in row["events"]:
                            print(f"    {line}", flush=True)
    print()
    print(format_table(rows))
    print(summary(rows))
    print(school_baselines(rows, args.profile))
    return rows


if __name__ == "__main__":
    main()
