"""The activation snapshot: the shared representation, each estimator's output and (for images)
input-gradient saliency on a fixed probe set of test samples, written at the end of a run for
the activation-region study (Figure 6, :mod:`~selective_sharing.analysis.figure6`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import store


def test_inputs(data: Any, index: np.ndarray) -> np.ndarray:
    """Inputs of test samples ``index``: rows of ``x_test``, or items read from a streamed split."""
    if getattr(data, "streamed", False):
        return data.inputs("test", index)
    return data.x_test[index]


def probe_index(data: Any, size: int) -> np.ndarray:
    """The fixed probe set: ``extras["probe_index"]`` if the dataset gives one, else test
    samples taken round-robin over each sample's first labelled task, so that "one dataset per
    task" data (each sample labelled for one task) gets probes of every task, and multi-output
    data gets simply the first ``size`` test samples."""
    if "probe_index" in data.extras:
        return np.asarray(data.extras["probe_index"], dtype=np.int64)
    first = np.argmax(data.m_test, axis=1)
    rank = np.zeros_like(first)
    for t in np.unique(first):
        sel = np.flatnonzero(first == t)
        rank[sel] = np.arange(sel.size)
    order = np.lexsort((np.arange(first.size), first, rank))
    return np.sort(order[:size]).astype(np.int64)


def saliency(model: Any, x: torch.Tensor, n_tasks: int) -> np.ndarray:
    """Input-gradient saliency |d output_t / d x|, max over channels: (task, probe, H, W)."""
    maps = []
    for t in range(n_tasks):
        xi = x.clone().requires_grad_(True)
        b_idx = torch.arange(x.shape[0], device=x.device)
        out = model.forward_entries(xi, b_idx, torch.full_like(b_idx, t))
        (grad,) = torch.autograd.grad(out.max(dim=1).values.sum(), xi)
        maps.append(grad.abs().amax(dim=1))
    return torch.stack(maps).cpu().numpy().astype(np.float32)


def write_activations(trainer: Any, name: str) -> None:
    """Snapshot of the shared representation (and estimator outputs, saliency) on the probes."""
    data, model = trainer.data, trainer.model
    idx = probe_index(data, trainer.cfg.probe_size)
    x = torch.as_tensor(test_inputs(data, idx)).to(trainer.device)
    with torch.no_grad():
        rep = model.representation(x)
        est = model.entity_outputs(x)
    image = data.input_kind == "image"
    obj = data.extras.get("object_masks_test")
    ds = store.encode_activations(
        name=name, step=trainer.step, task_names=data.task_names, probe_index=idx,
        representation=rep.reshape(rep.shape[0], -1).cpu().numpy().astype(np.float32),
        labels=data.y_test[idx].astype(np.float32), label_mask=data.m_test[idx].astype(bool),
        assignment=trainer.assignment, estimator_output=est.cpu().numpy().astype(np.float32),
        saliency=saliency(model, x, trainer.n_tasks) if image else None,
        region_masks=data.extras.get("region_masks") if image else None,
        task_region=data.extras.get("task_region") if image else None,
        object_masks=None if obj is None or not image else np.asarray(obj)[idx].astype(bool),
        method=trainer.cfg.method)
    store.write_activations(trainer.paths.run_dir, ds)
