"""Property tests of the grouping decision (issue 7, item 5) that complete
``tests/test_grouping_properties.py`` (valid partitions, entity permutations, positive per-entity
scaling, degenerate entities under ``auto``, in-process determinism under ``auto``):

- hysteresis: with any prior streak and patience, the partition stays valid, a merge needs
  ``patience`` consecutive proposals of every task pair across it, and merges stay inside the
  (guarded) proposal;
- permuting the *tasks* (assignment order and streak) permutes the result;
- non-finite entities (NaN, +-Inf, all NaN) under every strategy and distance: flagged
  degenerate, kept alone, no NaN anywhere, no merge decided on one;
- cosine distances are unchanged by any global scale (either sign) and by per-entity positive
  scales over ten orders of magnitude; the subspace distance by any non-zero per-entity scale;
- determinism for every distance, and across processes with different BLAS thread counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
)
from selective_sharing.core.grouping.hysteresis import update_streak

ALL_STRATEGIES = sorted(STRATEGIES)
ALL_DISTANCES = [*sorted(DISTANCES), "auto"]
FAST = settings(max_examples=10, deadline=None)


def gradients(seed: int, n_entities: int, n_groups: int, noise: float) -> np.ndarray:
    """Summed gradients ``(E, 5, 9)`` float64: entities of a group share a direction up to a
    positive scale, plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_groups, 5, 9))
    truth = rng.integers(0, n_groups, n_entities)
    scale = rng.uniform(0.5, 2.0, (n_entities, 1, 1))
    return base[truth] * scale + noise * rng.standard_normal((n_entities, 5, 9))


def tasks_of(seed: int, n_entities: int, extra: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    a = np.concatenate([np.arange(n_entities), rng.integers(0, n_entities, extra)])
    return a[rng.permutation(a.size)]


problems = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16), "n_entities": st.integers(2, 8),
    "n_groups": st.integers(1, 3), "noise": st.sampled_from([0.05, 0.5]),
    "extra": st.integers(0, 3),
})  # fmt: skip
configs = st.fixed_dictionaries({
    "rank": st.integers(1, 3), "max_group_size": st.sampled_from([None, 2, 4]),
    "min_groups": st.integers(1, 3), "threshold": st.sampled_from([None, 0.5]),
    "patience": st.integers(1, 3),
})  # fmt: skip


def event(x, a, strategy, distance, streak=None, **cfg):
    return grouping_event(x, a, streak, GroupingConfig(strategy=strategy, distance=distance, **cfg))


def random_streak(seed: int, a: np.ndarray) -> np.ndarray:
    """The streak left by 0-3 earlier events with random proposals (a reachable state)."""
    rng = np.random.default_rng(seed + 2)
    streak = np.zeros((a.size, a.size), dtype=np.int64)
    n_entities = int(a.max()) + 1
    for _ in range(rng.integers(0, 4)):
        streak = update_streak(streak, a, rng.integers(0, 2, n_entities))
    return streak


@pytest.mark.parametrize("distance", ALL_DISTANCES)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(p=problems, cfg=configs)
@FAST
def test_hysteresis_keeps_partitions_valid_and_waits_for_patience(strategy, distance, p, cfg):
    x = gradients(p["seed"], p["n_entities"], p["n_groups"], p["noise"])
    a = tasks_of(p["seed"], p["n_entities"], p["extra"])
    streak = random_streak(p["seed"], a)
    r = event(x, a, strategy, distance, streak, **cfg)
    after, proposed = r.assignment_after, r.proposed
    assert np.array_equal(after, canonical(after)) and np.array_equal(after, r.parent[a])
    same_before, same_after = a[:, None] == a[None, :], after[:, None] == after[None, :]
    assert np.all(same_after[same_before])  # groups never split
    merged = same_after & ~same_before
    assert np.all(r.streak_after[merged] >= cfg["patience"])  # every pair waited long enough
    assert np.all((proposed[a][:, None] == proposed[a][None, :])[merged])  # inside the proposal
    pending = (proposed[a][:, None] == proposed[a][None, :]) & ~same_before
    assert np.array_equal(r.streak_after, np.where(pending, streak + 1, 0))
    sizes = np.bincount(after)
    if cfg["max_group_size"] is not None:
        assert np.all(sizes[np.bincount(r.parent, minlength=sizes.size) > 1]
                      <= cfg["max_group_size"])  # fmt: skip


@pytest.mark.parametrize("distance", ALL_DISTANCES)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(p=problems, cfg=configs, perm_seed=st.integers(0, 1000))
@FAST
def test_permuting_tasks_permutes_the_result(strategy, distance, p, cfg, perm_seed):
    x = gradients(p["seed"], p["n_entities"], p["n_groups"], p["noise"])
    a = tasks_of(p["seed"], p["n_entities"], p["extra"])
    streak = random_streak(p["seed"], a)
    perm = np.random.default_rng(perm_seed).permutation(a.size)
    r = event(x, a, strategy, distance, streak, **cfg)
    rp = event(x, a[perm], strategy, distance, streak[np.ix_(perm, perm)], **cfg)
    # entities keep their numbers: per entity the same decision; group labels are canonical
    # (numbered by first task), so they follow the task order
    assert np.array_equal(rp.proposed, r.proposed)
    assert np.array_equal(rp.parent[:, None] == rp.parent, r.parent[:, None] == r.parent)
    assert np.array_equal(rp.assignment_after, canonical(r.assignment_after[perm]))
    assert np.array_equal(rp.streak_after, r.streak_after[np.ix_(perm, perm)])


@pytest.mark.parametrize("distance", ALL_DISTANCES)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@given(
    p=problems,
    cfg=configs,
    bad=st.sampled_from(["nan", "inf", "-inf", "all_nan"]),
    where=st.integers(0, 7),
)
@FAST
def test_non_finite_entity_is_degenerate_alone_and_never_nan(strategy, distance, p, cfg, bad,
                                                             where):  # fmt: skip
    x = gradients(p["seed"], p["n_entities"], p["n_groups"], p["noise"])
    k = where % x.shape[0]
    if bad == "all_nan":
        x[k] = np.nan
    else:
        x[k, 1, 2] = float(bad)
    a = tasks_of(p["seed"], p["n_entities"], p["extra"])
    r = event(x, a, strategy, distance, **cfg)
    assert r.degenerate[k]
    assert np.sum(r.parent == r.parent[k]) == 1  # never merged
    for d in r.distances.values():
        assert np.all(np.delete(d[k], k) == 1.0)
    for value in (r.singular_values, r.factors, r.membership, r.condition,
                  *r.distances.values(), *r.silhouettes.values()):  # fmt: skip
        assert np.all(np.isfinite(value))


@given(p=problems, scale=st.floats(1e-6, 1e12), negative=st.booleans(),
       per_entity=st.lists(st.floats(-5, 5), min_size=8, max_size=8))  # fmt: skip
@FAST
def test_cosine_ignores_global_and_per_entity_scale(p, scale, negative, per_entity):
    x = gradients(p["seed"], p["n_entities"], p["n_groups"], p["noise"])
    a = np.arange(x.shape[0])
    d = event(x, a, "similarity", "cosine").distances["cosine"]
    glob = -scale if negative else scale
    d_global = event(x * glob, a, "similarity", "cosine").distances["cosine"]
    np.testing.assert_allclose(d_global, d, atol=1e-12)
    factors = 10.0 ** np.asarray(per_entity[: x.shape[0]])[:, None, None]
    d_each = event(x * factors, a, "similarity", "cosine").distances["cosine"]
    np.testing.assert_allclose(d_each, d, atol=1e-12)


@given(p=problems, per_entity=st.lists(st.floats(-3, 3), min_size=8, max_size=8),
       signs=st.lists(st.booleans(), min_size=8, max_size=8))  # fmt: skip
@FAST
def test_subspace_ignores_any_non_zero_per_entity_scale(p, per_entity, signs):
    x = gradients(p["seed"], p["n_entities"], p["n_groups"], p["noise"])
    a = np.arange(x.shape[0])
    n = x.shape[0]
    factors = np.where(signs[:n], -1.0, 1.0) * 10.0 ** np.asarray(per_entity[:n])
    d = event(x, a, "similarity", "subspace").distances["subspace"]
    ds = event(x * factors[:, None, None], a, "similarity", "subspace").distances["subspace"]
    np.testing.assert_allclose(ds, d, atol=1e-9)


def _fingerprint(r) -> dict:
    """Every field of an EventResult as exact bytes (hex), for bitwise comparisons."""
    out = {}
    for name in r.__dataclass_fields__:
        value = getattr(r, name)
        if isinstance(value, dict):
            value = {k: np.asarray(v).tobytes().hex() for k, v in sorted(value.items())}
        elif isinstance(value, np.ndarray):
            value = value.tobytes().hex()
        elif isinstance(value, float):
            value = np.float64(value).tobytes().hex()
        out[name] = value
    return out


CASES = [(s, d, seed) for s in ALL_STRATEGIES for d in ALL_DISTANCES for seed in (0, 1)]


def _fingerprints() -> list[dict]:
    out = []
    for strategy, distance, seed in CASES:
        x = gradients(seed, 7, 2, 0.3)
        a = tasks_of(seed, 7, 2)
        out.append(_fingerprint(event(x, a, strategy, distance, patience=2)))
    return out


def test_every_distance_is_deterministic_in_process_and_across_processes() -> None:
    here = _fingerprints()
    assert here == _fingerprints()  # repeated in one process
    code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
            "from test_grouping_hypothesis import _fingerprints\n"
            "print(json.dumps(_fingerprints()))\n")  # fmt: skip
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=False, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout) == here, f"differs with {threads} BLAS threads"
