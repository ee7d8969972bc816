"""Where the gradient group signal lives, on the planted-group generators (GENERATED data only).

    python reproduce/signal_study.py [--runs runs/signal_study] [--out results] [--workers 2]
                                     [--seeds 0 1 2 3 4] [--generators NAME ...] [--report-only]

``reproduce/calibration.py`` finds that no merge rule reaches issue 13's target from what one
event stores, while each task's linear fit, clustered by the same cut, recovers most planted
groups. This study asks where the gradient features lose the signal. Per (generator,
structured/structure-free version, seed) it trains ``ss_similarity`` with the calibration's
settings (quick profile, one torch thread) and merging off (``grouping.min_silhouette=1.0``:
every window is read from tasks that all kept their own estimator) in two variants:

- ``windows``: an event every 40 steps (steps 40, 80, 120, 160; ``regroup_every=40``). Its first
  window (steps 0-40) is the calibration run's window. At every event a callback
  (:class:`ProbeOutputs`) also saves every branch's outputs on the training inputs, for a
  comparison of the tasks' functions instead of their gradients;
- ``prior``: one event at step 40, each task's head bias first set to its label prior (mean
  target; log-odds of the positive rate; centred log class frequencies), so the residuals that
  the first steps' gradients carry have mean zero.

From the event files alone (``summed``), for each feature below, the decision's cut (cosine
distance, average linkage, silhouette-best cut, no floor): structured pairs recovered at
ARI >= 0.9, the truth-chosen ceiling (the best ARI over every cut of the same tree) and the
best-cut silhouettes of the structured and the structure-free versions. Features: each window;
all windows summed; three transforms of the first window (unit rows centred across tasks; the
dominant common direction removed; trunk coordinates whitened by the pooled covariance of all
tasks' rows); the branches' outputs on the training inputs (centred over the inputs) after the
first and the last window; the ``prior`` window. The calibration's training-free linear-fit
reference is the last row. Writes ``OUT/signal_study.md`` and ``OUT/signal_study.csv``; ``--report-only``
rebuilds them from the stores.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration as cal  # the sibling script (the path above): generators, formatting
from selective_sharing.core import make_config, store
from selective_sharing.core.grouping.distances import finalize_distances
from selective_sharing.core.grouping.silhouette import (
    average_linkage,
    best_cut,
    labels_after_merges,
)
from selective_sharing.datasets.planted import GENERATORS, planted

EVERY = 40  # steps between the windows of the ``windows`` variant
VARIANTS = {
    "windows": {"warmup_steps": EVERY, "regroup_every": EVERY},
    "prior": {"warmup_steps": EVERY},
}
COMMON = {"train.threads": 1, "grouping.min_silhouette": 1.0}  # merging off
COLUMNS = ("feature", "generator", "version", "seed", "n_tasks", "ari", "ceiling", "silhouette",
           "groups_found")


@dataclass(frozen=True)
class Job:
    generator: str
    structured: bool
    seed: int
    variant: str
    out: str

    @property
    def version(self) -> str:
        return cal.VERSIONS[self.structured]

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.generator}/{self.version}/seed{self.seed}"


def plan(runs: Path, generators, seeds) -> list[Job]:
    return [Job(g, s, int(seed), v, str(runs / v / g / cal.VERSIONS[s] / f"seed{seed}"))
            for v in VARIANTS for g in generators for s in (True, False) for seed in seeds]


def label_prior(data) -> list[np.ndarray]:
    """Each task's head bias that predicts its training label distribution: the mean target
    (regression), the log-odds of the positive rate (binary, rate clipped to [1e-3, 1 - 1e-3]),
    or centred log class frequencies (multiclass, frequencies clipped below at 1e-3)."""
    out = []
    for t, spec in enumerate(data.tasks):
        m = np.asarray(data.m_train[:, t], dtype=bool)
        y = np.asarray(data.y_train[m, t], dtype=np.float64)
        if spec.type == "regression":
            out.append(np.array([y.mean()]))
        elif spec.type == "binary":
            p = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
            out.append(np.array([np.log(p / (1 - p))]))
        else:
            f = np.bincount(y.astype(np.int64), minlength=spec.n_classes) / y.size
            log_f = np.log(np.clip(f, 1e-3, None))
            out.append(log_f - log_f.mean())
    return out


def run_job(job: Job) -> tuple[Job, str]:
    """Train one run unless a complete one on the same data is there already."""
    from selective_sharing.core.training import train

    data = planted(job.generator, job.seed, job.structured)
    probes = Path(job.out) / PROBE_DIR
    if cal._complete_on(job.out, data.provenance["sha256"]) and (
            job.variant != "windows" or probes.is_dir()):
        return job, "reused"
    if Path(job.out).exists():
        shutil.rmtree(job.out)
    config = make_config(data.name, "ss_similarity", job.seed, "quick",
                         overrides={**COMMON, **VARIANTS[job.variant]}, out=job.out)
    model = prior_model(config, data) if job.variant == "prior" else None
    callbacks = [ProbeOutputs(data.x_train, probes)] if job.variant == "windows" else []
    train(config, data=data, model=model, progress=False, callbacks=callbacks)
    return job, "trained"


#: Where a ``windows`` run keeps its branches' outputs on the probe inputs, one file per event.
PROBE_DIR = "probe_outputs"


class ProbeOutputs:
    """``on_event``: every branch's outputs on the probe inputs (here every training input),
    centred over the inputs, saved as ``DIR/event_<k>.npy`` ``(T, N * O)`` float32 (task ``t``'s
    row: its outputs, input-major, output-minor). A comparison of the tasks' *functions*, not of
    their gradients: one forward pass per event, outside the decision (the study reads it)."""

    def __init__(self, inputs: np.ndarray, directory: Path) -> None:
        self.inputs, self.directory = np.asarray(inputs, dtype=np.float32), Path(directory)

    def on_event(self, trainer, result) -> None:
        import torch

        with torch.no_grad():
            out = trainer.model(torch.as_tensor(self.inputs, device=trainer.device)).float()
        out = (out - out.mean(dim=0, keepdim=True)).permute(1, 0, 2)
        self.directory.mkdir(parents=True, exist_ok=True)
        index = trainer.sharing.n_events - 1
        np.save(self.directory / f"event_{index:06d}.npy",
                out.reshape(out.shape[0], -1).cpu().numpy())


def prior_model(config, data):
    """The built-in model of ``config`` on ``data`` (the weights ``train`` would build), with
    each task's head bias set to :func:`label_prior`."""
    import torch
    from selective_sharing.core.model import build_model
    from selective_sharing.core.training import _defaults_for

    full = _defaults_for(config, data)
    model = build_model(data.input_shape, data.tasks, full.model, np.arange(data.n_tasks), 1,
                        seed=full.seed)
    with torch.no_grad():
        for t, bias in enumerate(label_prior(data)):
            model.head_bias[t, :bias.size] = torch.as_tensor(bias, dtype=torch.float32)
    return model


# --- features of the stored windows -------------------------------------------------------------


def _flat(summed: np.ndarray) -> np.ndarray:
    return np.asarray(summed, dtype=np.float64).reshape(len(summed), -1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def centred(summed: np.ndarray) -> np.ndarray:
    """Unit rows minus their mean over the tasks (what every task shares removed)."""
    x = _unit(_flat(summed))
    return x - x.mean(axis=0)


def dominant_removed(summed: np.ndarray) -> np.ndarray:
    """Unit rows with their projection on the top right singular vector removed."""
    x = _unit(_flat(summed))
    top = np.linalg.svd(x, full_matrices=False)[2][:1]
    return x - (x @ top.T) @ top


def whitened(summed: np.ndarray) -> np.ndarray:
    """Each task's (R, C) window with its trunk coordinates (columns) whitened by the pooled
    covariance of every task's rows (eigenvalues floored at 1e-6 of the largest)."""
    a = np.asarray(summed, dtype=np.float64)
    rows = a.reshape(-1, a.shape[-1])
    rows = rows - rows.mean(axis=0)
    vals, vecs = np.linalg.eigh(rows.T @ rows / len(rows))
    vals = np.maximum(vals, vals.max() * 1e-6)
    return (a @ (vecs / np.sqrt(vals)) @ vecs.T).reshape(len(a), -1)


FIRST_WINDOW_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "first window, unit rows centred across tasks": centred,
    "first window, dominant common direction removed": dominant_removed,
    "first window, trunk coordinates whitened": whitened,
}


def cut_of(features: np.ndarray, truth: np.ndarray) -> dict:
    """The decision's cut on ``features`` (cosine, average linkage, silhouette-best, no floor):
    its ARI against ``truth``, the best ARI over every cut of the tree, its silhouette."""
    unit = _unit(np.asarray(features, dtype=np.float64))
    d = finalize_distances(1.0 - unit @ unit.T, np.zeros(len(unit), dtype=bool), 2.0)
    tree = average_linkage(d)
    cut = best_cut(d, tree)
    n = len(d)
    ceiling = max(adjusted_rand_score(truth, labels_after_merges(tree, n, m))
                  for m in range(1, n - 1))
    return {"ari": float(adjusted_rand_score(truth, cut.labels)), "ceiling": float(ceiling),
            "silhouette": float(cut.silhouette), "groups_found": int(np.unique(cut.labels).size)}


def read_rows(jobs: list[Job]) -> list[dict]:
    """One row per (feature, run), from the event files (and manifests) alone."""
    rows = []
    for job in jobs:
        manifest = store.read_manifest(job.out)
        if manifest.get("status") != "complete":
            raise store.StoreError(f"{job.out}: run status {manifest.get('status')!r}")
        truth = (np.asarray(manifest["true_groups"]) if job.structured
                 else np.arange(len(manifest["true_groups"])))
        windows = [store.read_event(p)["summed"].values for p in store.list_events(job.out)]
        base = {"generator": job.generator, "version": job.version, "seed": job.seed,
                "n_tasks": len(truth)}
        if job.variant == "prior":
            features = {"first window, head biases at the label prior": _flat(windows[0])}
        else:
            features = {f"window {k} (steps {EVERY * k}-{EVERY * (k + 1)})": _flat(w)
                        for k, w in enumerate(windows)}
            features["all windows summed"] = _flat(sum(windows))
            features.update({name: fn(windows[0])
                             for name, fn in FIRST_WINDOW_TRANSFORMS.items()})
            for k in (0, len(windows) - 1):
                features[f"branch outputs on the training inputs, step {EVERY * (k + 1)} "
                         "(not a gradient)"] = np.load(
                    Path(job.out) / PROBE_DIR / f"event_{k:06d}.npy").astype(np.float64)
        rows += [{"feature": name, **base, **cut_of(f, truth)} for name, f in features.items()]
    return rows


LINEAR = "per-task linear fits (training-free reference)"


def linear_rows(generators, seeds) -> list[dict]:
    """The calibration's linear-fit reference, as rows of this study (with its ceiling)."""
    rows = []
    for g in generators:
        for structured in (True, False):
            for seed in seeds:
                data = planted(g, int(seed), structured)
                rows.append({"feature": LINEAR, "generator": g,
                             "version": cal.VERSIONS[structured], "seed": int(seed),
                             "n_tasks": data.n_tasks,
                             **cut_of(cal.task_coefficients(data), np.asarray(data.groups))})
    return rows


def report(rows: list[dict], generators, seeds, failed=()) -> str:
    features = list(dict.fromkeys(r["feature"] for r in rows))
    lines = [
        "# Where the gradient group signal lives (GENERATED data)",
        "",
        ("**All numbers below come from GENERATED data** "
         "(`selective_sharing.datasets.planted`). "
         f"`ss_similarity`, quick profile, merging off; seeds {', '.join(map(str, seeds))}; "
         f"generators: {', '.join(generators)}. Every feature is clustered by the decision's "
         "cut (cosine distance, average linkage, silhouette-best cut, no floor). Recovered: "
         f"structured pairs with ARI >= {cal.ARI_GOAL}. Ceiling: pairs where some cut of the "
         "same tree reaches it (chosen with the planted groups in hand). Silhouettes: min / "
         "median / max of the best cut. Per generator: recovered pairs in the order above."),
        "",
        ("| feature | recovered | ceiling | per generator | silhouette structured | silhouette "
         "structure-free | structured above every structure-free |"),
        "|---|---|---|---|---|---|---|",
    ]
    for name in features:
        s = [r for r in rows if r["feature"] == name and r["version"] == "structured"]
        f = [r for r in rows if r["feature"] == name and r["version"] == "free"]
        top_free = max((r["silhouette"] for r in f), default=np.nan)
        per = ", ".join(str(sum(r["ari"] >= cal.ARI_GOAL for r in s if r["generator"] == g))
                        for g in generators)
        lines.append(
            f"| {name} | {cal._pct(sum(r['ari'] >= cal.ARI_GOAL for r in s), len(s))} | "
            f"{cal._pct(sum(r['ceiling'] >= cal.ARI_GOAL for r in s), len(s))} | {per} | "
            f"{cal._stats(r['silhouette'] for r in s)} | "
            f"{cal._stats(r['silhouette'] for r in f) if f else 'n/a'} | "
            f"{sum(r['silhouette'] > top_free for r in s) if f else 'n/a'}/{len(s)} |")
    if failed:
        lines += ["", "## Failed runs (left out above)", ""]
        lines += [f"- {job.out}: {why}" for job, why in failed]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/signal_study")
    p.add_argument("--out", default="results")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=list(cal.SEEDS))
    p.add_argument("--generators", nargs="+", default=list(GENERATORS), choices=sorted(GENERATORS),
                   metavar="NAME")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild the report from the stores in --runs")
    args = p.parse_args(argv)
    start = time.perf_counter()
    jobs = plan(Path(args.runs), args.generators, args.seeds)
    failed = [] if args.report_only else cal.train_all(jobs, args.workers, run_job)["failed"]
    bad = {job.out for job, _ in failed}
    rows = read_rows([j for j in jobs if j.out not in bad])
    rows += linear_rows(args.generators, args.seeds)
    text = report(rows, args.generators, args.seeds, failed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "signal_study.md").write_text(text)
    with (out / "signal_study.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(text)
    print(f"wrote {out / 'signal_study.md'} and {out / 'signal_study.csv'}; wall time "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
