"""reproduce/bench_report.py: every budget of the performance table gets a row, and one that
cannot be measured here says so instead of passing (issue 16)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reproduce"))
bench_report = pytest.importorskip("bench_report")


def _step(tasks: int, params: int, ratio: float, median: float) -> dict:
    return {"tasks": tasks, "estimator_params": params, "ratio": ratio, "ratio_cpu": ratio,
            "ratio_median": median, "period": {"steps": 300, "events": 3}}


def _rows(**kw) -> dict:
    steps = [_step(40, 5200, 1.04, 1.03), _step(139, 5200, 1.2, 1.1)]
    decisions = {139: {"cpu_s": 0.06, "wall_s": 0.06}, 500: {"cpu_s": 0.5, "wall_s": 0.5}}
    replay = {"n_events": 50, "replay_s": 0.9}
    sizes = {"history_bytes_per_1000_steps": 3e5, "event_bytes": 1.7e6}
    images = {"device": "cpu", "image_size": 64, "ratio": 1.02, "ss_images_per_s": 80.0,
              "budget": 1.03}
    baselines = [{"tasks": 40, "estimator_params": 5200, "method": "tag", "ratio": 1.3}]
    memory = {"growth_mb_streamed": 40.0, "sizes": [2000, 20000], "budget_mb": 150}
    rows = bench_report.budget_rows(steps, decisions, replay, sizes, images, None, baselines,
                                    memory, kw.get("table2", {"path": "runs/table2_run.json"}))
    return {r["figure"].split(" (")[0].split(", P=")[0]: r for r in rows}


def test_every_budget_has_a_row_and_the_verdicts_follow_the_numbers() -> None:
    rows = _rows()
    assert rows["ss/mtl step, T=40"]["met"] is True  # 1.04 <= 1.05
    assert rows["ss/mtl step, T=139"]["met"] is False  # 1.2 > 1.10
    assert rows["decision E=139"]["met"] is False  # 60 ms > 50 ms
    assert rows["replay of 50 events"]["met"] is True
    tag = rows["grouping cost against TAG's, same run, T=40"]
    assert tag["measured"] == pytest.approx(0.3 / 0.03) and tag["met"] is True
    assert rows["peak memory growth, streamed images, 2000 -> 20000"]["met"] is True


def test_a_gpu_budget_without_a_gpu_and_a_missing_table2_run_are_not_met_but_unmeasured() -> None:
    rows = _rows()
    gpu = rows["ss/mtl step on a GPU, resnet18 trunk 64px"]
    assert gpu["met"] is None and gpu["measured"] == "n/a" and "no GPU here" in gpu["figure"]
    table2 = rows["quick Table 2"]
    assert table2["met"] is None and "run python reproduce/table2.py" in table2["figure"]
    timed = _rows(table2={"path": "runs/table2_run.json", "wall_s": 850.0,
                          "date": "2026-12-03", "torch": "2.14.1"})["quick Table 2"]
    assert timed["met"] is True and timed["measured"] == 850.0


def test_the_event_parts_the_bench_times_exist_and_are_restored() -> None:
    """bench_steps wraps named functions of the trainer's event (decision, state snapshot):
    each must exist (a rename broke a whole bench run once), be wrapped inside the context
    and be the original again after it."""
    bench_steps = pytest.importorskip("bench_steps")
    originals = {key: getattr(*key) for key in bench_steps._PARTS}
    with bench_steps._event_parts():
        assert all(getattr(*key) is not fn for key, fn in originals.items())
    assert all(getattr(*key) is fn for key, fn in originals.items())
