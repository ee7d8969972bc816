"""Properties every registered strategy and distance must have (timm-style: the parametrization
reads the registries, so a newly registered entry is tested without being listed here)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selective_sharing.core.grouping import (
    DISTANCES,
    STRATEGIES,
    GroupingConfig,
    canonical,
    grouping_event,
    register_distance,
    register_strategy,
)

ALL_STRATEGIES = sorted(STRATEGIES)
ALL_DISTANCES = sorted(DISTANCES) + ["auto"]
FAST = settings(max_examples=12, deadline=None)


def planted(seed: int, n_entities: int, n_groups: int, noise: float) -> np.ndarray:
    """Summed gradients (E, 6, 10) float32: members of a planted group share a rank-2 gradient
    up to a positive scale, plus Gaussian noise (generic: no exact ties)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_groups, 6, 2)) @ rng.standard_normal((n_groups, 2, 10))
    truth = rng.integers(0, n_groups, n_entities)
    scale = rng.uniform(0.3, 3.0, (n_entities, 1, 1))
    x = base[truth] * scale + noise * rng.standard_normal((n_entities, 6, 10))
    return x.astype(np.float32)


def random_assignment(seed: int, n_entities: int, extra_tasks: int) -> np.ndarray:
    """Tasks -> entities, every entity used; some entities hold several tasks."""
    rng = np.random.default_rng(seed + 1)
    a = np.concatenate([np.arange(n_entities), rng.integers(0, n_entities, extra_tasks)])
    return a[rng.permutation(a.size)]


inputs = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "n_entities": st.integers(1, 9),
        "n_groups": st.integers(1, 3),
        "noise": st.sampled_from([0.05, 0.3, 1.0]),
        "extra_tasks": st.integers(0, 3),
    }
)
configs = st.fixed_dictionaries(
    {
        "rank": st.integers(1, 3),
        "max_group_size": st.sampled_from([None, 1, 2, 3, 5]),
        "min_groups": st.integers(1, 3),
        "threshold": st.sampled_from([None, 0.3, 1.0]),
        "min_silhouette": st.sampled_from([-1.0, 0.1]),
        "kmeans_max_k": st.integers(2, 4),
    }
)


def run(x, assignment, strategy, distance, **cfg):
    config = GroupingConfig(strategy=strategy, distance=distance, **cfg)
    return grouping_event(x, assignment, None, config)


def check_partition(r, assignment: np.ndarray, config: dict) -> None:
    after = r.assignment_after
    n_ent = r.n_entities_before
    # every task in exactly one group, groups numbered canonically
    assert after.shape == assignment.shape and np.array_equal(after, canonical(after))
    # groups never split: tasks sharing an entity before still share one after
    same_before = assignment[:, None] == assignment[None, :]
    assert np.all((after[:, None] == after[None, :])[same_before])
    assert np.array_equal(after, r.parent[assignment])
    # guards: a merged group holds at most max_group_size tasks; at least min_groups groups
    sizes = np.bincount(after)
    merged = np.bincount(r.parent, minlength=sizes.size) > 1
    limit = config["max_group_size"]
    if limit is not None:
        assert np.all(sizes[merged] <= limit)
    assert sizes.size >= min(config["min_groups"], n_ent)
    assert r.condition.shape == (n_ent, n_ent) and np.all(np.isfinite(r.condition))
    for d in r.distances.values():
        assert d.shape == (n_ent, n_ent) and np.all(np.isfinite(d))
        assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
        assert d.min() >= 0 and d.max() <= 2


@pytest.mark.parametrize("distance", ALL_DISTANCES)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(data=inputs, config=configs)
@FAST
def test_partition_is_valid_and_guards_hold(strategy, distance, data, config):
    x = planted(data["seed"], data["n_entities"], data["n_groups"], data["noise"])
    a = random_assignment(data["seed"], data["n_entities"], data["extra_tasks"])
    r = run(x, a, strategy, distance, **config)
    check_partition(r, a, config)


@pytest.mark.parametrize("distance", ALL_DISTANCES)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(data=inputs, config=configs, perm_seed=st.integers(0, 1000))
@FAST
def test_permuting_entities_permutes_the_result(strategy, distance, data, config, perm_seed):
    x = planted(data["seed"], data["n_entities"], data["n_groups"], data["noise"])
    a = random_assignment(data["seed"], data["n_entities"], data["extra_tasks"])
    perm = np.random.default_rng(perm_seed).permutation(data["n_entities"])
    inverse = np.argsort(perm)
    r = run(x, a, strategy, distance, **config)
    # entity perm[i] of the original is entity i of the permuted input; tasks keep their order
    rp = run(x[perm], inverse[a], strategy, distance, **config)
    assert np.array_equal(rp.assignment_after, r.assignment_after)
    assert np.array_equal(rp.proposed, canonical(r.proposed[perm]))
    for name in r.distances:
        np.testing.assert_allclose(
            rp.distances[name], r.distances[name][np.ix_(perm, perm)], atol=1e-12
        )


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(data=inputs, config=configs, log_scales=st.lists(st.floats(-3, 3), min_size=9, max_size=9))
@FAST
def test_cosine_is_invariant_to_positive_scaling(strategy, data, config, log_scales):
    x = planted(data["seed"], data["n_entities"], data["n_groups"], data["noise"])
    a = random_assignment(data["seed"], data["n_entities"], data["extra_tasks"])
    scales = np.exp(np.array(log_scales[: x.shape[0]]))[:, None, None]
    r = run(x, a, strategy, "cosine", **config)
    rs = run((x * scales).astype(np.float32), a, strategy, "cosine", **config)
    np.testing.assert_allclose(rs.distances["cosine"], r.distances["cosine"], atol=1e-6)
    assert np.array_equal(rs.assignment_after, r.assignment_after)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(data=inputs, config=configs, n_degenerate=st.integers(1, 2))
@FAST
def test_degenerate_entities_stay_alone_and_nothing_is_nan(strategy, data, config, n_degenerate):
    x = planted(data["seed"], data["n_entities"] + n_degenerate, data["n_groups"], data["noise"])
    x[-n_degenerate:] = 0.0
    x[-1, 0, 0] = np.nan
    a = np.arange(x.shape[0])
    r = run(x, a, strategy, "auto", **config)
    assert r.degenerate[-n_degenerate:].all()
    sizes = np.bincount(r.assignment_after)
    assert np.all(sizes[r.assignment_after[-n_degenerate:]] == 1)
    for value in (r.singular_values, r.factors, r.membership, r.condition, *r.distances.values()):
        assert not np.any(np.isnan(value))


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(data=inputs, config=configs)
@settings(max_examples=5, deadline=None)
def test_event_is_deterministic(strategy, data, config):
    x = planted(data["seed"], data["n_entities"], data["n_groups"], data["noise"])
    a = random_assignment(data["seed"], data["n_entities"], data["extra_tasks"])
    first, second = (run(x, a, strategy, "auto", **config) for _ in range(2))
    for field in first.__dataclass_fields__:
        u, v = getattr(first, field), getattr(second, field)
        if isinstance(u, dict):
            assert u.keys() == v.keys()
            assert all(np.array_equal(u[k], v[k]) for k in u)
        else:
            assert np.array_equal(u, v, equal_nan=isinstance(u, float)), field


def test_user_strategy_and_distance_run_through_the_event():
    def sign_blind_cosine(window):
        flat = window.summed.reshape(window.n_entities, -1)
        unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-300)
        return 1.0 - np.abs(unit @ unit.T)

    def closest_pair(given):
        distances = given.distance
        d = np.where(np.eye(len(distances), dtype=bool), np.inf, distances)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        labels = np.arange(len(distances))
        labels[j] = i
        return canonical(labels), distances.copy(), float(d[i, j])

    register_distance("test_sign_blind", sign_blind_cosine)
    register_strategy("test_closest_pair", closest_pair)
    try:
        x = planted(7, 6, 3, 0.3)
        x[4] = -x[1]  # opposite gradients: far for cosine, identical for the user distance
        r = run(x, np.arange(6), "test_closest_pair", "test_sign_blind")
        assert list(r.distances) == ["test_sign_blind"] and r.chosen_distance == "test_sign_blind"
        assert r.assignment_after[1] == r.assignment_after[4]
        assert r.assignment_after.max() == 4 and r.threshold < 1e-6
        auto = run(
            x, np.arange(6), "similarity", "auto", auto_candidates=("cosine", "test_sign_blind")
        )
        assert set(auto.silhouettes) == {"cosine", "test_sign_blind"}
    finally:
        DISTANCES.pop("test_sign_blind")
        STRATEGIES.pop("test_closest_pair")
    assert "test_sign_blind" not in DISTANCES and "test_closest_pair" not in STRATEGIES
