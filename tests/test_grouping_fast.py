"""Issue 16: the faster decision is the same decision.

``grouping_event`` applies decision rule 3 by default (``core/grouping/version.py``: the Gram
matrices and the cosine distance formed without copies of the window, rule 2, and the pooled
k-means' exact ties broken as exact arithmetic breaks them, rule 3). Rule 1, the computation
before issue 16, stays reachable as ``grouping_event(..., rule=1)`` and is the reference here,
run with rule 3's tie-breaking (:func:`rule_1_with_rule_3_ties`): under rules 1 and 2, a point
of the pooled k-means that is exactly as far from two centers (an entity's factors are
orthonormal) went to whichever the last bit favoured, and a window captured from a real
training (``ss_kmeans`` seed 1, second event) got K = 4 under rule 1 and K = 2 under rule 2,
from factors 8e-16 apart; the captured window depends on the CPU, so CI passed on one of the
project's machines and failed on the other. On a corpus of windows (planted groups at E = 10, 40, 139, structure-free
Gaussian windows, low-rank, rank-deficient, degenerate, duplicated and badly scaled entities,
near-tied singular values, tall matrices, and windows captured from short real trainings) both
rules give the same partition (``assignment_after``, ``proposed``, ``parent``, ``streak_after``),
the same ``chosen_distance`` and the same pooled k-means (``kmeans_k``, ``kmeans_labels``), and
their floats agree within the tolerances below. ``record=False`` followed by ``complete_record``
gives a result bit-identical to ``record=True``.

Measured on this corpus (33 windows: 24 constructed, 9 from 3 trainings; 99 window x strategy
cases): the largest differences between the rules were 9e-15 in distances, 3e-15 in
conditions, 7e-16 in silhouettes and cut heights, 2e-15 (relative to sigma_max) in singular
values, 4e-16 in memberships and 1.2e-11 in factors whose singular values are 1e-6 apart or
more (near-tied ones may rotate within their span under either rule). The tolerances below
leave a margin of about 1000.

Two constructed windows, (8, 5, 3) and (40, 3, 3) with rank 4 >= min(R, C), are decided on
rounding noise under both rules (see :func:`noise_decided`): their subspace distances are
identically 0 in exact arithmetic, computed as values below 4e-16, and ``distance="auto"``
still picks them by a silhouette of 0.84. There only the factorization and the distances are
compared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
from selective_sharing.core.grouping import (
    DECISION_RULE_VERSION,
    DECISION_RULES,
    EventResult,
    GroupingConfig,
    StrategyInput,
    complete_record,
    grouping_event,
)
from selective_sharing.core.grouping import event as event_module
from selective_sharing.core.grouping.clustering import TIE_TOLERANCE, weighted_kmeans

STRATEGY_NAMES = ("similarity", "kmeans", "variance")
EXACT = (
    "assignment_after", "proposed", "parent", "streak_after", "chosen_distance", "degenerate",
    "kmeans_k", "kmeans_labels", "summed", "assignment_before", "streak_before",
)  # fmt: skip
#: Largest differences between the rules allowed (measured: see the module docstring).
DIST_ATOL = 1e-11  # distances, silhouettes, cut heights (threshold), conditions
SIGMA_RTOL = 1e-10  # singular values, relative to each entity's sigma_max
FACTOR_ATOL = 1e-8  # factors whose singular value is separated from its neighbours by 1e-6
MEMBERSHIP_ATOL = 1e-10


# ----------------------------------------------------------------------------- the corpus


def planted(n_entities: int, seed: int, n_groups: int = 5) -> np.ndarray:
    """``reproduce/bench_decision.py``'s benchmark window (E, 64, 128) float32: 5 groups, each a
    random rank-2 matrix scaled per entity, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    bases = rng.standard_normal((n_groups, 64, 2)) @ rng.standard_normal((n_groups, 2, 128))
    truth = np.arange(n_entities) % n_groups
    scale = rng.uniform(0.5, 2.0, (n_entities, 1, 1))
    noise = rng.standard_normal((n_entities, 64, 128))
    return (bases[truth] * scale + 0.5 * noise).astype(np.float32)


def _with_sigmas(rng: np.random.Generator, sigmas: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A (rows, cols) matrix with the given singular values (random singular vectors)."""
    k = sigmas.size
    u = np.linalg.qr(rng.standard_normal((rows, k)))[0]
    v = np.linalg.qr(rng.standard_normal((cols, k)))[0]
    return (u * sigmas) @ v.T


def synthetic_windows() -> list[tuple[str, np.ndarray]]:
    """Every constructed window of the corpus, named."""
    out: list[tuple[str, np.ndarray]] = []
    for e, seeds in ((10, 2), (40, 2), (139, 1)):
        out += [(f"planted E={e} seed={s}", planted(e, seed=e + s)) for s in range(seeds)]
    for i, (e, r, c) in enumerate([(12, 64, 128), (30, 64, 128), (60, 16, 32), (8, 5, 3),
                                   (25, 12, 6), (40, 3, 3)]):  # fmt: skip
        rng = np.random.default_rng(100 + i)
        out.append((f"gaussian {e}x{r}x{c}", rng.standard_normal((e, r, c)).astype(np.float32)))
    for i in range(4):  # low rank and rank-deficient entities (rank 1..3 < r = 4), duplicates
        rng = np.random.default_rng(200 + i)
        e, groups = 24, 4
        bases = [_with_sigmas(rng, rng.uniform(0.5, 3, g % 3 + 1), 64, 128) for g in range(groups)]
        x = np.stack([bases[j % groups] * rng.uniform(0.5, 2) for j in range(e)])
        x[: e // 2] += 0.05 * rng.standard_normal((e // 2, 64, 128))
        x[-1] = x[-2]  # an exact duplicate
        out.append((f"low rank {i}", x.astype(np.float32)))
    for i in range(3):  # degenerate entities: zeros, NaN, inf, a tiny one
        rng = np.random.default_rng(300 + i)
        x = planted(16, seed=300 + i)
        x[2] = 0.0
        x[5, 3, 7] = np.nan
        x[9, 0, 0] = np.inf
        x[11] *= 1e-15
        out.append((f"degenerate {i}", x))
    for i, gap in enumerate((1e-3, 1e-5, 1e-6)):  # near-tied singular values
        rng = np.random.default_rng(400 + i)
        x = []
        for j in range(18):
            base = 1.0 + j % 3
            sig = np.array([3 * base, base * (1 + gap), base, 0.5 * base, 0.1])
            x.append(_with_sigmas(rng, sig, 64, 128))
        out.append((f"near ties gap={gap:g}", np.asarray(x, dtype=np.float32)))
    for i, scale in enumerate((1e-30, 1e30, 1e120)):  # float64 windows at extreme scales
        x = planted(12, seed=500 + i).astype(np.float64) * scale
        out.append((f"scale {scale:g}", x))
    return out


class _Capture:
    """Training callback keeping every event's inputs."""

    def __init__(self) -> None:
        self.windows: list[tuple[np.ndarray, np.ndarray, np.ndarray, GroupingConfig]] = []

    def on_event(self, trainer, result: EventResult) -> None:
        config = trainer.sharing.config.grouping
        self.windows.append(
            (result.summed, result.assignment_before, result.streak_before, config)
        )


@pytest.fixture(scope="module")
def trained_windows(tmp_path_factory) -> list[tuple[str, tuple]]:
    """Windows of short real trainings (synthetic data, 12 tasks, 3 events each)."""
    pytest.importorskip("torch")
    from selective_sharing.core.config import make_config
    from selective_sharing.core.training import train

    out = []
    overrides = {
        "train.steps": 40, "warmup_steps": 10, "regroup_every": 10, "samples_per_task": 40,
        "n_tasks": 12, "n_groups": 3, "sketch_dim": 32, "window_bins": 8, "train.threads": 1,
    }  # fmt: skip
    for method, seed, extra in [("ss_similarity", 0, {"min_silhouette": 0.1}),
                                ("ss_kmeans", 1, {}), ("ss_similarity", 2, {"patience": 2})]:
        capture = _Capture()
        run = tmp_path_factory.mktemp("fast") / f"{method}_{seed}"
        config = make_config("synthetic", method, seed, overrides={**overrides, **extra},
                             out=str(run))  # fmt: skip
        train(config, progress=False, callbacks=[capture])
        out += [(f"trained {method} seed={seed} event {i}", w)
                for i, w in enumerate(capture.windows)]  # fmt: skip
    return out


def _assignment(n_entities: int, seed: int) -> np.ndarray:
    """Tasks -> entities with every entity used and a few entities holding two tasks."""
    rng = np.random.default_rng(seed)
    extra = rng.integers(0, n_entities, max(1, n_entities // 5))
    return np.sort(np.concatenate([np.arange(n_entities), extra]))


# ----------------------------------------------------------------------------- comparison


def _separated(sv: np.ndarray) -> np.ndarray:
    """(E, r) mask: present singular values at least 1e-6 (relative) from their neighbours."""
    rel = sv / np.maximum(sv[:, :1], 1e-300)
    gap_up = np.abs(np.diff(rel, axis=1, prepend=np.inf))
    gap_down = np.abs(np.diff(rel, axis=1, append=-np.inf))
    return (sv > 0) & (gap_up > 1e-6) & (gap_down > 1e-6)


def noise_decided(ref: EventResult) -> bool:
    """True when a candidate distance is rounding noise everywhere: with ``min(R, C) <= rank``
    every entity's factors span the whole row space, so the subspace distance is identically 0
    and is computed as values of about 1e-16 whose silhouette is scale-free (0.84 at E=8 with
    (5, 3) windows). Both rules then decide on their own roundings, and their partitions may
    differ (a flaw of the rule, not of either computation; reported with issue 16)."""
    return any(d.size > 1 and np.max(d) <= 1e-12 and not np.all(d == 0)
               for d in ref.distances.values())  # fmt: skip


def compare(new: EventResult, ref: EventResult) -> dict[str, float]:
    """Assert the decision is the same; return the largest float differences."""
    exact = EXACT if not noise_decided(ref) else ("degenerate", "summed", "assignment_before")
    for name in exact:
        a, b = getattr(new, name), getattr(ref, name)
        assert np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind == "f"), name
    assert new.distances.keys() == ref.distances.keys()
    d_dist = max(float(np.max(np.abs(new.distances[k] - ref.distances[k]), initial=0.0))
                 for k in ref.distances)  # fmt: skip
    top = np.maximum(ref.singular_values[:, :1], 1e-300)
    d_sigma = float(np.max(np.abs(new.singular_values - ref.singular_values) / top, initial=0.0))
    sep = _separated(ref.singular_values)
    d_factor = float(np.max(np.abs(new.factors - ref.factors)[sep], initial=0.0))
    if exact is not EXACT:
        assert d_dist <= DIST_ATOL and d_sigma <= SIGMA_RTOL and d_factor <= FACTOR_ATOL
        return {}
    d_sil = max(abs(new.silhouettes[k] - ref.silhouettes[k]) for k in ref.silhouettes)
    d_thr = 0.0 if np.isnan(ref.threshold) else abs(new.threshold - ref.threshold)
    assert np.isnan(new.threshold) == np.isnan(ref.threshold)
    d_cond = float(np.max(np.abs(new.condition - ref.condition), initial=0.0))
    d_member = float(np.max(np.abs(new.membership - ref.membership), initial=0.0))
    diffs = {"distance": d_dist, "silhouette": d_sil, "threshold": d_thr, "condition": d_cond,
             "sigma": d_sigma, "factor": d_factor, "membership": d_member}  # fmt: skip
    assert max(d_dist, d_sil, d_thr, d_cond) <= DIST_ATOL, diffs
    assert d_sigma <= SIGMA_RTOL and d_factor <= FACTOR_ATOL, diffs
    assert d_member <= MEMBERSHIP_ATOL, diffs
    return diffs


def _bit_identical(a: EventResult, b: EventResult) -> bool:
    for f in dataclasses.fields(EventResult):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            if x.keys() != y.keys() or not all(np.array_equal(x[k], y[k], equal_nan=True)
                                                for k in x):  # fmt: skip
                return False
        elif isinstance(x, str):
            if x != y:
                return False
        elif not np.array_equal(x, y, equal_nan=np.asarray(x).dtype.kind == "f"):
            return False
    return True


@contextmanager
def rule_1_with_rule_3_ties() -> Iterator[None]:
    """Inside, ``grouping_event(..., rule=1)`` breaks the k-means' ties as rule 3 does: what is
    left of rule 1 is its computation of the factors and distances, which is what issue 16
    changed. (Rules 1 and 2 break exact ties by roundings: their k-means may differ wherever a
    tie occurred, see the module docstring.)"""
    with mock.patch.object(event_module, "_tie_tolerance", lambda rule: TIE_TOLERANCE):
        yield


def _check_window(summed, assignment, streak, config) -> dict[str, float]:
    with rule_1_with_rule_3_ties():
        ref = grouping_event(summed, assignment, streak, config, rule=1)
    new = grouping_event(summed, assignment, streak, config)
    diffs = compare(new, ref)
    if config.strategy != "variance":  # (which reads what similarity reads)
        lean = grouping_event(summed, assignment, streak, config, record=False)
        if config.strategy != "kmeans":  # it reads membership: the k-means ran for the decision
            assert lean.kmeans_k is None and lean.membership is None
        assert _bit_identical(complete_record(lean), new)
    return diffs


def test_rules_are_numbered():
    assert DECISION_RULE_VERSION == max(DECISION_RULES) == 3 and DECISION_RULES == (1, 2, 3)
    with pytest.raises(ValueError, match="unknown decision rule 4"):
        grouping_event(np.ones((2, 3, 3), np.float32), np.arange(2), None, GroupingConfig(),
                       rule=4)  # fmt: skip


def test_an_exact_kmeans_tie_goes_to_the_lower_center_whatever_the_roundings():
    """Rule 3's tie-breaking: e3 is exactly as far from the seeds e1 and e2 (orthonormal, as an
    entity's factors are). Perturbed by one rounding either way, rule 3 still puts it with the
    lower center, as exact arithmetic does; the plain argmin (rules 1 and 2) follows the
    rounding."""
    tiny = 4e-16
    for sign in (1.0, -1.0):
        x = np.eye(3)
        x[2] += sign * tiny * np.array([-1.0, 1.0, 0.0])  # closer to e2 (sign +) or e1 (-)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        d = np.maximum(2.0 - 2.0 * x @ x.T, 0.0)
        d[[0, 1], [1, 0]] = 10.0  # k-means++ seeds e1, then e2: the farthest by far
        w = np.array([1.0, 1.0, 1e-12])  # e3 does not move the centers
        tied, _ = weighted_kmeans(x, w, 2, n_init=1, seed=0, sq_dist=d)
        plain, _ = weighted_kmeans(x, w, 2, n_init=1, seed=0, sq_dist=d, tie_tolerance=0.0)
        assert tied[2] == tied[0] != tied[1]
        assert plain[2] == (plain[1] if sign > 0 else plain[0])


def test_rule_3_differs_from_rule_2_only_where_the_kmeans_differ(trained_windows):
    """Rule 3 changed the k-means' tie-breaking only: for every window and strategy, every field
    of rule 2's result is bit-identical to rule 3's, except the k-means fields and, for the
    ``kmeans`` strategy (it reads ``membership``), the partition, when the k-means differ."""
    kmeans_fields = {"kmeans_k", "kmeans_labels", "membership"}
    differ = 0
    cases = [(s, np.arange(s.shape[0]), None, GroupingConfig(min_silhouette=0.05))
             for _, s in synthetic_windows()] + [w for _, w in trained_windows]  # fmt: skip
    for summed, a, streak, config in cases:
        for strategy in STRATEGY_NAMES:
            c = dataclasses.replace(config, strategy=strategy)
            r2 = grouping_event(summed, a, streak, c, rule=2)
            r3 = grouping_event(summed, a, streak, c)
            same_kmeans = r2.kmeans_k == r3.kmeans_k and np.array_equal(
                r2.kmeans_labels, r3.kmeans_labels
            )
            differ += not same_kmeans
            skip = set() if same_kmeans else kmeans_fields
            if not same_kmeans and strategy == "kmeans":
                skip |= {"proposed", "condition", "threshold", "streak_after",
                         "assignment_after", "parent"}  # fmt: skip
            kept = {f.name: getattr(r3, f.name) for f in dataclasses.fields(EventResult)
                    if f.name in skip}  # fmt: skip
            assert _bit_identical(dataclasses.replace(r2, **kept), r3), strategy
    print(f"\nk-means labels differ between rules 2 and 3 in {differ} of {3 * len(cases)} cases")


def test_fast_decision_matches_rule_1_on_the_corpus(trained_windows):
    cases = []
    for i, (name, summed) in enumerate(synthetic_windows()):
        n = summed.shape[0]
        for strategy in STRATEGY_NAMES:
            config = GroupingConfig(strategy=strategy, min_silhouette=0.05)
            a = np.arange(n) if i % 2 else _assignment(n, seed=i)
            cases.append((name, summed, a, None, config))
    for name, (summed, a, streak, config) in trained_windows:
        for strategy in STRATEGY_NAMES:
            cases.append((name, summed, a, streak, dataclasses.replace(config, strategy=strategy)))
    worst: dict[str, float] = {}
    noisy = 0
    for name, summed, a, streak, config in cases:
        try:
            diffs = _check_window(summed, a, streak, config)
        except AssertionError as err:
            raise AssertionError(f"{name}, strategy {config.strategy}: {err}") from err
        noisy += not diffs
        worst = {k: max(v, worst.get(k, 0.0)) for k, v in diffs.items()}
    assert len(cases) >= 90 and len(trained_windows) >= 9
    assert noisy == 6  # the two (E, 5, 3) and (E, 3, 3) windows, 3 strategies each
    print(f"\n{len(cases)} cases ({noisy} decided on rounding noise), largest differences: {worst}")


def test_record_false_leaves_out_only_the_kmeans():
    summed = planted(20, seed=3)
    config = GroupingConfig()
    full = grouping_event(summed, np.arange(20), None, config)
    lean = grouping_event(summed, np.arange(20), None, config, record=False)
    assert (lean.kmeans_k, lean.kmeans_labels, lean.membership) == (None, None, None)
    for f in dataclasses.fields(EventResult):
        if f.name not in ("kmeans_k", "kmeans_labels", "membership"):
            assert _bit_identical(dataclasses.replace(full, **{
                g: getattr(lean, g) for g in ("kmeans_k", "kmeans_labels", "membership")
            }), lean)  # fmt: skip
    done = complete_record(lean)
    assert _bit_identical(done, full) and complete_record(done) is done
    # a result that lost its private note (e.g. rebuilt field by field) needs the config
    rebuilt = EventResult(**{f.name: getattr(lean, f.name) for f in dataclasses.fields(lean)})
    with pytest.raises(ValueError, match="config="):
        complete_record(rebuilt)
    assert _bit_identical(complete_record(rebuilt, config), full)


def test_membership_is_computed_only_when_read():
    calls = []

    def membership():
        calls.append(1)
        return np.ones((2, 1))

    given = StrategyInput(None, None, None, np.zeros(2, bool), np.ones(2, np.int64),
                          GroupingConfig(), distances={}, trees={}, cuts={}, chosen="d",
                          membership=membership)  # fmt: skip
    assert calls == []
    assert given.membership.shape == (2, 1) and given.membership is given.membership
    assert calls == [1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.membership = None  # type: ignore[misc]
