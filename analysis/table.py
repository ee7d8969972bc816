"""Table 2 from run stores alone: collect, summarize over seeds, write Markdown, LaTeX and CSV.

Pure (xarray/pandas, no torch). Every number comes from a run's ``manifest.json`` and
``metrics.nc`` (wall time included), so rebuilding the table from the same stores gives
byte-identical files. Layout: one block per dataset, one row per method, columns main metric
(mean ± sample std over seeds), parameters, ARI, groups, backward passes, wall time, seeds.
A cell is never silently empty: it holds a value, ``n/a (no true groups)``, or why it is missing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import store
from ..core.store.metric_info import COMPANION_METRICS, METRIC_LABELS

NO_GROUPS = "n/a (no true groups)"
# Direction of each main metric: True when higher is better.
HIGHER_IS_BETTER = {
    "rmse": False,
    "explained_variance": True,
    "accuracy": True,
    "ndcg": True,
    "spearman": True,
    "pooled_explained_variance": True,
    "nmse": False,
    "pooled_rmse": False,
}
# Columns marked "best" and their direction (None: the main metric's own direction).
BEST_COLUMNS = {
    "main_mean": None,
    "n_parameters": False,
    "ari_mean": True,
    "backward_passes": False,
    "wall_time_s": False,
}
_NUMBERS = ("main", "n_parameters", "n_groups", "backward_passes", "forward_passes", "wall_time_s")


def run_dir(runs_root: str | os.PathLike, dataset: str, method: str, seed: int) -> Path:
    """``runs_root/<dataset>/<method>/seed<seed>``: where the grid writes each run."""
    return Path(runs_root) / dataset / method / f"seed{seed}"


def _read_run(path: Path) -> dict:
    """One run's status and numbers; status ``missing`` when there is no manifest."""
    row: dict = {
        "status": "missing",
        "error": None,
        "variant": None,
        "main_metric": None,
        "has_groups": None,
        "ari": math.nan,
        **{k: math.nan for k in _NUMBERS},
    }
    if not (path / "manifest.json").exists():
        return row
    try:
        manifest = store.read_manifest(path)
    except store.StoreError as err:
        return {**row, "status": "failed", "error": str(err)}
    row.update(
        status=manifest.get("status", "missing"),
        error=manifest.get("error"),
        variant=(manifest.get("dataset") or {}).get("variant"),
        main_metric=manifest.get("main_metric"),
    )
    if "true_groups" in manifest:
        row["has_groups"] = manifest["true_groups"] is not None
    if row["status"] != "complete":
        return row
    try:
        metrics = store.read_metrics(path)
    except store.StoreError as err:
        return {**row, "status": "failed", "error": str(err)}
    row.update({k: float(metrics[k]) for k in _NUMBERS})
    row.update(main_metric=metrics.attrs["main_metric"], variant=metrics.attrs["variant"])
    if "adjusted_rand_index" in metrics:
        row["ari"] = float(metrics["adjusted_rand_index"])
    for name in COMPANION_METRICS.get(row["main_metric"], ()):
        if name in metrics:  # a run metric (scalar) or a task metric (its mean over tasks)
            values = np.asarray(metrics[name].values, dtype=float)
            finite = values[np.isfinite(values)]
            row[f"also_{name}"] = float(finite.mean()) if finite.size else math.nan
    return row


def collect_runs(
    runs_root: str | os.PathLike,
    datasets: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    optional_methods: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per (dataset, method, seed), in the given order, read from the stores.

    Columns: dataset, method, seed, status (complete/running/failed/missing), error, variant,
    main_metric, has_groups (True/False, None when unknown), ari, the numbers ``main``,
    ``n_parameters``, ``n_groups``, ``backward_passes``, ``forward_passes``, ``wall_time_s``
    (NaN unless complete), and ``also_<metric>`` for the metrics reported beside the main one
    (:data:`~selective_sharing.core.metrics.COMPANION_METRICS`).

    ``optional_methods`` (e.g. the linear baselines, which exist for regression data only)
    follow ``methods``; a dataset gets their rows only where at least one seed has a run.
    """
    rows = []
    for d in datasets:
        for m in [*methods, *(o for o in optional_methods if o not in methods)]:
            cell = [{"dataset": d, "method": m, "seed": int(s),
                     **_read_run(run_dir(runs_root, d, m, s))} for s in seeds]
            if m in methods or any(r["status"] != "missing" for r in cell):
                rows += cell
    return pd.DataFrame(rows)


def _first(values: pd.Series) -> object:
    known = values.dropna()
    return known.iloc[0] if len(known) else None


def _variant(values: pd.Series) -> str:
    """The dataset's provenance label; several (real and substitute runs) are flagged, not mixed
    silently."""
    found = sorted(set(values.dropna()))
    if len(found) > 1:
        return "MIXED " + "+".join(found)
    return found[0] if found else "unknown"


def _cell_summary(cell: pd.DataFrame, has_groups: bool | None) -> dict:
    done = cell[cell["status"] == "complete"]
    n = len(done)
    out = {"n_complete": n, "n_seeds": len(cell)}
    for key in ("main", "ari", "n_groups"):
        vals = done[key].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        out[f"{key}_mean"] = float(vals.mean()) if vals.size else math.nan
        out[f"{key}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
    for key in ("n_parameters", "backward_passes", "forward_passes", "wall_time_s"):
        out[key] = float(done[key].mean()) if n else math.nan
    for key in (c for c in cell.columns if c.startswith("also_")):
        vals = done[key].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[f"{key}_mean"] = float(vals.mean())
            out[f"{key}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
    if cell["method"].iloc[0] == "oracle" and has_groups is False:
        out["note"] = NO_GROUPS
    elif n < len(cell):
        bad = cell[cell["status"] != "complete"]
        kinds = ", ".join(f"{k} {v}" for k, v in bad["status"].value_counts(sort=False).items())
        out["note"] = f"{n}/{len(cell)} seeds complete ({kinds})"
    else:
        out["note"] = ""
    return out


def _mark_best(block: pd.DataFrame, higher_main: bool) -> pd.DataFrame:
    """Flag the best row(s) of each column in ``BEST_COLUMNS``; ties at display precision."""
    for col, higher in BEST_COLUMNS.items():
        higher = higher_main if higher is None else higher
        vals = block[col].round(_DIGITS.get(col, 6))
        flag = pd.Series(False, index=block.index)
        if vals.notna().any():
            best = vals.max() if higher else vals.min()
            flag = vals == best
        block[f"best_{col}"] = flag
    return block


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method): mean and sample std (ddof=1) over complete seeds.

    Columns: dataset, variant, main_metric, higher_is_better, method, n_complete, n_seeds,
    main_mean/std, ari_mean/std, n_groups_mean/std, n_parameters, backward_passes,
    forward_passes, wall_time_s (means), note, and ``best_<column>`` flags per dataset.
    """
    blocks = []
    for dataset, runs_d in runs.groupby("dataset", sort=False):
        known = runs_d["has_groups"].dropna()
        has_groups = bool(known.any()) if len(known) else None
        metric = _first(runs_d["main_metric"])
        higher = HIGHER_IS_BETTER.get(metric, True)
        rows = [
            {
                "dataset": dataset,
                "variant": _variant(runs_d["variant"]),
                "main_metric": metric or "unknown",
                "higher_is_better": higher,
                "has_groups": has_groups,
                "method": method,
                **_cell_summary(cell, has_groups),
            }
            for method, cell in runs_d.groupby("method", sort=False)
        ]
        blocks.append(_mark_best(pd.DataFrame(rows), higher))
    return pd.concat(blocks, ignore_index=True)


# ----------------------------------------------------------------------------- formatting

_DIGITS = {"main_mean": 3, "ari_mean": 3, "n_parameters": 0, "backward_passes": 0, "wall_time_s": 1}
#: Short names of the metrics reported beside the main one.
ALSO_LABELS = {"nmse": "nMSE", "explained_variance": "per-task EV %", "ndcg": "NDCG@10"}
HEADERS = (
    "method",
    "{metric}",
    "also reported",
    "parameters",
    "ARI",
    "groups",
    "backward passes",
    "wall time (s)",
    "seeds",
)


def _num(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"


def _mean_std(mean: float, std: float, digits: int, pm: str) -> str:
    if not math.isfinite(mean):
        return ""
    return _num(mean, digits) + ("" if not math.isfinite(std) else f"{pm}{std:.{digits}f}")


def _cells(r: Any, pm: str) -> list[str]:
    """Display strings of one row (unmarked); empty where a later rule fills in why."""
    groups = (
        ""
        if not math.isfinite(r.n_groups_mean)
        else (
            f"{r.n_groups_mean:g}"
            if float(r.n_groups_mean).is_integer()
            else f"{r.n_groups_mean:.1f}"
        )
    )
    ari = NO_GROUPS if r.has_groups is False else _mean_std(r.ari_mean, r.ari_std, 3, pm)
    also = []
    for name in r._fields:
        if name.startswith("also_") and name.endswith("_mean"):
            metric = name[len("also_"):-len("_mean")]
            text = _mean_std(getattr(r, name), getattr(r, f"also_{metric}_std"), 3, pm)
            if text:
                also.append(f"{ALSO_LABELS.get(metric, metric)} {text}")
    return [
        _mean_std(r.main_mean, r.main_std, 3, pm),
        "; ".join(also) if also else "-",
        "" if not math.isfinite(r.n_parameters) else _num(r.n_parameters, 0),
        ari,
        groups,
        "" if not math.isfinite(r.backward_passes) else _num(r.backward_passes, 0),
        "" if not math.isfinite(r.wall_time_s) else _num(r.wall_time_s, 1),
        f"{r.n_complete}/{r.n_seeds}",
    ]


_MARKED = {0: "main_mean", 2: "n_parameters", 3: "ari_mean", 5: "backward_passes",
           6: "wall_time_s"}


def _row(r: Any, pm: str, bold: str, esc: Callable[[str], str] = str) -> list[str]:
    """Display cells of one summary row (a namedtuple); ``esc`` escapes free text."""
    cells = _cells(r, pm)
    for i, col in _MARKED.items():
        if getattr(r, f"best_{col}") and cells[i] and cells[i] != NO_GROUPS:
            cells[i] = bold.format(cells[i])
    if r.note:  # why numbers are missing, in the first empty cell (never silently empty)
        empty = [i for i, c in enumerate(cells) if not c]
        for i in empty:
            cells[i] = esc(r.note) if i == empty[0] else "-"
    return [esc(r.method), *cells]


def _title(b: pd.DataFrame) -> tuple[str, str]:
    r = b.iloc[0]
    direction = "higher is better" if r.higher_is_better else "lower is better"
    label = METRIC_LABELS.get(r.main_metric, r.main_metric)
    return f"{r.dataset} ({r.variant})", f"{label}, {direction}"


def to_markdown(summary: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """The table as Markdown: one section per dataset, best per column in bold."""
    out = ["# Table 2", ""]
    for _, b in summary.groupby("dataset", sort=False):
        name, metric = _title(b)
        head = [h.format(metric=b.iloc[0].main_metric) for h in HEADERS]
        out += [
            f"## {name}: {metric}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        out += ["| " + " | ".join(_row(r, " ± ", "**{}**")) + " |" for r in b.itertuples()]
        out.append("")
    out += [f"- {n}" for n in notes]
    return "\n".join(out).rstrip() + "\n"


def _tex(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")


def to_latex(summary: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """The table as one booktabs ``tabular``, a header row per dataset, best in bold."""
    n = len(HEADERS)
    lines = [
        r"\begin{tabular}{l" + "r" * (n - 1) + "}",
        r"\toprule",
        " & ".join(_tex(h.format(metric="main metric")) for h in HEADERS) + r" \\",
    ]
    for _, b in summary.groupby("dataset", sort=False):
        name, metric = _title(b)
        lines += [
            r"\midrule",
            rf"\multicolumn{{{n}}}{{l}}{{\textbf{{{_tex(name)}}}: {_tex(metric)}}} \\",
        ]
        for r in b.itertuples():
            lines.append(" & ".join(_row(r, r" $\pm$ ", r"\textbf{{{}}}", _tex)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {n_}" for n_ in notes]
    return "\n".join(lines) + "\n"


def to_csv(summary: pd.DataFrame) -> str:
    """The summary as CSV: full-precision numbers, ``best_*`` flag columns, one row per cell."""
    return summary.to_csv(index=False, lineterminator="\n", float_format="%.10g")


def write_table(
    summary: pd.DataFrame, out_dir: str | os.PathLike, notes: Sequence[str] = ()
) -> list[Path]:
    """Write ``table2.md``, ``table2.tex`` and ``table2.csv`` into ``out_dir``; return paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        "table2.md": to_markdown(summary, notes),
        "table2.tex": to_latex(summary, notes),
        "table2.csv": to_csv(summary),
    }
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / name for name in texts]
