"""Model, losses and merging: properties checked against direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from selective_sharing.core import branched as model_mod
from selective_sharing.core.config import ModelConfig
from selective_sharing.core.losses import TYPE_CODES, entry_losses, pairwise_rank_loss
from selective_sharing.core.merge import merge_estimators, merge_matrix
from selective_sharing.core.model import build_model

VEC = ModelConfig(trunk_hidden=(16,), representation_dim=8, estimator_hidden=(6, 5))
IMG = ModelConfig(conv_channels=(4, 6), representation_dim=8, estimator_hidden=(6, 5))


def _net(cfg=VEC, shape=(7,), n_tasks=5, copies=1, init="identical", assignment=None):
    cfg = ModelConfig(**{**cfg.__dict__, "branch_init": init})
    assignment = list(range(n_tasks)) if assignment is None else assignment
    return build_model(shape, [1] * n_tasks, cfg, assignment, copies, seed=3)


def test_identical_init_clones_every_branch_and_independent_does_not() -> None:
    same, indep = _net(), _net(init="independent")
    for w in [*same.estimator_params(), same.head_weight, same.head_bias]:
        assert torch.equal(w, w[:1].expand_as(w))
    w = indep.estimators.param("0.weight")
    assert not torch.equal(w[0], w[1])


@pytest.mark.parametrize("cfg,shape,copies", [(VEC, (7,), 1), (VEC, (7,), 5),
                                              (IMG, (1, 8, 12), 1), (IMG, (1, 8, 12), 5)])
def test_sparse_and_dense_paths_agree(cfg, shape, copies, monkeypatch) -> None:
    net = _net(cfg, shape, copies=copies, init="independent")
    x = torch.randn(10, *shape)
    b_idx = torch.arange(10)
    t_idx = torch.arange(10) % 5  # one task per sample: "one dataset per task" data
    monkeypatch.setattr(model_mod, "DENSE_MIN_FILL", 0.0)
    dense = net.forward_entries(x, b_idx, t_idx)
    monkeypatch.setattr(model_mod, "DENSE_MIN_FILL", 2.0)
    sparse = net.forward_entries(x, b_idx, t_idx)
    torch.testing.assert_close(dense, sparse, rtol=1e-5, atol=1e-6)


def test_merging_identical_estimators_leaves_every_prediction_unchanged() -> None:
    net = _net(n_tasks=6)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(9, 7)
    b_idx, t_idx = torch.meshgrid(torch.arange(9), torch.arange(6), indexing="ij")
    before = net.forward_entries(x, b_idx.flatten(), t_idx.flatten())
    parent = np.array([0, 1, 0, 2, 1, 2])
    for mode in ("average", "first", "best"):
        n = _net(n_tasks=6)
        o = torch.optim.Adam(n.parameters(), lr=1e-3)
        merge_estimators(n, o, parent, parent, mode, scores=np.arange(6.0))
        after = n.forward_entries(x, b_idx.flatten(), t_idx.flatten())
        torch.testing.assert_close(before, after)
        assert n.n_entities == 3
    assert opt is not None


def test_merge_counts_parameters_and_rebuilds_optimizer_state() -> None:
    net = _net(n_tasks=4, init="independent")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(8, 7)
    b, t = torch.arange(8), torch.arange(8) % 4
    net.forward_entries(x, b, t).sum().backward()
    opt.step()
    w_before = net.estimators.param("0.weight").detach().clone()
    m_before = opt.state[net.estimators.param("0.weight")]["exp_avg"].clone()
    total_before, est_before = net.count_parameters()
    merge_estimators(net, opt, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), "average")
    total_after, est_after = net.count_parameters()
    assert est_after * 2 == est_before
    assert total_before - total_after == est_before - est_after
    torch.testing.assert_close(net.estimators.param("0.weight")[0], w_before[:2].mean(0))
    torch.testing.assert_close(opt.state[net.estimators.param("0.weight")]["exp_avg"][1],
                               m_before[2:].mean(0))
    net.zero_grad()
    net.forward_entries(x, b, t).sum().backward()
    opt.step()  # the rebuilt state has the parameter's new shape
    assert net.estimators.param("0.weight").shape[0] == 2


def test_merge_matrix_modes() -> None:
    parent = np.array([0, 1, 0, 1])
    np.testing.assert_allclose(merge_matrix(parent, "average").numpy(),
                               [[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]])
    np.testing.assert_allclose(merge_matrix(parent, "first").numpy(), [[1, 0, 0, 0], [0, 1, 0, 0]])
    best = merge_matrix(parent, "best", np.array([3.0, np.nan, 1.0, 0.5])).numpy()
    np.testing.assert_allclose(best, [[0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="merge must be one of"):
        merge_matrix(parent, "mean")


def test_masked_losses_match_direct_formulas() -> None:
    pred = torch.tensor([[0.5], [2.0], [0.3], [-1.0], [1.0]])
    y = torch.tensor([1.0, 1.0, 1.0, 0.0, 3.0])
    t_idx = torch.tensor([0, 0, 1, 1, 2])
    codes = torch.tensor([TYPE_CODES["regression"], TYPE_CODES["binary"],
                          TYPE_CODES["regression"], TYPE_CODES["regression"]])
    losses = entry_losses(pred, y, t_idx, codes, torch.ones(4, dtype=torch.long), 0.5)
    expected0 = ((0.5 - 1) ** 2 + (2 - 1) ** 2) / 2
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected1 = (bce(torch.tensor(0.3), torch.tensor(1.0)) + bce(torch.tensor(-1.0),
                                                                 torch.tensor(0.0))) / 2
    torch.testing.assert_close(losses, torch.tensor([expected0, expected1.item(), 4.0, 0.0]))


def test_pairwise_rank_loss_counts_only_ordered_pairs_within_a_task() -> None:
    score = torch.tensor([2.0, 1.0, 0.0, 5.0, 5.0])
    y = torch.tensor([3.0, 2.0, 1.0, 1.0, 1.0])
    t_idx = torch.tensor([0, 0, 0, 1, 1])
    out = pairwise_rank_loss(score, y, t_idx, 2)
    sp = torch.nn.functional.softplus
    exp0 = (sp(torch.tensor(-1.0)) * 2 + sp(torch.tensor(-2.0))) / 3
    torch.testing.assert_close(out, torch.stack([exp0, torch.tensor(0.0)]))


def test_multiclass_uses_only_the_tasks_classes() -> None:
    pred = torch.tensor([[0.0, 0.0, 100.0]])  # logit 2 is padding for a 2-class task
    losses = entry_losses(pred, torch.tensor([1.0]), torch.tensor([0]),
                          torch.tensor([TYPE_CODES["multiclass"]]), torch.tensor([2]), 0.5)
    torch.testing.assert_close(losses, torch.tensor([np.log(2.0)], dtype=torch.float32))


def test_probe_set_covers_every_task_of_one_dataset_per_task_data() -> None:
    from types import SimpleNamespace

    from selective_sharing.core.activations import probe_index

    m = np.zeros((12, 3), bool)
    m[:6, 0], m[6:9, 1], m[9:, 2] = True, True, True
    probes = probe_index(SimpleNamespace(extras={}, m_test=m), 6)
    np.testing.assert_array_equal(probes, [0, 1, 6, 7, 9, 10])
    dense = probe_index(SimpleNamespace(extras={}, m_test=np.ones((10, 4), bool)), 5)
    np.testing.assert_array_equal(dense, np.arange(5))
