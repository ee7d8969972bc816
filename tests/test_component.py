"""The component for your own model and loop: BranchedModel, SharingScheduler, task_losses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from selective_sharing.core import BranchedModel, SharingScheduler, task_losses
from selective_sharing.core.estimators import apply_map
from selective_sharing.core.merge import merge_estimators
from selective_sharing.datasets.base import TaskSpec
from torch import nn

D = 7


def _conv_template() -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, D)), nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(3 * D, 5))


TEMPLATES = {
    "mlp": lambda: nn.Sequential(nn.Linear(D, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU()),
    "tanh": lambda: nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh()),
    "layernorm": lambda: nn.Sequential(nn.Linear(D, 6), nn.LayerNorm(6), nn.GELU(),
                                       nn.Linear(6, 5)),
    "batchnorm": lambda: nn.Sequential(nn.Linear(D, 6), nn.BatchNorm1d(6), nn.ReLU(),
                                       nn.Linear(6, 5)),
    "conv": _conv_template,
}


def _model(name: str, n_tasks: int = 4, init: str = "independent", fast: bool | None = None,
           **kw) -> BranchedModel:
    torch.manual_seed(0)
    model = BranchedModel(nn.Identity(), TEMPLATES[name](), [1] * n_tasks, branch_init=init,
                          seed=3, hidden_dim=5, **kw)
    if fast is not None:
        model.estimators.fast = fast
    return model


def _clones_of(model: BranchedModel) -> list[nn.Module]:
    """Per-task ``copy.deepcopy`` clones of the template carrying each entity's weights."""
    out = []
    params, buffers = model.estimators.params(), model.estimators.buffers_()
    for e in range(model.n_entities):
        m = copy.deepcopy(model.estimators._template[0]).to_empty(device="cpu")
        m.load_state_dict({**{k: v[e].detach().clone() for k, v in params.items()},
                           **{k: v[e].clone() for k, v in buffers.items()}})
        m.train(model.training)
        out.append(m)
    return out


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_stacked_estimators_equal_deepcopy_clones_run_one_by_one(name) -> None:
    model = _model(name)
    clones = _clones_of(model)
    h = torch.randn(9, D)
    stacked = model.estimators(h)  # (B, E, H)
    one_by_one = torch.stack([c(h) for c in clones], dim=1)
    torch.testing.assert_close(stacked, one_by_one, rtol=1e-6, atol=1e-6)
    w = torch.randn_like(stacked)
    (stacked * w).sum().backward()
    (one_by_one * w).sum().backward()
    for k, p in model.estimators.params().items():
        ref = torch.stack([dict(c.named_parameters())[k].grad for c in clones])
        torch.testing.assert_close(p.grad, ref, rtol=1e-5, atol=1e-6, msg=f"gradient of {k}")


def test_batchnorm_running_statistics_update_per_estimator() -> None:
    model = _model("batchnorm", n_tasks=3)
    clones = _clones_of(model)
    h = torch.randn(16, D)
    model.estimators(h)
    for c in clones:
        c(h)
    mean = model.estimators.buffers_()["1.running_mean"]
    ref = torch.stack([c[1].running_mean for c in clones])
    torch.testing.assert_close(mean, ref)
    assert not torch.allclose(mean[0], mean[1])  # independent estimators: own statistics
    assert model.estimators.buffers_()["1.num_batches_tracked"].tolist() == [1, 1, 1]


def test_einsum_fast_path_equals_vmap_path_outputs_and_gradients() -> None:
    fast, generic = _model("mlp", fast=True), _model("mlp", fast=False)
    assert _model("mlp").estimators.fast and not _model("tanh").estimators.fast
    h = torch.randn(11, D)
    a, b = fast.estimators(h), generic.estimators(h)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    a.pow(2).sum().backward()
    b.pow(2).sum().backward()
    for (k, p), q in zip(fast.estimators.params().items(), generic.estimators.params().values()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize("name", ["mlp", "layernorm", "conv"])
def test_sparse_per_entity_path_equals_dense(name, monkeypatch) -> None:
    from selective_sharing.core import branched

    model = _model(name, n_tasks=5)
    x = torch.randn(10, D)
    b_idx, t_idx = torch.arange(10), torch.arange(10) % 5
    monkeypatch.setattr(branched, "DENSE_MIN_FILL", 0.0)
    dense = model.forward_entries(x, b_idx, t_idx)
    monkeypatch.setattr(branched, "DENSE_MIN_FILL", 2.0)
    sparse = model.forward_entries(x, b_idx, t_idx)
    torch.testing.assert_close(dense, sparse, rtol=1e-5, atol=1e-6)
    full = model(x)
    torch.testing.assert_close(full[b_idx, t_idx], dense, rtol=1e-5, atol=1e-6)


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
}
PER_PARAM_STATE = {"adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq"),
                   "sgd_momentum": ("momentum_buffer",)}


def _loss(model: BranchedModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return task_losses(model(x), y, torch.ones_like(y, dtype=torch.bool), model.tasks).sum()


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("mode", ["average", "first", "best"])
def test_merging_identical_estimators_keeps_predictions_under_every_optimizer(opt_name,
                                                                             mode) -> None:
    model = _model("layernorm", n_tasks=6, init="identical")
    opt = OPTIMIZERS[opt_name](model.parameters())
    x, y = torch.randn(12, D), torch.randn(12, 1).expand(12, 6).contiguous()
    for _ in range(3):  # same targets: the estimators get equal gradients and stay identical
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
    before = model(x).detach()
    parent = np.array([0, 1, 0, 2, 1, 2])
    merge_estimators(model, opt, parent, parent, mode, scores=np.arange(6.0))
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-5, atol=1e-6)
    assert model.n_entities == 3


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_merge_maps_optimizer_state_and_training_continues(opt_name) -> None:
    model = _model("tanh", n_tasks=4)
    opt = OPTIMIZERS[opt_name](model.parameters())
    x, y = torch.randn(12, D), torch.randn(12, 4)
    loss = _loss(model, x, y)  # kept alive across the merge, as in a user's loop
    loss.backward()
    opt.step()
    w = model.estimators.param("0.weight")
    state_before = {k: opt.state[w][k].clone() for k in PER_PARAM_STATE[opt_name]}
    total_before, est_before = model.count_parameters()
    merge_estimators(model, opt, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), "average")
    w_new = model.estimators.param("0.weight")
    assert w_new.shape[0] == 2
    assert any(p is w_new for g in opt.param_groups for p in g["params"])
    assert not any(p is w for g in opt.param_groups for p in g["params"])
    for k, v in state_before.items():
        torch.testing.assert_close(opt.state[w_new][k], torch.stack([v[:2].mean(0),
                                                                     v[2:].mean(0)]))
    total_after, est_after = model.count_parameters()
    assert est_after * 2 == est_before and total_before - total_after == est_before - est_after
    for p in model.parameters():  # every state tensor matches its parameter's shape
        for v in opt.state.get(p, {}).values():
            if torch.is_tensor(v) and v.dim() > 0:
                assert v.shape == p.shape
    _loss(model, x, y).backward()
    opt.step()
    assert torch.isfinite(model(x)).all()


def test_scheduler_counts_gradient_accumulation_as_one_step(tmp_path) -> None:
    """Two half-batch backward passes per optimizer step capture exactly the full-batch sum."""
    def run(micro: int) -> np.ndarray:
        model = _model("tanh", n_tasks=4, init="identical")
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        sharing = SharingScheduler(model, opt, {"warmup_steps": 5, "min_silhouette": 1.0})
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(16, D, generator=gen), torch.randn(16, 4, generator=gen)
        captured = []
        for _ in range(5):
            for part in torch.chunk(torch.arange(16), micro):
                (_loss(model, x[part], y[part]) * len(part) / 16).backward()
            captured.append(sharing.window.acc.clone() + sharing.window.summed)
            opt.step()
            opt.zero_grad()
            sharing.step()
        assert sharing.step_count == 5 and sharing.n_events == 1
        return torch.stack(captured).numpy()

    np.testing.assert_allclose(run(2), run(1), rtol=1e-5, atol=1e-7)


def test_scheduler_state_dict_resumes_exactly() -> None:
    def fresh():
        model = _model("tanh", n_tasks=6, init="identical")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        cfg = {"warmup_steps": 4, "regroup_every": 4, "max_events": 3, "patience": 1}
        return model, opt, SharingScheduler(model, opt, cfg)

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, D, generator=gen)
    y = torch.cat([x[:, :1].expand(20, 3), -x[:, 1:2].expand(20, 3)], 1).contiguous()

    def steps(model, opt, sharing, n):
        out = []
        for _ in range(n):
            _loss(model, x, y).backward()
            opt.step()
            opt.zero_grad()
            r = sharing.step()
            if r is not None:
                out.append(r.assignment_after.tolist())
        return out

    model, opt, sharing = fresh()
    reference = steps(model, opt, sharing, 12)
    ref_out = model(x).detach()
    model, opt, sharing = fresh()
    first = steps(model, opt, sharing, 6)
    saved = copy.deepcopy({"m": model.state_dict(), "o": opt.state_dict(),
                           "s": sharing.state_dict()})
    model, opt, sharing = fresh()
    model.load_state_dict(saved["m"])
    opt.load_state_dict(saved["o"])
    sharing.load_state_dict(saved["s"])
    assert first + steps(model, opt, sharing, 6) == reference
    assert len(reference) == 3
    torch.testing.assert_close(model(x).detach(), ref_out, rtol=0, atol=0)


def test_an_event_that_merges_nothing_keeps_the_parameters_and_one_that_merges_replaces_them(
) -> None:
    """Issue 16: a DistributedDataParallel wrapper is rebuilt only where an event replaced the
    parameters it holds; an event that merged nothing must leave them (and the optimizer state
    and capture hooks on them) as they are."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, D, generator=gen)
    y = torch.cat([x[:, :1].expand(20, 3), -x[:, 1:2].expand(20, 3)], 1).contiguous()

    def run(max_group_size: int | None) -> tuple[SharingScheduler, list, list, list]:
        model = _model("tanh", n_tasks=6, init="identical")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sharing = SharingScheduler(model, opt, {"warmup_steps": 4, "regroup_every": 4,
                                                "max_events": 2, "patience": 1,
                                                "max_group_size": max_group_size})
        before = list(model.estimators.stacked.values())
        flags, same, states = [], [], []
        for _ in range(8):
            _loss(model, x, y).backward()
            opt.step()
            opt.zero_grad()
            if sharing.step() is not None:
                flags.append(sharing.parameters_replaced)
                after = list(model.estimators.stacked.values())
                same.append(all(a is b for a, b in zip(after, before, strict=True)))
                states.append(all(p in opt.state for p in after))
                before = after
        return sharing, flags, same, states

    kept, flags, same, states = run(max_group_size=1)  # nothing can merge
    assert kept.n_events == 2 and kept.assignment.tolist() == list(range(6))
    assert flags == [False, False] and same == [True, True] and states == [True, True]
    merged, flags, same, states = run(max_group_size=None)  # two planted groups merge
    assert merged.assignment.tolist() == [0, 0, 0, 1, 1, 1] and merged.n_events == 2
    assert flags == [True, False]  # the first event merged, the second had nothing left to
    assert same == [False, True]  # the flag says exactly when the parameter objects changed
    assert states == [True, True]  # the optimizer holds the current ones, with their state


def test_scheduler_run_store_resumes_from_a_user_checkpoint(tmp_path) -> None:
    """A user loop checkpointing itself (model, optimizer, scheduler state) and continuing in a
    new scheduler with resume=True writes the same events as an uninterrupted loop; a run
    directory that holds events is refused without resume."""
    from selective_sharing.analysis import replay
    from selective_sharing.core import store

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(24, D, generator=gen)
    y = torch.cat([x[:, :1].expand(24, 3), -x[:, 1:2].expand(24, 3)], 1).contiguous()
    cfg = {"warmup_steps": 4, "regroup_every": 4, "max_events": 3, "patience": 1}

    def fresh(run, resume=False):
        model = _model("tanh", n_tasks=6, init="identical")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        return model, opt, SharingScheduler(model, opt, cfg, run, resume=resume)

    def steps(model, opt, sharing, n):
        for _ in range(n):
            _loss(model, x, y).backward()
            opt.step()
            opt.zero_grad()
            sharing.step()

    model, opt, sharing = fresh(tmp_path / "a")
    with sharing:
        steps(model, opt, sharing, 12)
    model, opt, sharing = fresh(tmp_path / "b")
    with sharing:
        steps(model, opt, sharing, 6)
        saved = copy.deepcopy({"m": model.state_dict(), "o": opt.state_dict(),
                               "s": sharing.state_dict()})
    with pytest.raises(FileExistsError, match=r"already holds a run .*resume=True"):
        fresh(tmp_path / "b")
    model, opt, sharing = fresh(tmp_path / "b", resume=True)
    model.load_state_dict(saved["m"])
    opt.load_state_dict(saved["o"])
    sharing.load_state_dict(saved["s"])
    with sharing:
        steps(model, opt, sharing, 6)
    a, b = store.list_events(tmp_path / "a"), store.list_events(tmp_path / "b")
    assert len(a) == 3 and [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert store.read_event(pa).identical(store.read_event(pb))
    assert store.read_manifest(tmp_path / "b")["status"] == "complete"
    assert replay(tmp_path / "b").matched


def test_scheduler_state_needs_the_model_state_first() -> None:
    model, _ = _model("mlp", n_tasks=4), None
    opt = torch.optim.Adam(model.parameters())
    sharing = SharingScheduler(model, opt)
    state = sharing.state_dict()
    state["assignment"] = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="2 estimators but the model has 4.*model.load_state_dict"):
        sharing.load_state_dict(state)


def test_task_losses_masks_entries_and_checks_shapes() -> None:
    tasks = [TaskSpec("r", "regression"), TaskSpec("b", "binary"), TaskSpec("c", "multiclass", 3)]
    out = torch.zeros(4, 3, 3)
    y = torch.tensor([[1.0, 1.0, 2.0], [3.0, 0.0, 0.0], [5.0, 1.0, 1.0], [9.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=torch.bool)
    losses = task_losses(out, y, mask, tasks)
    torch.testing.assert_close(losses, torch.tensor([(1 + 9) / 2, np.log(2.0),
                                                     np.log(3.0)], dtype=torch.float32))
    with pytest.raises(ValueError, match=r"outputs \(B, T, O\).*\(4, 3, 3\), \(4, 2\)"):
        task_losses(out, y[:, :2], mask[:, :2], tasks)


def test_bad_heads_and_branch_init_are_named() -> None:
    with pytest.raises(ValueError, match=r"heads\[1\]=0"):
        BranchedModel(nn.Identity(), TEMPLATES["mlp"](), [1, 0])
    with pytest.raises(ValueError, match="branch_init='same'"):
        BranchedModel(nn.Identity(), TEMPLATES["mlp"](), [1, 1], branch_init="same")
    with pytest.raises(KeyError, match="no parameter 'nope'"):
        BranchedModel(nn.Identity(), TEMPLATES["mlp"](), [1, 1], signal="nope")


def test_apply_merge_keeps_an_ema_copy_in_step_with_the_model() -> None:
    """A user's EMA (torch.optim.swa_utils.AveragedModel) goes through the same merge map as
    the model, keeps averaging weights of the merged shapes, and is left alone by steps that
    merged nothing; a wrong copy or a second application is refused with the fix named."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, D, generator=gen)
    y = torch.cat([x[:, :1].expand(20, 3), -x[:, 1:2].expand(20, 3)], 1).contiguous()
    model = _model("tanh", n_tasks=6, init="identical")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    ema_opt = torch.optim.SGD(ema.parameters(), lr=0.1, momentum=0.9)  # any per-param state
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sharing = SharingScheduler(model, opt, {"warmup_steps": 4, "regroup_every": 4,
                                            "max_events": 2, "patience": 1})
    applied = []
    for _ in range(8):
        _loss(model, x, y).backward()
        opt.step()
        opt.zero_grad()
        sharing.step()
        (ema(x) ** 2).sum().backward()  # give the EMA copy's optimizer some state to map
        ema_opt.step()
        ema_opt.zero_grad()
        momentum = {k: ema_opt.state[p]["momentum_buffer"].clone()
                    for k, p in ema.module.estimators.stacked.items()}
        kept = {k: v.detach().clone() for k, v in ema.module.estimators.stacked.items()}
        merged = sharing.apply_merge(ema, ema_opt)
        applied.append(merged)
        after = ema.module.estimators.stacked
        if merged:
            m, _ = sharing._merge
            assert m.shape == (2, 6)
            for k, p in after.items():  # the EMA's weights and momentum went through M
                torch.testing.assert_close(p.detach(), apply_map(m, kept[k]))
                torch.testing.assert_close(ema_opt.state[p]["momentum_buffer"],
                                           apply_map(m, momentum[k]))
            with pytest.raises(ValueError, match="not twice for one step"):
                sharing.apply_merge(ema)
        else:
            assert all(torch.equal(p.detach(), kept[k]) for k, p in after.items())
        ema.update_parameters(model)  # shapes agree after every step
        assert ema.module.n_entities == model.n_entities
        assert torch.equal(ema.module.assignment, model.assignment)
    assert sum(applied) == 1 and applied.index(True) == 3  # the event at step 4 merged
    assert model.assignment.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(TypeError, match="needs a BranchedModel"):
        sharing.apply_merge(nn.Linear(2, 2))


def test_last_result_gets_the_complete_record_however_fast_the_writer_is(tmp_path) -> None:
    """The writer completes an event's k-means record and puts it in ``last_result`` when that
    is still the event's result. A writer that ran the job before ``step()`` had set
    ``last_result`` (here: at once, in the submitting thread) left the incomplete one there."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, D, generator=gen)
    y = torch.cat([x[:, :1].expand(20, 3), -x[:, 1:2].expand(20, 3)], 1).contiguous()
    for run_dir in (None, tmp_path / "run"):
        model = _model("tanh", n_tasks=6, init="identical")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        with SharingScheduler(model, opt, {"warmup_steps": 4, "regroup_every": 4,
                                           "max_events": 1}, run_dir) as sharing:
            sharing.writer.submit = lambda fn, *a, **k: fn(*a, **k)  # the fastest writer
            for _ in range(4):
                _loss(model, x, y).backward()
                opt.step()
                opt.zero_grad()
                returned = sharing.step()
            assert returned is not None and returned.membership is None  # completed later
            sharing.flush()
            assert sharing.last_result is not returned
            assert sharing.last_result.membership is not None
            assert sharing.last_result.kmeans_k >= 1
