"""The opt-in edge-permutation null of the merge decision (issue 13, part 5):
``GroupingConfig(null="permutation")``.

Default off: decisions with the default config equal ``null="none"`` exactly and record no
test. With the null: planted blocks merge (p at its floor 1/(B+1)), structure-free directions
stay apart, the test is deterministic, stored, replayed exactly and explained.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from selective_sharing.core import store
from selective_sharing.core.grouping import (
    DECISION_RULE_VERSION,
    ConfigError,
    GroupingConfig,
    grouping_event,
)
from selective_sharing.core.grouping.null import (
    null_quantiles,
    permutation_null,
    shuffled_distances,
    window_key,
)
from selective_sharing.core.grouping.registry import config_fields_used
from sklearn.metrics import adjusted_rand_score

PERM = dict(null="permutation", null_samples=100, distance="cosine")


def _planted(seed: int = 0, groups: int = 3, per: int = 6, noise: float = 0.35, dim: int = 64):
    """``groups`` x ``per`` unit vectors around ``groups`` random directions (one row each)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((groups, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    truth = np.repeat(np.arange(groups), per)
    x = centers[truth] + noise * rng.standard_normal((truth.size, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:, None, :].astype(np.float32), truth


def _free(seed: int = 0, n: int = 18, dim: int = 2000):
    """``n`` i.i.d. random directions in high dimension: no group structure."""
    x = np.random.default_rng(seed).standard_normal((n, 1, dim))
    return (x / np.linalg.norm(x, axis=2, keepdims=True)).astype(np.float32)


def _windows():
    rng = np.random.default_rng(3)
    yield _planted(1)[0]
    yield _free(2, n=10, dim=50)
    yield rng.standard_normal((7, 3, 20)).astype(np.float32)  # rank-3 windows, auto distance
    yield rng.standard_normal((2, 3, 20)).astype(np.float32)


def _same_result(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys(), f.name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{f.name}[{k}]")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


# ----------------------------------------------------------------------------- default off


def test_default_is_none_and_bit_identical():
    assert GroupingConfig().null == "none"
    for summed in _windows():
        a = np.arange(summed.shape[0])
        default = grouping_event(summed, a, None, GroupingConfig())
        explicit = grouping_event(summed, a, None, GroupingConfig(null="none"))
        _same_result(default, explicit)
        assert default.null_test is None
        # null_samples / null_alpha do nothing without the null
        other = grouping_event(summed, a, None, GroupingConfig(null_samples=3, null_alpha=0.5))
        _same_result(default, other)


def test_fields_used_declaration():
    used = config_fields_used(GroupingConfig())
    assert "null" in used and "min_silhouette" in used and "null_alpha" not in used
    used = config_fields_used(GroupingConfig(null="permutation"))
    assert {"null", "null_samples", "null_alpha"} <= used and "min_silhouette" not in used
    assert "null" not in config_fields_used(GroupingConfig(null="permutation", threshold=0.5))


# ----------------------------------------------------------------------------- the test itself


def test_planted_blocks_merge():
    summed, truth = _planted(0)
    cfg = GroupingConfig(**PERM)
    r = grouping_event(summed, np.arange(18), None, cfg)
    null = r.null_test
    assert null["samples"] == 100 and null["alpha"] == 0.05
    assert null["p_value"] == pytest.approx(1 / 101)  # no shuffle comes close
    assert null["statistic"] == r.silhouettes["cosine"] > 0.8
    q = null_quantiles(null)
    assert q[0.5] < q[0.95] < q[0.99] < null["statistic"] - 0.1
    assert null["silhouettes"].shape == (100,)
    assert r.n_entities_after == 3
    assert adjusted_rand_score(truth, r.assignment_after) == 1.0
    # min_silhouette is not applied under the null
    high = grouping_event(summed, np.arange(18), None, GroupingConfig(**PERM, min_silhouette=1.0))
    np.testing.assert_array_equal(high.assignment_after, r.assignment_after)


def test_structure_free_stays_apart():
    summed = _free(0)
    r = grouping_event(summed, np.arange(18), None, GroupingConfig(**PERM))
    null = r.null_test
    assert null["p_value"] > 0.05
    assert null["p_value"] == pytest.approx(54 / 101)
    assert null["statistic"] == pytest.approx(0.0162, abs=1e-4)
    assert r.n_entities_after == 18 and np.isnan(r.threshold)
    # the floor alone would have merged this window at a low min_silhouette
    floor = grouping_event(summed, np.arange(18), None, GroupingConfig(distance="cosine",
                                                                       min_silhouette=0.0))
    assert floor.n_entities_after < 18


def test_small_events_run_no_test():
    rng = np.random.default_rng(0)
    for n in (1, 2):
        summed = rng.standard_normal((n, 1, 8)).astype(np.float32)
        r = grouping_event(summed, np.arange(n), None, GroupingConfig(**PERM))
        assert r.null_test is None and r.n_entities_after == n
    summed = _planted(0)[0]
    fixed = grouping_event(summed, np.arange(18), None, GroupingConfig(**PERM, threshold=0.5))
    assert fixed.null_test is None  # a fixed threshold bypasses the silhouette-best cut


def test_deterministic_and_keyed_by_window():
    summed, _ = _planted(0)
    cfg = GroupingConfig(**PERM)
    a = grouping_event(summed, np.arange(18), None, cfg)
    b = grouping_event(summed.copy(), np.arange(18), None, cfg)
    _same_result(a, b)
    assert a.null_test["key"] == window_key(summed)
    other_seed = grouping_event(summed, np.arange(18), None, dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(other_seed.null_test["silhouettes"], a.null_test["silhouettes"])
    free = _free(0)
    x = grouping_event(free, np.arange(18), None, cfg).null_test
    y = grouping_event(free, np.arange(18), None, cfg, record=False).null_test
    assert x["p_value"] == y["p_value"]
    np.testing.assert_array_equal(x["silhouettes"], y["silhouettes"])


def test_shuffle_keeps_the_distribution():
    rng = np.random.default_rng(0)
    x = rng.random((9, 9))
    d = (x + x.T) / 2
    np.fill_diagonal(d, 0)
    s = shuffled_distances(d, np.random.default_rng(1))
    np.testing.assert_array_equal(s, s.T)
    assert not s.diagonal().any()
    iu = np.triu_indices(9, 1)
    np.testing.assert_array_equal(np.sort(s[iu]), np.sort(d[iu]))
    assert not np.array_equal(s, d)
    out = permutation_null(d, 2.0, samples=5, alpha=0.05, seed=0, key=1)
    assert out["p_value"] == 1 / 6  # nothing reaches a silhouette of 2
    out = permutation_null(d, -2.0, samples=5, alpha=0.05, seed=0, key=1)
    assert out["p_value"] == 1.0


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("null", "perm", "['none', 'permutation']"),
        ("null_samples", 0, "a positive number of shuffles"),
        ("null_alpha", 1.5, "in (0, 1)"),
        ("null_alpha", 0.0, "in (0, 1)"),
    ],
)
def test_bad_values(field, value, words):
    with pytest.raises(ConfigError) as err:
        GroupingConfig(**{field: value})
    msg = str(err.value)
    assert f"{field}={value!r}" in msg and words in msg


def test_keys_listed_and_settable():
    from selective_sharing.core.config import describe_keys, make_config

    rows = {key: (value, allowed) for key, value, allowed in describe_keys("synthetic")}
    assert rows["grouping.null"][0] == "none"
    assert "permutation" in str(rows["grouping.null"][1])
    assert rows["grouping.null_samples"][0] == 200 and rows["grouping.null_alpha"][0] == 0.05
    cfg = make_config("synthetic", overrides={"grouping.null": "permutation",
                                              "grouping.null_samples": 30,
                                              "grouping.distance": "cosine"})
    assert (cfg.grouping.null, cfg.grouping.null_samples) == ("permutation", 30)
    with pytest.raises(ConfigError, match="null_alpha"):
        make_config("synthetic", overrides={"grouping.null_alpha": 1.5})


def test_training_refuses_the_null_with_auto_distance():
    """The null sees the chosen distance only: with distance=auto it merged 12/30 structure-free
    calibration runs, so a training config refuses the pair and names the fix; a replay's
    GroupingConfig may still ask for it (a counterfactual)."""
    from selective_sharing.core.config import make_config

    with pytest.raises(ConfigError, match=r"grouping.distance='auto'.*grouping.distance=cosine"):
        make_config("synthetic", overrides={"grouping.null": "permutation"})
    assert GroupingConfig(null="permutation").distance == "auto"  # analysis may ask


# ----------------------------------------------------------------------------- store, replay


def test_store_round_trip_and_old_files():
    summed, _ = _planted(0)
    r = grouping_event(summed, np.arange(18), None, GroupingConfig(**PERM))
    decision = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
    context = dict(
        index=0, step=10, window_start=0, bins=np.zeros((18, 1, 2), np.float32), sketch_seed=0,
        sketch_kind="dense", task_names=tuple(f"t{i}" for i in range(18)), n_params_before=1,
        n_params_after=1, merge_mode="average",
        grouping_config=dataclasses.asdict(GroupingConfig(**PERM)),
        decision_rule=DECISION_RULE_VERSION,
    )  # fmt: skip
    ds = store.encode_event(**decision, **context)
    event = store.decode_event(ds)
    assert event == store.Event(**decision, **context)
    assert event.null_test["p_value"] == r.null_test["p_value"]
    np.testing.assert_array_equal(event.null_test["silhouettes"], r.null_test["silhouettes"])
    del ds.attrs["null_test"]  # as written before the option existed
    assert store.decode_event(ds).null_test is None


@pytest.fixture(scope="module")
def null_run(tmp_path_factory):
    from selective_sharing.core.config import make_config
    from selective_sharing.core.training import train
    from test_analysis_runs import OVERRIDES

    out = tmp_path_factory.mktemp("null_run") / "run"
    overrides = dict(OVERRIDES["synthetic"], **{"grouping.null": "permutation",
                                                "grouping.null_samples": 50,
                                                "grouping.distance": "cosine"})
    train(make_config("synthetic", "ss_similarity", 0, overrides=overrides, out=str(out)),
          progress=False)
    return out


def test_replay_of_a_null_run_is_exact(null_run):
    from selective_sharing.analysis import replay
    from selective_sharing.analysis.events import compare_events, read_events

    _, decoded = read_events(null_run, bins=False)
    assert decoded and decoded[0][1]["grouping_config"]["null"] == "permutation"
    tested = [r for r, _ in decoded if r.null_test is not None]
    assert tested and all(r.null_test["samples"] == 50 for r in tested)
    report = replay(null_run)
    assert report.matched, str(report)
    # a changed null is a mismatch that names the field
    rec = tested[0]
    bumped = dataclasses.replace(rec, null_test=dict(rec.null_test, p_value=0.5))
    assert compare_events(bumped, rec) == ["null_test[p_value]"]
    assert compare_events(dataclasses.replace(rec, null_test=None), rec) == ["null_test"]


def test_explain_names_the_p_value(null_run):
    from selective_sharing.analysis import explain

    names = store.read_manifest(null_run)["task_names"]
    text = explain(null_run, names[0], names[1]).text
    assert "p = " in text and "shuffles" in text and "95% quantile" in text
