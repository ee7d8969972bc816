"""Table 2: the grid runner (skip, rerun, dependencies, failures, executors) and the table.

The end-to-end tests run a tiny grid (9 synthetic tasks, 30 steps) through
``reproduce/table2.py``; the table tests build fake run stores (no torch, milliseconds).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reproduce_scripts import load_script
from selective_sharing.analysis.table import (
    NO_GROUPS,
    collect_runs,
    summarize_runs,
    to_markdown,
    write_table,
)
from selective_sharing.core import store
from selective_sharing.core.config import ConfigError
from selective_sharing.core.grid import GridError, Job, plan_grid, run_grid, summarize_outcomes
from selective_sharing.core.linear import LINEAR_METHODS

SCRIPT = Path(__file__).resolve().parents[1] / "reproduce" / "table2.py"
TINY = ["train.steps=30", "sharing.warmup_steps=10", "n_tasks=9", "samples_per_task=30"]
METHODS = ["ss_similarity", "random_groups"]


def _table2():
    return load_script("table2")


def _args(root: Path, *extra: str, runs: str = "runs", out: str = "results") -> list[str]:
    sets = [a for kv in TINY for a in ("--set", kv)]
    return [
        "--datasets",
        "synthetic",
        "--methods",
        *METHODS,
        "--seeds",
        "2",
        "--runs",
        str(root / runs),
        "--out",
        str(root / out),
        "--no-progress",
        *sets,
        *extra,
    ]


def _stamps(runs: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(runs.rglob("*")) if p.is_file()}


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _statuses(runs: Path) -> dict[str, str]:
    return {
        f"{m}/seed{s}": store.read_manifest(runs / "synthetic" / m / f"seed{s}")["status"]
        for m in METHODS
        for s in (0, 1)
        if (runs / "synthetic" / m / f"seed{s}" / "manifest.json").exists()
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """A complete tiny grid (2 methods x 2 seeds), trained in this process (fast)."""
    root = tmp_path_factory.mktemp("grid")
    assert _table2().main(_args(root, "--executor", "serial")) == 0
    return root


# ----------------------------------------------------------------------------- end to end


def test_grid_writes_all_runs_and_three_tables(grid: Path) -> None:
    assert set(_statuses(grid / "runs").values()) == {"complete"}
    assert len(_statuses(grid / "runs")) == 4
    csv = pd.read_csv(grid / "results" / "table2.csv")
    # the linear baselines follow the trained methods on regression data
    assert list(csv["method"]) == METHODS + list(LINEAR_METHODS)
    assert (csv["n_complete"] == 2).all()
    linear = store.read_manifest(grid / "runs" / "synthetic" / "ridge_pooled" / "seed0")
    assert linear["trained_by"] == "linear_baseline"
    assert linear["data_config"]["options"]["n_tasks"] == 9  # the runs' data, as overridden
    ss = store.read_metrics(grid / "runs" / "synthetic" / "ss_similarity" / "seed0")
    rnd = store.read_metrics(grid / "runs" / "synthetic" / "random_groups" / "seed0")
    assert int(rnd["n_groups"]) == int(ss["n_groups"]), "random_groups copies the ss groups"
    md = (grid / "results" / "table2.md").read_text()
    assert "## synthetic (synthetic): RMSE (mean over tasks), lower is better" in md
    assert "\\begin{tabular}" in (grid / "results" / "table2.tex").read_text()


def test_rerun_trains_nothing_and_rewrites_an_identical_table(grid: Path, capsys) -> None:
    before = _stamps(grid / "runs")
    tables = {p.name: p.read_bytes() for p in (grid / "results").iterdir()}
    assert _table2().main(_args(grid)) == 0  # the local executor: nothing to submit
    assert "grid: 4 skipped" in capsys.readouterr().out
    assert _stamps(grid / "runs") == before, "a complete run must not be touched"
    assert {p.name: p.read_bytes() for p in (grid / "results").iterdir()} == tables


def test_a_changed_config_is_not_reused_silently(grid: Path) -> None:
    with pytest.raises(SystemExit, match="another config"):
        _table2().main(_args(grid, "--set", "train.lr=0.02"))


def test_a_bad_override_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="invalid steps=0"):
        _table2().main(_args(tmp_path, "--set", "train.steps=0"))
    assert not (tmp_path / "runs").exists()


def test_failed_run_is_summarized_and_the_grid_continues(tmp_path: Path) -> None:
    overrides = dict(kv.split("=") for kv in TINY)
    run = {m: str(tmp_path / m) for m in ("random_groups", "tag", "mtl")}
    jobs = [
        Job("synthetic", "random_groups", 0, "quick", run["random_groups"], overrides),
        Job("synthetic", "tag", 0, "quick", run["tag"], overrides, after=run["random_groups"]),
        Job("synthetic", "mtl", 0, "quick", run["mtl"], overrides),
    ]
    outcomes = run_grid(jobs, executor="local", workers=1, progress=False)
    assert [o.status for o in outcomes] == ["failed", "failed", "trained"]
    assert "needs the groups of a Selective Sharing run" in outcomes[0].error
    assert store.read_manifest(run["random_groups"])["status"] == "failed"
    assert "reference run" in outcomes[1].error and not Path(run["tag"]).exists()
    summary = summarize_outcomes(outcomes)
    assert "2 failed run(s)" in summary and "synthetic random_groups seed0: ConfigError" in summary


@pytest.mark.slow
def test_killed_grid_reruns_only_the_missing_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cmd = [sys.executable, str(SCRIPT), *_args(tmp_path, "--workers", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while "complete" not in _statuses(runs).values():
        assert proc.poll() is None and time.monotonic() < deadline, "no run completed"
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "the local executor runs jobs in worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10  # the workers die with the grid: no orphan trains on
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"worker(s) outlived the killed grid: {workers}"
        time.sleep(0.05)
    done = {k for k, v in _statuses(runs).items() if v == "complete"}
    assert 0 < len(done) < 4
    kept = {k: v for k, v in _stamps(runs).items() if any(f"/{d}/" in k for d in done)}
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{len(done)} skipped, {4 - len(done)} trained" in result.stdout
    assert set(_statuses(runs).values()) == {"complete"}
    assert {k: v for k, v in _stamps(runs).items() if k in kept} == kept


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_table_as_local_processes(grid: Path) -> None:
    tables = {}
    for executor in ("local", "dask"):
        args = _args(grid, "--executor", executor, runs=f"{executor}_runs", out=executor)
        assert _table2().main(args) == 0
        tables[executor] = pd.read_csv(grid / executor / "table2.csv")
    wall = ["wall_time_s", "best_wall_time_s"]  # the only numbers that differ between trainings
    serial = pd.read_csv(grid / "results" / "table2.csv").drop(columns=wall)
    pd.testing.assert_frame_equal(
        tables["dask"].drop(columns=wall), tables["local"].drop(columns=wall)
    )
    pd.testing.assert_frame_equal(tables["local"].drop(columns=wall), serial)


# ----------------------------------------------------------------------------- planning


def test_plan_puts_the_reference_first_and_wires_dependencies(tmp_path: Path) -> None:
    jobs = plan_grid(["synthetic"], ["oracle", "mtl", "tag"], [0], "quick", tmp_path)
    assert [j.method for j in jobs] == ["ss_similarity", "oracle", "mtl", "tag"]
    ref = str(tmp_path / "synthetic" / "ss_similarity" / "seed0")
    assert [j.after for j in jobs] == [None, ref, None, ref]


def test_oracle_without_true_groups_is_na_and_not_trained(tmp_path: Path) -> None:
    ref = tmp_path / "school" / "ss_similarity" / "seed0"
    store.write_manifest(ref, {"status": "complete", "true_groups": None})
    job = Job(
        "school",
        "oracle",
        0,
        "quick",
        str(tmp_path / "school" / "oracle" / "seed0"),
        after=str(ref),
    )
    [outcome] = run_grid([job], executor="serial", progress=False)
    assert outcome.status == "n/a" and not Path(job.run_dir).exists()


def test_invalid_executor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="executor"):
        run_grid([], executor="slurm", progress=False)
    assert issubclass(GridError, RuntimeError)


# ----------------------------------------------------------------------------- the table


def _fake_run(
    root: Path,
    dataset: str,
    method: str,
    seed: int,
    main: float,
    *,
    groups: bool,
    variant: str = "synthetic",
    metric: str = "rmse",
    status: str = "complete",
) -> None:
    run = root / dataset / method / f"seed{seed}"
    store.write_manifest(
        run,
        {
            "status": status,
            "true_groups": [0, 1] if groups else None,
            "dataset": {"variant": variant},
            "main_metric": metric,
            "error": None if status == "complete" else "boom",
        },
    )
    if status != "complete":
        return
    ds = store.encode_metrics(
        task_names=["a", "b"],
        task_metrics={metric: np.array([main, main])},
        main_metric=metric,
        n_parameters=100 * (seed + 1),
        n_parameters_estimators=10,
        n_groups=2,
        assignment=np.array([0, 1]),
        wall_time_s=1.5,
        backward_passes=30,
        forward_passes=30,
        steps=30,
        adjusted_rand_index=1.0 if groups else None,
        variant=variant,
    )
    store.write_metrics(run, ds)


def test_table_statistics_direction_and_empty_cells(tmp_path: Path) -> None:
    for seed, (a, b) in enumerate([(1.0, 2.0), (2.0, 2.5), (4.0, 3.0)]):
        _fake_run(tmp_path, "syn", "mtl", seed, a, groups=True)
        _fake_run(tmp_path, "syn", "oracle", seed, b, groups=True)
        _fake_run(
            tmp_path,
            "sch",
            "mtl",
            seed,
            a,
            groups=False,
            variant="real",
            metric="explained_variance",
        )
    _fake_run(
        tmp_path,
        "sch",
        "stl",
        0,
        1.0,
        groups=False,
        variant="real",
        metric="explained_variance",
        status="failed",
    )
    runs = collect_runs(tmp_path, ["syn", "sch"], ["mtl", "stl", "oracle"], [0, 1, 2])
    table = summarize_runs(runs).set_index(["dataset", "method"])
    mtl = table.loc[("syn", "mtl")]
    assert mtl.main_mean == pytest.approx(7 / 3)
    assert mtl.main_std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert mtl.n_parameters == pytest.approx(200.0)
    # rmse: lower is better, so oracle (mean 2.5) loses to mtl (mean 2.33)
    assert mtl.best_main_mean and not table.loc[("syn", "oracle")].best_main_mean
    assert table.loc[("sch", "mtl")].best_main_mean  # explained variance: higher is better
    assert table.loc[("sch", "oracle")].note == NO_GROUPS
    assert table.loc[("sch", "stl")].note == "0/3 seeds complete (failed 1, missing 2)"
    assert math.isnan(table.loc[("syn", "stl")].main_mean)
    md = to_markdown(summarize_runs(runs))
    _fake_run(tmp_path, "syn", "stl", 0, 1.0, groups=True, variant="substitute")
    mixed = summarize_runs(collect_runs(tmp_path, ["syn"], ["mtl", "stl"], [0, 1, 2]))
    assert set(mixed["variant"]) == {"MIXED substitute+synthetic"}
    assert "## sch (real): explained variance per task, mean (%), higher is better" in md
    assert "| oracle | n/a (no true groups) |" in md and "**2.333 ± 1.528**" in md
    for line in (ln for ln in md.splitlines() if ln.startswith("| ") and "method" not in ln):
        assert all(cell.strip() for cell in line.strip("|").split("|")), line


def test_table_files_are_byte_identical_when_rebuilt(tmp_path: Path) -> None:
    for seed in (0, 1):
        _fake_run(tmp_path / "runs", "syn", "mtl", seed, 1.0 + seed, groups=True)

    def build(out: str) -> dict[str, bytes]:
        summary = summarize_runs(collect_runs(tmp_path / "runs", ["syn"], ["mtl"], [0, 1]))
        return {p.name: p.read_bytes() for p in write_table(summary, tmp_path / out, ["a note"])}

    first = build("a")
    os.utime(tmp_path / "runs" / "syn" / "mtl" / "seed0" / "metrics.nc")  # newer mtime only
    assert build("b") == first and set(first) == {"table2.md", "table2.tex", "table2.csv"}


def test_quick_overrides_are_scoped_and_follow_the_set_values() -> None:
    overrides = _table2().method_overrides
    assert overrides("quick", "mnist_context", "stl") == {"train.steps": 100}  # 300 // 3
    assert overrides("quick", "mnist_context", "stl", {"train.steps": "90"}) == {"train.steps": 30}
    assert overrides("quick", "synthetic", "stl") == {}  # vectors: stl trains in full
    assert overrides("full", "shapes_context", "stl") == {}
    assert overrides("quick", "mnist_context", "mtl") == {}
    tag = overrides("quick", "school", "tag", {"sharing.warmup_steps": "12"})
    assert tag == {"baseline.affinity_steps": 12, "baseline.affinity_every": 4}
    assert overrides("full", "school", "tag") == {}


def test_scheduling_hints_follow_each_profiles_measured_cost(tmp_path: Path) -> None:
    """The longest-first hints: the full affinity baselines record over the whole run (TAG's
    protocol), so on the vector datasets their full hint is the measured 5-6.5x of their quick
    one, more than the 3x of the steps that every other method's full run takes."""
    t2 = _table2()
    hint = t2.hinted_seconds
    for dataset in ("school", "computer", "computer_8"):
        for method in t2.AFFINITY_METHODS:
            assert hint(dataset, method, "full") >= 5 * hint(dataset, method, "quick")
        assert hint(dataset, "tag", "full") > max(
            hint(dataset, m, "full") for m in t2.METHODS if m not in t2.AFFINITY_METHODS)
    for dataset in t2.QUICK_SECONDS:
        for method in t2.METHODS:
            assert hint(dataset, method, "full") > 0 and hint(dataset, method, "quick") > 0
    # image datasets have no full measurement: the quick seconds times the steps ratio, and stl's
    # quick image runs are a third of its full steps
    assert hint("mnist_context", "mtl", "full") == 3 * hint("mnist_context", "mtl", "quick")
    assert hint("mnist_context", "stl", "full") == 9 * hint("mnist_context", "stl", "quick")
    assert hint("not_a_dataset", "mtl", "full") == 0.0
    job = Job(dataset="school", method="tag", seed=0, profile="full",
              run_dir=str(tmp_path / "school" / "tag" / "seed0"))
    assert t2.job_cost(job) == t2.RUN_OVERHEAD_S + 55.0
