"""Host copies of the training state for checkpoints: values, independence, reused memory."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from selective_sharing.core.checkpoint import SnapshotBuffers, snapshot


def _state(scale: float = 1.0, rows: int = 4) -> dict:
    w = torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3) * scale
    w.requires_grad_(True)
    return {
        "model": OrderedDict(w=w, b=torch.full((rows,), scale)),
        "opt": {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.ones(rows, 3) * scale}},
                "param_groups": [{"lr": 0.01, "params": [0]}]},
        "hist": {"loss": np.arange(5, dtype=np.float32) * scale},
        "pair": (torch.zeros(2), 3),
        "step": 11,
    }


def _equal(a: object, b: object) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a.detach(), b.detach())
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def test_a_taken_copy_equals_a_snapshot_and_does_not_follow_training() -> None:
    buffers, state = SnapshotBuffers(), _state()
    first = buffers.take(state)
    assert _equal(first, snapshot(state))
    assert not first["model"]["w"].requires_grad
    with torch.no_grad():
        state["model"]["w"].add_(100.0)
    state["hist"]["loss"] += 100.0
    assert _equal(first, snapshot(_state()))  # unchanged by the in-place updates


def test_a_given_back_copy_is_reused_and_holds_the_new_values() -> None:
    buffers = SnapshotBuffers()
    first = buffers.take(_state(1.0))
    pointers = (first["model"]["w"].data_ptr(), first["opt"]["state"][0]["exp_avg"].data_ptr())
    loss = first["hist"]["loss"]
    buffers.give_back(first)
    newer = _state(2.0)
    second = buffers.take(newer)
    assert _equal(second, snapshot(newer))
    assert (second["model"]["w"].data_ptr(), second["opt"]["state"][0]["exp_avg"].data_ptr()) \
        == pointers
    assert second["hist"]["loss"] is loss
    assert isinstance(second["model"], OrderedDict) and isinstance(second["pair"], tuple)


def test_a_copy_not_given_back_is_never_overwritten() -> None:
    buffers = SnapshotBuffers()
    first = buffers.take(_state(1.0))  # still being written: not given back
    second = buffers.take(_state(3.0))
    assert second["model"]["w"].data_ptr() != first["model"]["w"].data_ptr()
    assert _equal(first, snapshot(_state(1.0)))


def test_a_changed_shape_is_copied_fresh_and_the_rest_reused() -> None:
    buffers = SnapshotBuffers()
    first = buffers.take(_state(1.0, rows=4))
    hist_ptr = first["hist"]["loss"].ctypes.data
    buffers.give_back(first)
    merged = _state(2.0, rows=2)  # a merge shrinks the stacks
    second = buffers.take(merged)
    assert _equal(second, snapshot(merged))
    assert second["model"]["w"].shape == (2, 3)
    assert second["hist"]["loss"].ctypes.data == hist_ptr
    buffers.clear()
    assert _equal(buffers.take(merged), snapshot(merged))
