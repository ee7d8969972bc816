"""Hand-computed cases for the pure grouping pipeline (selective_sharing.core.grouping)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import pdist, squareform
from selective_sharing.core.grouping import (
    DISTANCES,
    STRATEGIES,
    GroupingConfig,
    StrategyInput,
    Window,
    canonical,
    compose,
    countsketch_params,
    dense_projection,
    grouping_event,
    register_distance,
    register_strategy,
)
from selective_sharing.core.grouping.distances import cosine, subspace
from selective_sharing.core.grouping.factorize import factorize
from selective_sharing.core.grouping.guards import apply_guards
from selective_sharing.core.grouping.hysteresis import apply_patience, update_streak
from selective_sharing.core.grouping.silhouette import (
    average_linkage,
    best_cut,
    labels_after_merges,
    silhouette_score,
)
from selective_sharing.core.grouping.sketch import resolve_kind
from selective_sharing.core.grouping.strategies.kmeans import kmeans
from selective_sharing.core.grouping.strategies.variance import variance
from sklearn.metrics import silhouette_score as sk_silhouette

# ---------------------------------------------------------------- inputs with known structure


def in_plane(angles_deg: list[float]) -> np.ndarray:
    """Entities (E, 1, 2) whose gradients are unit vectors at the given angles: cosine distance
    between i and j is 1 - cos(angle_i - angle_j)."""
    rad = np.deg2rad(angles_deg)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)[:, None, :].astype(np.float32)


def same_function_groups(seed: int, per: int = 4, groups: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Kang-like: a group shares one (16, 32) gradient up to scale; noise makes the top factors
    of each entity unstable. Cosine separates the groups best."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((groups, 16, 32))
    truth = np.repeat(np.arange(groups), per)
    scale = rng.uniform(0.5, 2.0, (truth.size, 1, 1))
    x = base[truth] * scale + 0.3 * rng.standard_normal((truth.size, 16, 32))
    return x.astype(np.float32), truth


def same_subspace_groups(seed: int, per: int = 4, groups: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """mnist_context-like: a group reads one 2-d subspace of the representation but computes
    unrelated functions of it (independent row mixes). Only subspace separates the groups."""
    rng = np.random.default_rng(seed)
    basis = [np.linalg.qr(rng.standard_normal((32, 2)))[0] for _ in range(groups)]
    truth = np.repeat(np.arange(groups), per)
    x = np.stack([rng.standard_normal((16, 2)) @ basis[g].T for g in truth])
    return x.astype(np.float32), truth


def one_subspace_groups(seed: int, per: int = 4, groups: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Every entity reads the same 2-d subspace; groups differ in the function (the row mix).
    Only cosine separates the groups."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((32, 2)))[0]
    mix = rng.standard_normal((groups, 16, 2))
    truth = np.repeat(np.arange(groups), per)
    x = np.stack([rng.uniform(0.5, 2.0) * mix[g] @ basis.T for g in truth])
    x = x + 0.05 * rng.standard_normal(x.shape)
    return x.astype(np.float32), truth


def event(x: np.ndarray, streak=None, assignment=None, **cfg) -> object:
    a = np.arange(x.shape[0]) if assignment is None else np.asarray(assignment)
    return grouping_event(x, a, streak, GroupingConfig(**cfg))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(canonical(a), canonical(b))


def window(degenerate, summed=None, factors=None, singular_values=None) -> Window:
    """The input of a distance, for calling one directly (fields it does not read: None)."""
    deg = np.asarray(degenerate, dtype=bool)
    ones = np.ones(deg.size, dtype=np.int64)
    return Window(summed, factors, singular_values, deg, ones, GroupingConfig())


def strategy_input(d, config, membership=None, degenerate=None) -> StrategyInput:
    """The input grouping_event gives a strategy whose chosen distance is ``d`` (one task per
    entity), for calling a strategy directly."""
    n = d.shape[0]
    sizes = np.ones(n, dtype=np.int64)
    tree = average_linkage(d)
    cut = best_cut(
        d, tree, min_groups=config.min_groups, max_group_size=config.max_group_size, sizes=sizes
    )
    deg = np.zeros(n, dtype=bool) if degenerate is None else np.asarray(degenerate, dtype=bool)
    return StrategyInput(
        None, None, None, deg, sizes, config, distances={"d": d}, trees={"d": tree},
        cuts={"d": cut}, chosen="d", membership=membership,
    )  # fmt: skip


# ---------------------------------------------------------------- partitions


def test_canonical_numbers_groups_by_first_occurrence():
    assert canonical(np.array([5, 5, 2, 7, 2])).tolist() == [0, 0, 1, 2, 1]
    assert canonical(np.array([], dtype=int)).tolist() == []
    assert canonical(np.array([3, 1, 3])).dtype == np.int64


def test_compose_maps_tasks_through_entity_labels():
    assert compose(np.array([0, 1, 1, 2]), np.array([4, 4, 9])).tolist() == [4, 4, 4, 9]
    with pytest.raises(ValueError, match="assignment values"):
        compose(np.array([0, 3]), np.array([0, 1]))


# ---------------------------------------------------------------- factorize


@pytest.mark.parametrize("shape", [(3, 12, 20), (3, 20, 12)])
def test_factorize_matches_svd_up_to_sign(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    sv, factors, degenerate = factorize(x, rank=4)
    _, s_ref, vt_ref = np.linalg.svd(x, full_matrices=False)
    assert not degenerate.any()
    np.testing.assert_allclose(sv, s_ref[:, :4], rtol=1e-10)
    # Same directions: |<v, v_ref>| = 1 for each factor.
    overlap = np.abs(np.einsum("erc,erc->er", factors, vt_ref[:, :4]))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-8)


def test_factorize_sign_is_canonical_and_rank_deficiency_is_zero_padded():
    rng = np.random.default_rng(1)
    low_rank = rng.standard_normal((2, 6, 2)) @ rng.standard_normal((2, 2, 9))  # rank 2
    sv, factors, _ = factorize(low_rank, rank=4)
    assert np.all(sv[:, :2] > 0) and np.all(sv[:, 2:] == 0)
    assert np.all(factors[:, 2:] == 0)
    rows = factors[:, :2].reshape(-1, 9)
    top = rows[np.arange(len(rows)), np.argmax(np.abs(rows), axis=1)]
    assert np.all(top > 0)
    # fewer rows than the rank: padded as well
    sv_small, f_small, _ = factorize(rng.standard_normal((1, 3, 10)), rank=5)
    assert sv_small.shape == (1, 5) and f_small.shape == (1, 5, 10)
    assert np.all(sv_small[0, 3:] == 0) and np.all(f_small[0, 3:] == 0)


def test_factorize_flags_zero_and_nonfinite_entities_without_nan():
    x = np.ones((3, 4, 5), dtype=np.float32)
    x[1] = 0.0
    x[2, 0, 0] = np.nan
    sv, factors, degenerate = factorize(x, rank=2)
    assert degenerate.tolist() == [False, True, True]
    assert np.all(np.isfinite(sv)) and np.all(np.isfinite(factors))
    assert np.all(sv[1:] == 0) and np.all(factors[1:] == 0)


def test_factorize_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        factorize(np.ones((1, 2, 2)), rank=0)


# ---------------------------------------------------------------- distances


def test_cosine_distance_hand_computed():
    x = in_plane([0, 0, 90, 180]).astype(np.float64)
    x[1] *= 3.0  # scale does not matter
    d = cosine(window(np.zeros(4, bool), summed=x))
    expected = np.array([[0, 0, 1, 2], [0, 0, 1, 2], [1, 1, 0, 1], [2, 2, 1, 0]], float)
    np.testing.assert_allclose(d, expected, atol=1e-15)


def test_subspace_distance_hand_computed():
    e = np.eye(4)
    factors = np.stack([e[[0, 1]], e[[1, 2]], e[[2, 3]], np.stack([e[0], 0 * e[0]])])
    sv = np.array([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [1.0, 0.0]])
    d = subspace(window(np.zeros(4, bool), factors=factors, singular_values=sv))
    # span(e0,e1) vs span(e1,e2): one shared direction of two -> 1 - 1/2
    assert d[0, 1] == 0.5 and d[0, 2] == 1.0 and d[1, 2] == 0.5
    # a rank-1 entity inside a rank-2 span is at distance 0 (r_eff = 1)
    assert d[3, 0] == 0.0 and d[3, 1] == 1.0


def test_degenerate_entity_is_at_distance_one_from_all():
    x = in_plane([0, 10, 90]).astype(np.float64)
    x[2] = 0.0
    deg = np.array([False, False, True])
    for fn in (cosine, subspace):
        sv, factors, _ = factorize(x, rank=1)
        d = fn(window(deg, x, factors, sv))
        assert d[2, 0] == d[2, 1] == d[0, 2] == 1.0 and d[2, 2] == 0.0


# ---------------------------------------------------------------- silhouette and cuts


@pytest.mark.parametrize("seed", range(20))
def test_silhouette_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    d = squareform(pdist(rng.standard_normal((n, 3))))
    labels = rng.integers(0, int(rng.integers(2, n)), n)
    labels[0] = labels.max() + 1  # at least one singleton cluster
    n_lab = np.unique(labels).size
    if not 2 <= n_lab <= n - 1:
        labels[1] = labels[0] if n_lab == n else labels[1] + 10
    assert silhouette_score(d, labels) == pytest.approx(
        sk_silhouette(d, labels, metric="precomputed"), abs=1e-12
    )


def test_silhouette_rejects_trivial_partitions():
    d = squareform(pdist(np.arange(4.0)[:, None]))
    with pytest.raises(ValueError, match="n_groups"):
        silhouette_score(d, np.zeros(4, int))


def test_best_cut_is_the_best_of_all_realizable_cuts():
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(3, 25))
        points = rng.standard_normal((n, 2))
        if trial % 3 == 0:
            points = np.round(points)  # ties in the tree
        d = squareform(pdist(points))
        tree = linkage(squareform(d, checks=False), method="average")
        labels, score, height = best_cut(d, tree, min_groups=2, max_group_size=4)
        candidates = []
        for m in range(1, n - 1):
            cut = labels_after_merges(tree, n, m)
            ok = tree[m - 1, 2] < tree[m, 2] and np.bincount(cut).max() <= 4 and cut.max() >= 1
            if ok:
                candidates.append((silhouette_score(d, cut), m, cut))
        if not candidates:
            assert score == -1.0 and np.isnan(height) and labels.tolist() == list(range(n))
            continue
        best = max(c[0] for c in candidates)
        first = next(c for c in candidates if c[0] >= best - 1e-12)
        assert score == pytest.approx(best, abs=1e-12)
        assert np.array_equal(labels, first[2])
        assert tree[first[1] - 1, 2] < height < tree[first[1], 2]


def test_best_cut_of_two_clear_clusters():
    d = squareform(pdist(np.array([[0.0], [0.1], [0.2], [5.0], [5.1]])))
    tree = linkage(squareform(d), method="average")
    labels, score, height = best_cut(d, tree)
    assert labels.tolist() == [0, 0, 0, 1, 1] and score > 0.9
    assert 0.2 < height < 5.0


# ---------------------------------------------------------------- strategies on known inputs

TWO_PAIRS = [0, 10, 90, 100]  # cosine: 0.015 within pairs, >= 0.83 across


@pytest.mark.parametrize("distance", ["cosine", "auto"])
def test_similarity_finds_the_two_close_pairs(distance):
    r = event(in_plane(TWO_PAIRS), strategy="similarity", distance=distance, rank=1)
    assert r.assignment_after.tolist() == [0, 0, 1, 1]
    # merged pairs are exactly those whose condition is <= the threshold
    merged = r.proposed[:, None] == r.proposed[None, :]
    assert np.array_equal(merged, r.condition <= r.threshold)


def test_similarity_with_absolute_threshold():
    x = in_plane([0, 10, 90, 100])
    assert event(x, distance="cosine", threshold=0.05).assignment_after.tolist() == [0, 0, 1, 1]
    assert event(x, distance="cosine", threshold=1.5).assignment_after.tolist() == [0, 0, 0, 0]
    assert event(x, distance="cosine", threshold=0.001).assignment_after.tolist() == [0, 1, 2, 3]


def test_similarity_merges_nothing_below_min_silhouette():
    x = in_plane([0, 10, 90, 100])
    r = event(x, distance="cosine", min_silhouette=1.0)
    assert r.assignment_after.tolist() == [0, 1, 2, 3] and np.isnan(r.threshold)


def test_variance_pairs_the_farthest():
    # cosine: d(0,3)=1.98 > d(1,3)=1.77 > d(0,2)=1.17 > d(1,2)=d(2,3)=0.66 > d(0,1)=0.13
    x = in_plane([0, 30, 100, 170])
    r = event(x, strategy="variance", distance="cosine")
    # default threshold = mean off-diagonal (1.06): 0-3 join; 1-2 (0.66) stays apart
    assert r.assignment_after.tolist() == [0, 1, 2, 0]
    assert r.threshold == pytest.approx(r.distances["cosine"][np.triu_indices(4, 1)].mean())
    r = event(x, strategy="variance", distance="cosine", threshold=0.5)
    assert r.assignment_after.tolist() == [0, 1, 1, 0]
    r = event(x, strategy="variance", distance="cosine", threshold=0.5, max_group_size=4)
    assert r.assignment_after.tolist() == [0, 0, 0, 0]


def test_variance_respects_min_groups():
    d = 1.0 - np.eye(4)
    cfg = GroupingConfig(strategy="variance", threshold=0.5, min_groups=3)
    labels, _, _ = variance(strategy_input(d, cfg))
    assert labels.max() + 1 == 3


def test_kmeans_groups_by_dominant_cluster():
    m = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.0, 0.0]])
    deg = np.array([False, False, False, False, True])
    cfg = GroupingConfig(strategy="kmeans")
    labels, condition, threshold = kmeans(strategy_input(np.ones((5, 5)) - np.eye(5), cfg, m, deg))
    assert labels.tolist() == [0, 0, 1, 1, 2] and np.isnan(threshold)
    assert condition[0, 2] == pytest.approx(1 - (0.7 * 0.2 + 0.3 * 0.8))


def test_kmeans_event_recovers_factor_clusters():
    rng = np.random.default_rng(5)
    directions = np.linalg.qr(rng.standard_normal((20, 2)))[0].T  # two orthogonal directions
    truth = np.array([0, 1, 0, 1, 1, 0])
    x = np.stack([np.outer(rng.standard_normal(6), directions[g]) for g in truth])
    x += 1e-3 * rng.standard_normal(x.shape)
    r = event(x.astype(np.float32), strategy="kmeans", rank=1)
    assert r.kmeans_k == 2
    assert same_partition(r.assignment_after, truth)
    np.testing.assert_allclose(r.membership.max(axis=1), 1.0)


# ---------------------------------------------------------------- auto distance


@pytest.mark.parametrize("seed", range(3))
def test_auto_picks_subspace_when_only_subspace_separates(seed):
    x, truth = same_subspace_groups(seed)
    r = event(x, rank=2)
    assert r.chosen_distance == "subspace"
    assert r.silhouettes["subspace"] > r.silhouettes["cosine"]
    assert same_partition(r.assignment_after, truth)
    assert not same_partition(event(x, rank=2, distance="cosine").assignment_after, truth)


@pytest.mark.parametrize("seed", range(3))
def test_auto_picks_cosine_when_only_cosine_separates(seed):
    x, truth = one_subspace_groups(seed)
    r = event(x, rank=2)
    assert r.chosen_distance == "cosine"
    assert same_partition(r.assignment_after, truth)
    assert not same_partition(event(x, rank=2, distance="subspace").assignment_after, truth)


def test_auto_ties_go_to_the_first_candidate():
    r = event(in_plane([0, 10]), rank=1)  # E == 2: no silhouette for either
    assert r.silhouettes == {"cosine": -1.0, "subspace": -1.0}
    assert r.chosen_distance == "cosine"
    r = event(in_plane([0, 10]), rank=1, auto_candidates=("subspace", "cosine"))
    assert r.chosen_distance == "subspace"


# ---------------------------------------------------------------- degenerate entities


@pytest.mark.parametrize("strategy", ["similarity", "variance", "kmeans"])
def test_degenerate_entities_never_merge_and_never_give_nan(strategy):
    x, _ = same_function_groups(0, per=3, groups=2)
    x = np.concatenate([x, np.zeros_like(x[:2])])
    x[-1, 0, 0] = np.inf
    r = event(x, strategy=strategy, threshold=1.9 if strategy == "similarity" else None)
    assert r.degenerate.tolist() == [False] * 6 + [True, True]
    for value in (r.singular_values, r.factors, r.membership, r.condition, *r.distances.values()):
        assert not np.any(np.isnan(value))
    sizes = np.bincount(r.assignment_after)
    assert sizes[r.assignment_after[6]] == 1 and sizes[r.assignment_after[7]] == 1
    assert np.all(r.kmeans_labels[6:] == -1) and np.all(r.membership[6:] == 0)


def test_all_degenerate_event_is_a_no_op():
    r = event(np.zeros((3, 2, 2), np.float32))
    assert r.assignment_after.tolist() == [0, 1, 2] and r.kmeans_k == 1


# ---------------------------------------------------------------- guards


def test_guards_split_oversized_groups_along_the_tree():
    d = squareform(pdist(np.array([[0.0], [0.1], [1.0], [1.1]])))
    labels = apply_guards(np.zeros(4, int), d, max_group_size=2)
    assert labels.tolist() == [0, 0, 1, 1]
    # sizes count tasks: entity 0 holds 2 tasks, so it cannot join anyone under a limit of 2
    labels = apply_guards(np.zeros(4, int), d, max_group_size=2, sizes=np.array([2, 1, 1, 1]))
    assert labels.tolist() == [0, 1, 2, 2]


def test_guards_split_the_widest_group_until_min_groups():
    d = squareform(pdist(np.array([[0.0], [0.1], [5.0], [5.3], [9.0]])))
    labels = apply_guards(np.array([0, 0, 1, 1, 1]), d, min_groups=3)
    assert labels.tolist() == [0, 0, 1, 1, 2]  # {5, 5.3, 9} is wider than {0, 0.1}
    assert apply_guards(np.zeros(2, int), d[:2, :2], min_groups=5).tolist() == [0, 1]


def test_guards_isolate_degenerate_entities():
    labels = apply_guards(np.zeros(3, int), np.zeros((3, 3)), degenerate=np.array([0, 1, 0], bool))
    assert labels.tolist() == [0, 1, 0]


def test_event_max_group_size_counts_tasks():
    x = in_plane([0, 5, 10])
    r = event(x, assignment=[0, 0, 1, 2], distance="cosine", threshold=0.5, max_group_size=2)
    assert r.assignment_after.tolist() == [0, 0, 1, 1]  # entity 0 (2 tasks) stays alone


# ---------------------------------------------------------------- hysteresis


def test_update_streak_counts_pending_pairs_only():
    before = np.array([[0, 2, 1], [2, 0, 0], [1, 0, 0]])
    after = update_streak(before, np.array([0, 0, 1]), np.array([0, 0]))
    assert after.tolist() == [[0, 0, 2], [0, 0, 1], [2, 1, 0]]  # 0-1 already share an entity
    assert update_streak(after, np.array([0, 0, 1]), np.array([0, 1])).sum() == 0


def test_patience_one_returns_the_proposal():
    proposed = np.array([0, 1, 0, 2])
    a = np.array([0, 1, 2, 3, 1])
    streak = update_streak(np.zeros((5, 5), int), a, proposed)
    assert apply_patience(a, proposed, streak, 1).tolist() == [0, 1, 0, 2]
    assert apply_patience(a, proposed, streak, 2).tolist() == [0, 1, 2, 3]


def test_patience_two_delays_a_merge_by_one_event():
    x = in_plane(TWO_PAIRS)
    first = event(x, distance="cosine", patience=2)
    assert first.proposed.tolist() == [0, 0, 1, 1]
    assert first.assignment_after.tolist() == [0, 1, 2, 3]  # proposed once: not yet
    assert first.streak_after[0, 1] == 1 and first.streak_after[0, 2] == 0
    second = event(x, streak=first.streak_after, distance="cosine", patience=2)
    assert second.assignment_after.tolist() == [0, 0, 1, 1]
    assert np.all(second.streak_after[[0, 2], [1, 3]] == 2)
    assert event(x, distance="cosine").assignment_after.tolist() == [0, 0, 1, 1]


# ---------------------------------------------------------------- event bookkeeping


def test_event_records_inputs_and_parents():
    x = in_plane([0, 90, 5, 95, 180])
    a = np.array([0, 1, 2, 3, 4, 4])
    r = event(x, assignment=a, distance="cosine", threshold=0.1)
    assert r.summed.dtype == np.float32 and np.array_equal(r.summed, x)
    assert r.summed is not x
    assert r.assignment_after.tolist() == [0, 1, 0, 1, 2, 2]
    assert r.parent.tolist() == [0, 1, 0, 1, 2]
    assert r.n_entities_after == 3 and r.merged


def test_event_with_one_entity_does_nothing():
    r = event(in_plane([0]), assignment=[0, 0])
    assert r.assignment_after.tolist() == [0, 0] and np.isnan(r.threshold)
    assert r.silhouettes == {"cosine": -1.0, "subspace": -1.0}


def test_event_with_two_entities_merges_only_under_a_threshold():
    x = in_plane([0, 1])
    assert event(x).assignment_after.tolist() == [0, 1]
    assert event(x, threshold=0.5).assignment_after.tolist() == [0, 0]


def test_event_rejects_inconsistent_inputs():
    x = in_plane([0, 1, 2])
    with pytest.raises(ValueError, match="assignment must use every entity"):
        event(x, assignment=[0, 1, 1])
    with pytest.raises(ValueError, match="streak"):
        event(x, streak=np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="summed"):
        grouping_event(np.zeros((3, 2)), np.arange(3), None, GroupingConfig())


def test_event_rejects_a_distance_that_breaks_the_protocol():
    def bad(window):
        return np.full((window.n_entities, window.n_entities), 3.0)

    register_distance("test_bad_distance", bad)
    try:
        with pytest.raises(ValueError, match="test_bad_distance"):
            event(in_plane([0, 1, 2]), distance="test_bad_distance")
    finally:
        DISTANCES.pop("test_bad_distance")


# ---------------------------------------------------------------- registry


def test_registry_rejects_duplicates_and_reserved_names():
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("similarity", lambda *a, **k: None)
    with pytest.raises(ValueError, match="reserved"):
        register_distance("auto", lambda *a: None)
    with pytest.raises(ValueError, match="reserved"):
        register_strategy("auto")

    @register_strategy("test_decorated")
    def decorated(given):
        return np.arange(given.n_entities), given.distance, float("nan")

    try:
        assert STRATEGIES["test_decorated"] is decorated
    finally:
        STRATEGIES.pop("test_decorated")


# ---------------------------------------------------------------- sketches


def test_dense_projection_is_rebuilt_from_its_seed_and_preserves_norms():
    p = dense_projection(300, 256, seed=3)
    assert p.shape == (300, 256) and p.dtype == np.float32
    assert np.array_equal(p, dense_projection(300, 256, seed=3))
    assert not np.array_equal(p, dense_projection(300, 256, seed=4))
    x = np.random.default_rng(0).standard_normal((200, 300)).astype(np.float32)
    ratio = (np.linalg.norm(x @ p, axis=1) / np.linalg.norm(x, axis=1)) ** 2
    assert abs(ratio.mean() - 1.0) < 0.05  # E||xP||^2 = ||x||^2


def capture_projection(x: np.ndarray, sketch_dim: int, seed: int, kind: str):
    """The bins core/capture.py writes for one step of signal ``x`` ``(E, n_in)``: its projection,
    with the kind it resolved."""
    torch = pytest.importorskip("torch")
    from selective_sharing.core.capture import GradientWindow

    w = GradientWindow(x.shape[0], (1, x.shape[1]), 1, 1, sketch_dim, seed, kind)
    w.add(torch.from_numpy(x))
    return w.finish()[1][:, 0], w.sketch_kind


def test_countsketch_equals_its_explicit_matrix():
    bucket, sign = countsketch_params(50, 8, seed=2)
    assert bucket.dtype == np.int64 and sign.dtype == np.float32
    assert set(np.unique(sign)) <= {-1.0, 1.0} and 0 <= bucket.min() and bucket.max() < 8
    matrix = np.zeros((50, 8), np.float32)
    matrix[np.arange(50), bucket] = sign
    x = np.random.default_rng(1).standard_normal((12, 50)).astype(np.float32)
    bins, kind = capture_projection(x, 8, 2, "countsketch")
    assert kind == "countsketch"
    np.testing.assert_allclose(bins, x @ matrix, rtol=1e-5, atol=1e-6)


def test_sketch_kinds():
    assert resolve_kind("auto", 64, 16) == "dense"
    assert resolve_kind("auto", 2**20, 8) == "countsketch"
    assert resolve_kind("countsketch", 64, 16) == "countsketch"
    with pytest.raises(ValueError, match="kind"):
        resolve_kind("fft", 64, 16)
    x = np.ones((2, 64), np.float32)
    bins, kind = capture_projection(x, 16, 0, "auto")
    assert kind == "dense"
    np.testing.assert_allclose(bins, x @ dense_projection(64, 16, 0), rtol=1e-5, atol=1e-5)
