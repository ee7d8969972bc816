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


def _loop_reference(trainer, shared, x, y, b_idx, t_idx, present):
    """The definition: one ``autograd.grad`` of each task's loss through the whole model."""
    import torch

    from selective_sharing.core.losses import entry_losses

    losses = entry_losses(trainer.model.forward_entries(x, b_idx, t_idx), y, t_idx,
                          trainer.codes, trainer.n_classes, trainer.cfg.train.rank_mse_weight)
    rows = []
    for i in present.tolist():
        g = torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).flatten()
                               for gi, p in zip(g, shared)]))
    return losses.detach(), torch.stack(rows)


def _recording_case(case: str, method: str = "mtl", model=None):
    """A trainer three steps into joint training (one estimator per task) on ``case``'s data
    (``computer``, ``shapes``, ``binary``, ``multiclass``; any other name: ``synthetic``) and
    the labelled entries of its next batch: ``(trainer, x, y, b_idx, t_idx)``. ``model``: a
    function of the data that builds the model (default: the built-in one)."""
    from selective_sharing.core.training import Trainer
    from selective_sharing.datasets import load_dataset
    from selective_sharing.datasets.planted import planted

    overrides = {"train.device": "cpu"}
    if case == "computer":
        data = load_dataset("computer", n_train_items=8)
    elif case == "shapes":
        data = load_dataset("shapes_context", seed=0, n_train=64, n_test=16)
        overrides["train.batch_size"] = 16
    elif case in ("binary", "multiclass"):
        name = {"binary": "issue_binary_uneven", "multiclass": "shared_multiclass_equal"}[case]
        data = planted(name, 0)
    else:
        data = load_dataset("synthetic", seed=0)
    trainer = Trainer(make_config(data.name, method, 0, overrides=overrides), data,
                      assignment=np.arange(data.n_tasks),
                      model=None if model is None else model(data))
    trainer.sharing.close()
    for _ in range(3):  # away from the identical start
        trainer._step()
    trainer.step = 0
    x, y, m = trainer._next_batch()
    b_idx, t_idx = m.nonzero(as_tuple=True)
    return trainer, x, y[b_idx, t_idx], b_idx, t_idx


@pytest.mark.parametrize("case", ["synthetic", "computer", "binary", "multiclass", "shapes",
                                  "stl", "chunked"])
def test_batched_task_gradients_equal_one_backward_per_task(case, monkeypatch) -> None:
    """The recorder's per-task trunk gradients (one backward to per-entry rows, then batched
    trunk products) equal one autograd.grad per task: regression, rank with its pairwise term,
    binary, multiclass, a convolutional trunk, per-task trunks, and cotangents in chunks."""
    import torch

    from selective_sharing.core import baselines

    trainer, x, y, b_idx, t_idx = _recording_case(case, method="stl" if case == "stl" else "mtl")
    data = trainer.data
    present = torch.bincount(t_idx, minlength=data.n_tasks).nonzero()[:, 0]
    shared = list(trainer.model.trunk.parameters())
    if case == "chunked":  # three tasks' cotangents per chunk, by their size
        rows = trainer.model.representation(x).numel()
        monkeypatch.setattr(baselines, "COTANGENT_ELEMENTS", 3 * rows)
    if case == "computer":  # seven tasks per chunk, by their count
        monkeypatch.setattr(baselines, "COTANGENT_TASKS", 7)
    losses, flat = baselines.task_trunk_gradients(trainer, shared, x, y, b_idx, t_idx, present)
    ref_losses, ref = _loop_reference(trainer, shared, x, y, b_idx, t_idx, present)
    assert flat.shape == ref.shape == (len(present), sum(p.numel() for p in shared))
    assert ref.norm(dim=1).min() > 0
    torch.testing.assert_close(losses, ref_losses, rtol=1e-6, atol=1e-7)
    scale = ref.abs().max(dim=1, keepdim=True).values
    torch.testing.assert_close(flat / scale, ref / scale, rtol=0, atol=1e-5)


def test_representation_is_refused_for_per_task_trunks() -> None:
    import torch

    from selective_sharing.core.training import Trainer
    from selective_sharing.datasets import load_dataset

    data = load_dataset("synthetic", seed=0)
    trainer = Trainer(make_config("synthetic", "stl", 0, overrides={"train.device": "cpu"}), data)
    trainer.sharing.close()
    x = torch.zeros(2, data.x_train.shape[1])
    idx = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="per-task copies"):
        trainer.model.forward_entries(x, idx, idx, representation=torch.zeros(2, 64))


def test_a_batch_without_labelled_entries_records_nothing() -> None:
    import torch

    from selective_sharing.core.baselines import AffinityRecorder
    from selective_sharing.core.training import Trainer
    from selective_sharing.datasets import load_dataset

    data = load_dataset("synthetic", seed=0)
    trainer = Trainer(make_config("synthetic", "mtl", 0, overrides={"train.device": "cpu"}), data,
                      assignment=np.arange(data.n_tasks))
    trainer.sharing.close()
    recorder = AffinityRecorder("tag", 1, data.n_tasks)
    x, none = torch.as_tensor(data.x_train[:4]), torch.zeros(0, dtype=torch.long)
    recorder(trainer, x, torch.zeros(0), none, none)
    assert recorder.recorded_steps == 0 and recorder.count.sum() == 0
    assert trainer.counters["backward_passes"] == 0


@pytest.mark.parametrize("method", ["tag", "cosine_groups"])
def test_recording_leaves_batchnorm_statistics_as_they_were(method) -> None:
    """A recording step's extra forward passes (and tag's lookaheads on shifted trunks) run in
    train mode; the trunk's BatchNorm running statistics and count must come out unchanged
    (before the fix they did not), and so must every parameter."""
    import torch
    from torch import nn

    from selective_sharing.core import BranchedModel
    from selective_sharing.core.baselines import AffinityRecorder
    from selective_sharing.core.training import Trainer
    from selective_sharing.datasets import load_dataset

    data = load_dataset("synthetic", seed=0)
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(data.x_train.shape[1], 32), nn.BatchNorm1d(32), nn.ReLU())
    model = BranchedModel(trunk, nn.Sequential(nn.Linear(32, 16), nn.ReLU()), heads=data.tasks)
    trainer = Trainer(make_config("synthetic", "mtl", 0, overrides={"train.device": "cpu"}), data,
                      assignment=np.arange(data.n_tasks), model=model)
    trainer.sharing.close()
    for _ in range(2):  # running statistics away from their initial values
        trainer._step()
    trainer.step = 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, m = trainer._next_batch()
    b_idx, t_idx = m.nonzero(as_tuple=True)
    recorder = AffinityRecorder(method, 1, data.n_tasks)
    recorder(trainer, x, y[b_idx, t_idx], b_idx, t_idx)
    assert recorder.recorded_steps == 1
    after = model.state_dict()
    assert not torch.equal(before["trunk.1.running_mean"], torch.zeros(32))
    for name, value in before.items():
        assert torch.equal(after[name], value), name


@pytest.mark.parametrize("case", ["synthetic", "computer", "binary", "multiclass", "shapes",
                                  "blocks", "batchnorm"])
def test_lookaheads_in_blocks_equal_one_forward_per_lookahead(case, monkeypatch) -> None:
    """``tag``'s lookaheads, their shifted trunks' outputs stacked through one estimator pass,
    give the affinities of one forward pass per lookahead (to rounding): sparse and dense
    paths, regression, rank with its pairwise term, binary, multiclass, a convolutional trunk,
    blocks smaller than the task count; an estimator with BatchNorm (whose batch statistics
    would mix the lookaheads) keeps one pass per lookahead, bit for bit."""
    import torch
    from torch import nn

    from selective_sharing.core import BranchedModel, baselines

    def with_batchnorm(data):
        torch.manual_seed(0)
        return BranchedModel(nn.Sequential(nn.Linear(data.x_train.shape[1], 32), nn.ReLU()),
                             nn.Sequential(nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU()),
                             heads=data.tasks)

    trainer, x, y, b_idx, t_idx = _recording_case(
        case, model=with_batchnorm if case == "batchnorm" else None)
    data = trainer.data
    chunk = baselines.lookahead_chunk(trainer.model, x, b_idx, t_idx)
    if case == "blocks":  # blocks of 4 lookaheads: 30 tasks end in a block of 2
        monkeypatch.setattr(baselines, "LOOKAHEAD_ELEMENTS",
                            4 * baselines.lookahead_elements(trainer.model, x, b_idx, t_idx))
        chunk = baselines.lookahead_chunk(trainer.model, x, b_idx, t_idx)
        assert chunk == 4
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    recorded = []
    for batched in (True, False):
        recorder = baselines.AffinityRecorder("tag", 1, data.n_tasks)
        recorder.batched = batched
        recorder(trainer, x, y, b_idx, t_idx)
        recorded.append(recorder)
    blocks, loop = recorded
    for name, value in trainer.model.state_dict().items():  # every trunk shift was put back
        assert torch.equal(value, before[name]), name
    assert (chunk == 0) == (case == "batchnorm")
    assert np.array_equal(blocks.count, loop.count) and loop.count.sum() > 0
    # Z = 1 - L_after / L_before: a loss ratio near 1 rounded in float32 (ulp 1.2e-7), so the
    # two computations may differ by a few 1e-7 whatever Z's size; Z must stand above that
    assert np.abs(loop.total).max() > 1e-5
    if chunk == 0:
        assert np.array_equal(blocks.total, loop.total)
    else:
        np.testing.assert_allclose(blocks.total, loop.total, rtol=0, atol=1e-6)
