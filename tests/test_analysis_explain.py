"""explain(): names the event, the distance and the threshold, with values read from the store."""

from __future__ import annotations

import numpy as np
import pytest
from selective_sharing.analysis import explain
from selective_sharing.core import store
from test_analysis_runs import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory, "synthetic", "ss_similarity")


@pytest.fixture(scope="module")
def events(run):
    return [store.decode_event(store.read_event(p)) for p in store.list_events(run)]


def _merged_pair(events):
    """First event with a merge, and two tasks it put together."""
    for result, meta in events:
        before, after = result.assignment_before, result.assignment_after
        for a in range(before.size):
            for b in range(a + 1, before.size):
                if before[a] != before[b] and after[a] == after[b]:
                    return result, meta, a, b
    raise AssertionError("the fixture run merged nothing; make it merge")


def _never_merged_pair(events):
    final = events[-1][0].assignment_after
    a = 0
    b = int(np.flatnonzero(final != final[a])[0])
    return a, b


def test_merged_pair(run, events):
    result, meta, a, b = _merged_pair(events)
    names = meta["task_names"]
    ea, eb = result.assignment_before[a], result.assignment_before[b]
    dist = result.chosen_distance
    value = result.distances[dist][ea, eb]
    exp = explain(run, names[a], names[b])
    assert exp.merged and exp.event == meta["index"] and exp.step == meta["step"]
    row = exp.data.iloc[-1]
    assert row["chosen_distance"] == dist
    assert row["distance"] == value
    assert row["threshold"] == result.threshold
    assert row["condition"] == result.condition[ea, eb] <= result.threshold
    assert row["silhouette"] == result.silhouettes[dist]
    for text in (
        f"event {meta['index']}",
        f"step {meta['step']}",
        f"{dist} distance {value:.4f}",
        f"cut {result.threshold:.4f}",
        names[a],
        names[b],
    ):
        assert text in exp.text
    assert len(exp.data) == meta["index"] + 1  # every event up to the merge


def test_never_merged_pair(run, events):
    a, b = _never_merged_pair(events)
    names = events[0][1]["task_names"]
    exp = explain(run, a, b)  # by index
    assert not exp.merged and exp.event is None
    assert exp.task_a == names[a] and exp.task_b == names[b]
    assert list(exp.data["event"]) == [m["index"] for _, m in events]
    assert "never merged" in exp.text
    for (result, meta), (_, row) in zip(events, exp.data.iterrows()):
        ea, eb = result.assignment_before[a], result.assignment_before[b]
        value = result.distances[result.chosen_distance][ea, eb]
        assert row["distance"] == value
        assert row["threshold"] == result.threshold or np.isnan(row["threshold"])
        assert not row["merged"] and not row["proposed_together"]
        assert f"event {meta['index']} (step {meta['step']}): " in exp.text
        assert f"{result.chosen_distance} distance {value:.4f}" in exp.text
        if np.isfinite(result.threshold):
            assert f"> cut {result.threshold:.4f}" in exp.text


def test_counterfactual_explanation(run, events):
    a, b = _never_merged_pair(events)
    exp = explain(run, a, b, threshold=2.0)  # every pair is under the cut: merged at once
    assert exp.merged and exp.event == 0 and exp.step == events[0][1]["step"]
    assert "cut 2.0000" in exp.text


def test_unknown_task_is_refused(run):
    with pytest.raises(ValueError, match="task_b='nope'.*task_00"):
        explain(run, "task_00", "nope")
    with pytest.raises(ValueError, match="must differ"):
        explain(run, 1, "task_01")
