"""explain(): names the event, the distance and the threshold, with values read from the store,
and tells the story of a decision (distance choice, cut, linkage height, margin, what would have
changed it, stability) with numbers equal to the replayed ones."""

from __future__ import annotations

import re

import numpy as np
import pytest
from selective_sharing.analysis import explain, replay
from selective_sharing.analysis.events import event_result
from selective_sharing.analysis.replay import IgnoredOverrideWarning
from selective_sharing.core import store
from test_analysis_runs import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory, "synthetic", "ss_similarity")


@pytest.fixture(scope="module")
def events(run):
    return [event_result(store.read_event(p)) for p in store.list_events(run)]


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


# ----------------------------------------------------------------------------- the story


def _num(pattern: str, text: str) -> tuple[str, ...]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return found.groups()


def _replayed(run, index):
    """The replayed EventResult of event ``index`` and its config (exact replay)."""
    report = replay(run)
    assert report.matched
    return report.events[index].result, report.config


def test_merged_story_numbers_are_the_replayed_ones(run, events):
    result, meta, a, b = _merged_pair(events)
    names = meta["task_names"]
    exp = explain(run, names[a], names[b])
    rep, cfg = _replayed(run, meta["index"])
    ea, eb = rep.assignment_before[a], rep.assignment_before[b]
    dist = rep.chosen_distance
    # the fields are the replayed (and stored) values
    assert exp.deciding_event == exp.event == meta["index"] and exp.nearest_miss is None
    assert exp.chosen_distance == dist and exp.silhouettes == rep.silhouettes
    assert exp.min_silhouette == cfg.min_silhouette  # the floor applies: silhouette-best cut
    assert exp.pair_distance == rep.distances[dist][ea, eb] == result.distances[dist][ea, eb]
    assert exp.join_height == rep.condition[ea, eb] == exp.split_at
    assert exp.cut == rep.threshold == result.threshold
    assert exp.join_height <= exp.cut
    outside = rep.condition[ea] > exp.cut
    assert exp.nearest_height == rep.condition[ea, outside].min()
    assert exp.margin == exp.nearest_height - exp.cut > 0
    nearest = np.flatnonzero(outside)[np.argmin(rep.condition[ea, outside])]
    assert names[np.flatnonzero(rep.assignment_before == nearest)[0]] in exp.nearest_group
    assert exp.patience == cfg.patience == 1 and exp.held_steps == (meta["step"],)
    # the text, paragraph by paragraph, carries the same numbers
    lines = exp.text.splitlines()
    heads = ["What was compared:", "Where the cut lies:", "The pair:", "Margin:",
             "What would have changed it:", "Stability:", "Event by event"]  # fmt: skip
    assert lines[0].startswith(f"{names[a]} and {names[b]} merged at event {meta['index']} ")
    assert [next(i for i, x in enumerate(lines) if x.startswith(h)) for h in heads] == list(
        range(1, len(heads) + 1)
    )
    text = exp.text
    other = next(k for k in rep.silhouettes if k != dist)
    chosen_s, other_name, other_s = _num(
        rf"cut scores higher: {dist} \(best-cut silhouette ([-\d.]+)\) rather than (\w+) "
        r"\(([-\d.]+)\)", text)  # fmt: skip
    assert other_name == other
    assert float(chosen_s) == round(rep.silhouettes[dist], 3)
    assert float(other_s) == round(rep.silhouettes[other], 3)
    (floor,) = _num(r"floor min_silhouette = ([-\d.]+)", text)
    assert float(floor) == cfg.min_silhouette
    (cut,) = _num(r"Where the cut lies: .* is cut at ([\d.]+), midway", text)
    assert float(cut) == round(exp.cut, 4)
    (best,) = _num(r"this one, into (\d+) groups, has the highest silhouette", text)
    assert int(best) == exp.cut_groups == rep.n_entities_after
    own, height = _num(r"The pair: .* is ([\d.]+)\. Average linkage .* join(?: each other "
                       r"directly)? at ([\d.]+), at or below the cut", text)  # fmt: skip
    assert (float(own), float(height)) == (round(exp.pair_distance, 4), round(exp.join_height, 4))
    nh, margin = _num(r"Margin: .* only at height ([\d.]+), ([\d.]+) above the cut", text)
    assert (float(nh), float(margin)) == (round(exp.nearest_height, 4), round(exp.margin, 4))
    (split,) = _num(r"any cut below ([\d.]+) would have kept them apart", text)
    assert float(split) == round(exp.split_at, 4)
    assert "one grouping event proposing them together is enough" in text


def test_split_threshold_is_where_the_decision_flips(run, events):
    _, meta, a, b = _merged_pair(events)
    exp = explain(run, a, b)
    k = meta["index"]

    def together(threshold):
        r = replay(run, threshold=threshold, chain=False).events[k].result
        return r.proposed[r.assignment_before[a]] == r.proposed[r.assignment_before[b]]

    assert together(exp.split_at) and not together(float(np.nextafter(exp.split_at, 0.0)))


def test_never_merged_story_tells_the_nearest_miss(run, events):
    a, b = _never_merged_pair(events)
    exp = explain(run, a, b)
    gaps = [r.condition[r.assignment_before[a], r.assignment_before[b]] - r.threshold
            for r, _ in events]  # fmt: skip
    k = int(np.nanargmin(gaps))
    result, meta = events[k]
    assert exp.nearest_miss == exp.deciding_event == meta["index"]
    assert exp.deciding_step == meta["step"]
    ea, eb = result.assignment_before[a], result.assignment_before[b]
    assert exp.join_height == exp.merge_at == result.condition[ea, eb]
    assert exp.cut == result.threshold and exp.margin == exp.join_height - exp.cut > 0
    assert exp.split_at is None and exp.nearest_group is None
    assert f"The nearest miss was event {meta['index']} (step {meta['step']})" in exp.text
    short = _num(r"join(?: each other directly)? at ([\d.]+), above the cut ([\d.]+): "
                 r"([\d.]+) short of being grouped", exp.text)  # fmt: skip
    assert [float(x) for x in short] == [round(v, 4) for v in (exp.join_height, exp.cut,
                                                                exp.margin)]  # fmt: skip
    (at,) = _num(r"a cut at or above ([\d.]+) at this event", exp.text)
    assert float(at) == round(exp.merge_at, 4)
    # and that cut would indeed have proposed them together at that event
    r = replay(run, threshold=exp.merge_at, chain=False).events[k].result
    assert r.proposed[r.assignment_before[a]] == r.proposed[r.assignment_before[b]]


def test_fixed_threshold_has_no_floor(run, events):
    a, b = _never_merged_pair(events)
    exp = explain(run, a, b, threshold=2.0)
    assert exp.min_silhouette is None and exp.cut == 2.0
    assert "No silhouette floor applies: the tree is cut at the fixed threshold 2.0" in exp.text
    assert "counterfactual replay with threshold=2.0" in exp.text


def test_patience_is_told_in_plain_words(run, events):
    _, _, a, b = _merged_pair(events)
    exp = explain(run, a, b, patience=2)
    if exp.merged:
        assert exp.patience == 2 and len(exp.held_steps) == 2
        steps = [m["step"] for _, m in events]
        assert exp.held_steps == tuple(steps[steps.index(exp.step) - 1 : steps.index(exp.step) + 1])
        assert (
            "proposed together at 2 consecutive grouping events while still apart (patience 2); "
            f"they were, at steps {list(exp.held_steps)}" in exp.text
        )
    else:
        assert "proposed together at 2 consecutive grouping events" in exp.text


def test_kmeans_story(tmp_path_factory):
    run = make_run(tmp_path_factory, "synthetic", "ss_kmeans")
    exp = explain(run, 0, 1)
    assert exp.strategy == "kmeans" and exp.min_silhouette is None and exp.cut is None
    assert "dominant factor cluster" in exp.text and "Threshold and silhouette floor" in exp.text


def test_ignored_override_warns_in_explain(tmp_path_factory):
    run = make_run(tmp_path_factory, "synthetic", "ss_kmeans")
    with pytest.warns(IgnoredOverrideWarning, match=r"explain: strategy 'kmeans'.*threshold.*"
                      r"uses only .*kmeans_max_k"):  # fmt: skip
        explain(run, 0, 1, threshold=0.5)
