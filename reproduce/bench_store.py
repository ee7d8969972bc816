"""Replay time and store size of a complete run, and how the history grows (issue 6).

:func:`make_run` trains a complete ``ss_similarity`` run with ``n_events`` grouping events on
synthetic data (``min_silhouette=1``: every event computes everything and merges nothing, so
every event has all entities: the most expensive run of its size to store and to replay).
:func:`replay_time` times ``selective_sharing.analysis.replay`` on it (exact replay: every event
read from its file, decoded and recomputed) and splits that into its parts: reading (the very
calls replay makes), recomputing the decisions, and the rest (comparing, reporting);
:func:`store_sizes` lists the run's files and what an event file holds, variable by variable.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr
from bench_steps import SIZES, bench_data
from selective_sharing.analysis import replay
from selective_sharing.analysis.events import grouping_config, read_event_file, read_events
from selective_sharing.core import store
from selective_sharing.core.config import make_config
from selective_sharing.core.grouping import grouping_event
from selective_sharing.core.store import netcdf_encoding
from selective_sharing.core.training import train


def make_run(
    root: Path, n_tasks: int = 40, size: str = "5k", n_events: int = 50, every: int = 32
) -> Path:
    """Train a run with ``n_events`` events, one every ``every`` steps; return its directory.
    ``every`` >= ``window_bins`` (32) fills every trajectory bin, as a long run does."""
    data = bench_data(n_tasks)
    overrides = {
        **SIZES[size],
        "train.steps": every * n_events + 1,
        "batch_size": None,
        "warmup_steps": every,
        "regroup_every": every,
        "max_events": n_events,
        "min_silhouette": 1.0,
        "probe_size": 16,
    }
    cfg = make_config(
        "synthetic",
        "ss_similarity",
        overrides=overrides,
        out=str(root / f"replay_T{n_tasks}_{size}"),
    )
    return train(cfg, data=data, progress=False)


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall)), float(np.median(cpu)), out


def replay_time(run_dir: Path, repeats: int = 3) -> dict[str, object]:
    """Median wall and CPU seconds of an exact replay, split into reading (``read_events``
    without bins, as replay reads: only the variables decoding uses, checksums verified),
    deciding (``grouping_event`` on every event) and the rest of replay (``other``: comparing
    with the recorded event, chaining, the report; replay less the other two), and the time of
    reading and deciding the first 10, 25, ... events (for the scaling fit)."""
    wall, cpu, report = _timed(lambda: replay(run_dir), repeats)
    read_wall, read_cpu, (_, decoded) = _timed(lambda: read_events(run_dir, bins=False), repeats)

    def decide(events):
        for rec, meta in events:
            grouping_event(
                rec.summed,
                rec.assignment_before,
                rec.streak_before,
                grouping_config(meta["grouping_config"]),
            )

    decide_wall, decide_cpu, _ = _timed(lambda: decide(decoded), repeats)
    n = len(decoded)
    prefix = {}
    for k in sorted({min(n, 10), min(n, 25), n}):
        paths = store.list_events(run_dir)[:k]
        prefix[k] = _timed(
            lambda paths=paths: decide([read_event_file(p, bins=False) for p in paths]), 1
        )[0]
    return {
        "replay_s": wall,
        "replay_cpu_s": cpu,
        "matched": bool(report.matched),
        "n_events": n,
        "read_s": read_wall,
        "read_cpu_s": read_cpu,
        "decide_s": decide_wall,
        "decide_cpu_s": decide_cpu,
        "other_s": max(0.0, wall - read_wall - decide_wall),
        "other_cpu_s": max(0.0, cpu - read_cpu - decide_cpu),
        "by_events_s": prefix,
    }


def _var_bytes(ds: xr.Dataset, tmp: Path) -> dict[str, int]:
    """Compressed bytes of each data variable: the file with it alone minus the file without
    any (same store encoding)."""

    def size(sub: xr.Dataset) -> int:
        path = tmp / "one.nc"
        sub.to_netcdf(path, engine="netcdf4", encoding=netcdf_encoding(sub))
        n = path.stat().st_size
        path.unlink()
        return n

    empty = size(ds.drop_vars(list(ds.data_vars)))
    return {v: max(0, size(ds[[v]]) - empty) for v in ds.data_vars}


def store_sizes(run_dir: Path) -> dict[str, object]:
    """Bytes of each file of the run, per event and per 1,000 steps, and per event variable."""
    paths = store.RunPaths(run_dir)
    steps = int(store.read_history(run_dir).sizes["step"])
    events = store.list_events(run_dir)
    files = {
        p.relative_to(run_dir).as_posix(): p.stat().st_size
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }
    event_sizes = [p.stat().st_size for p in events]
    ds = store.read_event(events[0])
    per_var = _var_bytes(ds, paths.run_dir)
    per_var["(metadata, attributes)"] = max(0, int(np.mean(event_sizes)) - sum(per_var.values()))
    return {
        "steps": steps,
        "n_events": len(events),
        "history_bytes": paths.history.stat().st_size,
        "history_bytes_per_1000_steps": paths.history.stat().st_size * 1000 / steps,
        "event_bytes": float(np.mean(event_sizes)),
        "event_var_bytes": dict(sorted(per_var.items(), key=lambda kv: -kv[1])),
        "event_var_raw_bytes": {v: int(ds[v].nbytes) for v in ds.data_vars}
        | {"(metadata, attributes)": 0},
        "files": {k: v for k, v in files.items() if not k.startswith("events/")},
        "events_total_bytes": int(sum(event_sizes)),
    }


def history_growth(
    root: Path, n_tasks: tuple[int, ...] = (8, 40, 139), steps: tuple[int, ...] = (250, 1000, 4000)
) -> list[dict[str, float]]:
    """Bytes and write seconds of ``history.nc`` for each (tasks, steps): the trainer rewrites
    the whole history at every event, so its cost per event grows with the steps so far."""
    rng = np.random.default_rng(0)
    rows = []
    for t in n_tasks:
        for s in steps:
            ds = store.encode_history(
                step=np.arange(s),
                loss=rng.random((s, t), dtype=np.float32),
                grad_norm=rng.random((s, t), dtype=np.float32),
                lr=np.full(s, 1e-2),
                assignment=np.tile(np.arange(t), (s, 1)),
                task_names=[f"t{i}" for i in range(t)],
            )
            run = root / f"hist_{t}_{s}"
            wall, _, _ = _timed(lambda run=run, ds=ds: store.write_history(run, ds), 3)
            rows.append(
                {
                    "tasks": t,
                    "steps": s,
                    "bytes": store.RunPaths(run).history.stat().st_size,
                    "write_s": wall,
                }
            )
    return rows
