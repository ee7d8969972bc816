"""Grouping baselines: the pure affinity -> partition step, and the baseline methods end to end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from selective_sharing.core import make_config, store
from selective_sharing.core.config import ConfigError
from selective_sharing.core.grouping.affinity import (_partitions, agglomerate, exhaustive,
                                                      partition_score, random_partition)
from selective_sharing.core.grouping.partition import canonical, group_sizes
from selective_sharing.core.methods import METHOD_SPECS
from selective_sharing.core.training import train


def _blocks(sizes, strength=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    a = strength * (labels[:, None] == labels[None, :]) + 0.1 * rng.standard_normal(
        (labels.size, labels.size))
    return a, canonical(labels)


def test_enumeration_counts_match_stirling_numbers() -> None:
    # S(6, k) for k = 1..6: 1, 31, 90, 65, 15, 1
    assert [sum(1 for _ in _partitions(6, k)) for k in range(1, 7)] == [1, 31, 90, 65, 15, 1]


def test_exhaustive_finds_the_best_partition_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 6))
    best = exhaustive(a, 3)
    brute = max((canonical(np.array(p)) for p in itertools.product(range(3), repeat=6)
                 if len(set(p)) == 3), key=lambda lab: partition_score(a, lab))
    assert partition_score(a, best) == pytest.approx(partition_score(a, brute))


@pytest.mark.parametrize("fn", [agglomerate, exhaustive])
def test_planted_affinity_blocks_are_recovered(fn) -> None:
    a, truth = _blocks([3, 3, 2])
    np.testing.assert_array_equal(fn(a, 3), truth)


def test_random_partition_keeps_sizes_and_depends_on_seed() -> None:
    p0, p1 = random_partition([5, 3, 2], 0), random_partition([5, 3, 2], 1)
    assert sorted(group_sizes(p0).tolist()) == [2, 3, 5]
    assert not np.array_equal(p0, p1)
    np.testing.assert_array_equal(p0, random_partition([5, 3, 2], 0))


SMALL = {"train.steps": 30, "samples_per_task": 30, "n_tasks": 9, "data.n_groups": 3,
         "affinity_every": 5}


@pytest.mark.parametrize("method", [m for m, s in METHOD_SPECS.items() if s.partition])
def test_baselines_train_a_fixed_partition_and_count_their_passes(tmp_path, method) -> None:
    overrides = {**SMALL, "baseline.n_groups": 3}
    if method == "random_groups":
        overrides = {**SMALL, "group_sizes": "[4, 3, 2]"}
    cfg = make_config("synthetic", method, 0, overrides=overrides, out=str(tmp_path / method))
    run = train(cfg, progress=False)
    m = store.read_metrics(run)
    part = m["partition"].values
    assert int(m["n_groups"]) == 3 == len(np.unique(part))
    history = store.read_history(run)["assignment"].values
    assert (history == part).all(), "a baseline's partition is fixed for the whole training"
    if method in ("cosine_groups", "tag"):
        aff = store.read_affinity(run)
        np.testing.assert_array_equal(aff["partition"].values, part)
        recorded = aff.attrs["recorded_steps"]
        assert recorded == 30 // 5
        # joint phase + grouped phase, plus one backward per task per recording step
        assert int(m["backward_passes"]) == 30 + 30 + recorded * 9
    else:
        assert int(m["backward_passes"]) == 30
    if method == "oracle":
        assert float(m["adjusted_rand_index"]) == 1.0


def test_random_groups_without_reference_fails_before_training(tmp_path) -> None:
    cfg = make_config("synthetic", "random_groups", 0, overrides=SMALL, out=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="set baseline.reference_run=RUN_DIR"):
        train(cfg, progress=False)
