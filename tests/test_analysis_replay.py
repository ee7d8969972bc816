"""Replay from the store alone: exact on every ss_* method, mismatches found, counterfactuals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from selective_sharing.analysis import load_run, replay, sweep_thresholds
from selective_sharing.analysis.events import join_partitions
from selective_sharing.analysis.replay import IgnoredOverrideWarning
from selective_sharing.core import store
from selective_sharing.core.grouping import ConfigError
from test_analysis_runs import IMAGE_DATASET, SS_METHODS, make_run


@pytest.fixture(scope="module")
def syn_similarity(tmp_path_factory):
    return make_run(tmp_path_factory, "synthetic", "ss_similarity")


@pytest.fixture
def run_copy(syn_similarity, tmp_path):
    """A private copy of the similarity run, free to corrupt."""
    return shutil.copytree(syn_similarity, tmp_path / "run")


@pytest.mark.parametrize("method", SS_METHODS)
def test_exact_replay_synthetic(tmp_path_factory, method):
    run = make_run(tmp_path_factory, "synthetic", method)
    report = replay(run)
    assert len(report.events) == len(store.list_events(run)) == 3
    assert report.matched, str(report)
    assert all(e.matched and e.mismatched == () for e in report.events)
    final = store.read_metrics(run)["partition"].values
    np.testing.assert_array_equal(report.assignment, final)


@pytest.mark.parametrize("method", SS_METHODS)
def test_exact_replay_image(tmp_path_factory, method):
    run = make_run(tmp_path_factory, IMAGE_DATASET, method)
    report = replay(load_run(run))  # through the DataTree this time
    assert len(report.events) == len(store.list_events(run)) >= 1
    assert report.matched, str(report)


def test_merges_name_the_parts(syn_similarity):
    report = replay(syn_similarity)
    for e in report.events:
        rec = e.recorded
        for merge in e.merges:
            tasks = [t for part in merge for t in part]
            idx = [report.task_names.index(t) for t in tasks]
            assert len(merge) >= 2
            assert len(set(rec.assignment_after[idx])) == 1  # all went into one entity
            assert len(set(rec.assignment_before[idx])) == len(merge)


def _rewrite_event(path, change):
    ds = store.read_event(path).copy(deep=True)
    change(ds)
    store.atomic_write_dataset(path, ds)


def test_corrupted_distance_is_a_mismatch(run_copy):
    path = store.list_events(run_copy)[1]
    name = None

    def bump(ds):
        nonlocal name
        name = str(ds["distance"].values[0])
        ds["distances"].values[0, 0, 1] += 1e-3

    _rewrite_event(path, bump)
    report = replay(run_copy)
    assert not report.matched
    assert [e.matched for e in report.events] == [True, False, True]
    assert report.events[1].mismatched == (f"distances[{name}]",)


def test_corrupted_input_breaks_the_chain(run_copy):
    path = store.list_events(run_copy)[2]
    _rewrite_event(path, lambda ds: ds["streak_before"].values.__setitem__((0, 1), 7))
    report = replay(run_copy)
    assert not report.matched
    assert "streak_before (chain)" in report.events[2].mismatched


def test_truncated_event_names_the_file(run_copy):
    path = store.list_events(run_copy)[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(store.StoreError, match=path.name) as info:
        replay(run_copy)
    assert info.value.path == path


def test_run_without_events(tmp_path_factory):
    run = make_run(tmp_path_factory, "synthetic", "mtl")
    report = replay(run)
    assert report.events == () and report.matched
    np.testing.assert_array_equal(report.assignment, np.arange(12))


def test_counterfactual_with_stored_values_reproduces_the_run(syn_similarity):
    report = replay(syn_similarity, strategy="similarity", distance="auto", patience=1)
    assert report.counterfactual
    assert report.matched
    assert {e.window for e in report.events} == {"recorded"}


def test_counterfactual_threshold_extremes(syn_similarity):
    first = replay(syn_similarity).events[0].recorded
    none = replay(syn_similarity, threshold=0.0)  # every distance is > 0: nothing merges
    assert none.events[0].result.n_entities_after == first.n_entities_before
    assert not none.events[0].merges
    # Later windows were summed over the recorded (merged) entities: the merge is forced.
    assert none.events[1].window == "forced"
    np.testing.assert_array_equal(
        none.events[1].result.assignment_before, none.events[1].recorded.assignment_before
    )
    everything = replay(syn_similarity, threshold=2.0)  # every distance is <= 2: one group
    assert everything.events[0].result.n_entities_after == 1
    assert everything.n_groups == 1
    later = everything.events[1]
    assert later.window == "summed"
    want = later.recorded.summed.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(later.result.summed[0], want, rtol=1e-12, atol=1e-15)


def test_counterfactual_without_chain_uses_recorded_inputs(syn_similarity):
    report = replay(syn_similarity, threshold=0.0, chain=False)
    for e in report.events:
        assert e.window == "recorded"
        np.testing.assert_array_equal(e.result.assignment_before, e.recorded.assignment_before)
        assert e.result.n_entities_after == e.recorded.n_entities_before


def test_bad_overrides_are_refused(syn_similarity):
    with pytest.raises(TypeError, match="treshold"):
        replay(syn_similarity, treshold=0.3)
    with pytest.raises(ConfigError, match="strategy"):
        replay(syn_similarity, strategy="nope")


def test_sweep_thresholds(syn_similarity):
    grid = [0.0, 0.3, 0.6, 0.9, 1.2, 2.0]
    df = sweep_thresholds(syn_similarity, grid)
    assert list(df.columns) == [
        "threshold",
        "event",
        "step",
        "n_groups",
        "window",
        "forced",
        "final",
    ]
    assert len(df) == len(grid) * 3
    first = df[df.event == 0].sort_values("threshold")
    assert first.n_groups.iloc[0] == 12 and first.n_groups.iloc[-1] == 1
    assert np.all(np.diff(first.n_groups.to_numpy()) <= 0)  # a higher cut never splits
    assert df.groupby("threshold").final.sum().eq(1).all()


def test_join_partitions():
    a = np.array([0, 0, 1, 2, 3])
    b = np.array([0, 1, 1, 2, 2])
    np.testing.assert_array_equal(join_partitions(a, b), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(join_partitions(a, a), a)


def test_reading_events_without_bins_decodes_the_same_decisions(syn_similarity):
    from selective_sharing.analysis.events import compare_events, read_events

    for source in (syn_similarity, load_run(syn_similarity)):  # a directory and a DataTree
        _, full = read_events(source)
        _, lean = read_events(source, bins=False)
        assert len(full) == len(lean) > 0
        for (r_full, m_full), (r_lean, m_lean) in zip(full, lean):
            assert compare_events(r_lean, r_full) == []
            assert m_full["bins"] is not None and m_lean["bins"] is None
            assert {k: v for k, v in m_lean.items() if k != "bins"}.keys() == {
                k for k in m_full if k != "bins"
            }
    path = store.list_events(syn_similarity)[0]
    assert "bins" not in store.read_event(path, bins=False).variables
    with pytest.raises(store.StoreError, match="missing \\['bins'\\]"):
        store.decode_event(store.read_event(path, bins=False))  # bins asked for, not read


def test_read_events_decodes_each_file_as_read_event_does(syn_similarity):
    """A run directory's events are read without a Dataset per file (only what decoding uses):
    the records equal, bit for bit, those decoded from ``store.read_event``."""
    from selective_sharing.analysis.events import read_events

    paths = store.list_events(syn_similarity)
    for bins in (True, False):
        _, decoded = read_events(syn_similarity, bins=bins)
        assert len(decoded) == len(paths) > 0
        for (result, meta), path in zip(decoded, paths):
            want = store.decode_event(store.read_event(path, bins=bins), bins=bins)
            got = store.Event(**{n: getattr(result, n) for n in store.DECISION_FIELDS},
                              **dict(meta, task_names=tuple(meta["task_names"])))
            assert got == want, path


def test_replay_detects_a_damaged_value_it_reads(run_copy):
    path = store.list_events(run_copy)[1]
    raw = np.float64(store.read_event(path)["threshold"].values).astype("<f8").tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw)
    assert at > 0 and data.find(raw, at + 1) == -1  # the scalar is stored once, raw
    data[at + 7] ^= 0x01
    tmp = path.with_name(".damaged.nc")
    tmp.write_bytes(bytes(data))
    tmp.replace(path)  # a new file under the name, as the fault suite damages files
    with pytest.raises(store.StoreError,
                       match=f"{path}: content checksum mismatch in variable 'threshold'"):
        replay(run_copy)


# ----------------------------------------------------------------------------- ignored overrides

# A value per GroupingConfig field that would change the partitions if the field were used.
ALTERNATIVES = {
    "distance": ["cosine", "subspace"],
    "auto_candidates": [("subspace", "cosine"), ("subspace",)],
    "rank": [1, 2],
    "threshold": [0.0, 0.5, 2.0],
    "min_silhouette": [1.0, -1.0],
    "kmeans_max_k": [2, 3],
    "seed": [7],
    "max_group_size": [1, 2],
    "min_groups": [5],
    "patience": [3],
    "strategy": ["variance"],
    "null": ["permutation"],
    "null_samples": [1, 5],
    "null_alpha": [0.5, 0.999],
}


def _partitions(report):
    return [(e.result.proposed.tolist(), e.result.assignment_after.tolist()) for e in report.events]


def test_usage_declarations_name_real_fields():
    import dataclasses

    from selective_sharing.core.grouping import DISTANCES, GroupingConfig
    from selective_sharing.core.grouping import registry as reg

    fields = {f.name for f in dataclasses.fields(GroupingConfig)}
    assert set(ALTERNATIVES) == fields  # the test below covers every field
    assert reg.EVENT_FIELDS <= fields and reg.MEMBERSHIP_FIELDS <= fields
    for name in ("similarity", "variance", "kmeans"):  # every built-in strategy is declared
        use = reg.STRATEGY_USES[name]
        assert use.fields <= fields, name
        assert use.inputs <= {"distances", "membership", "factors"}, name
    for name in ("cosine", "subspace"):
        assert name in DISTANCES and reg.DISTANCE_USES[name] <= fields
    assert {f"ss_{s}" for s in reg.STRATEGY_USES} >= set(SS_METHODS)


@pytest.mark.parametrize("method", SS_METHODS)
@pytest.mark.parametrize(
    "base", [{}, {"distance": "cosine"}, {"threshold": 0.5}], ids=["stored", "cosine", "fixed"]
)
def test_declared_unused_fields_change_no_partition(tmp_path_factory, method, base):
    """Every field the declaration calls unused, changed, leaves every partition as it was."""
    import warnings

    from selective_sharing.analysis.events import grouping_config, read_events
    from selective_sharing.core.grouping.registry import config_fields_used

    run = make_run(tmp_path_factory, "synthetic", method)
    _, decoded = read_events(run, bins=False)
    stored = grouping_config(decoded[0][1]["grouping_config"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredOverrideWarning)
        for chain in (False, True):
            want = _partitions(replay(run, chain=chain, **base))
            config = dataclasses_replace(stored, **base)
            used = config_fields_used(config)
            assert used is not None and "strategy" in used
            for name in sorted(set(ALTERNATIVES) - used):
                for value in ALTERNATIVES[name]:
                    got = replay(run, chain=chain, **{**base, name: value})
                    assert _partitions(got) == want, (method, base, name, value, chain)
                    assert name in got.ignored


def dataclasses_replace(config, **changes):
    import dataclasses

    if "auto_candidates" in changes:
        changes["auto_candidates"] = tuple(changes["auto_candidates"])
    return dataclasses.replace(config, **changes)


def test_ignored_threshold_warns_naming_the_strategy(tmp_path_factory):
    run = make_run(tmp_path_factory, "synthetic", "ss_kmeans")
    with pytest.warns(IgnoredOverrideWarning) as caught:
        report = replay(run, threshold=0.3)
    (w,) = caught
    message = str(w.message)
    assert "strategy 'kmeans'" in message and "threshold=0.3" in message
    assert "uses only kmeans_max_k, max_group_size, min_groups, patience, rank, seed" in message
    assert w.filename == __file__  # points at the caller
    assert report.ignored == ("threshold",) and report.matched  # = the run as recorded
    with pytest.warns(IgnoredOverrideWarning, match="flat line") as caught:
        df = sweep_thresholds(run, [0.0, 0.5, 2.0])
    assert len(caught) == 1  # once per sweep, not per threshold
    assert df.groupby("event").n_groups.nunique().eq(1).all()


def test_min_silhouette_is_ignored_under_a_fixed_threshold(syn_similarity):
    with pytest.warns(IgnoredOverrideWarning, match="'similarity'.*min_silhouette"):
        report = replay(syn_similarity, threshold=0.5, min_silhouette=0.9)
    assert report.ignored == ("min_silhouette",)


def test_used_overrides_do_not_warn(syn_similarity):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredOverrideWarning)
        assert replay(syn_similarity, threshold=0.5).ignored == ()
        replay(syn_similarity, min_silhouette=0.3, distance="cosine")
        sweep_thresholds(syn_similarity, [0.2, 0.4])
