"""Reload a finished run's trained, merged model and predict with it.

A built-in run is rebuilt from its manifest (config, input shape, tasks) and checkpoint. A run
of your own ``BranchedModel`` (``train(config, model=...)``) needs the model again: pass
``model=`` a freshly built instance (same trunk, template and heads) or a zero-argument factory;
its estimator stacks are resized to the run's merged count and the weights loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import store
from .branched import BranchedModel
from .checkpoint import CheckpointError, load_checkpoint
from .config import config_from_dict
from .methods import method_spec


def _built_in(manifest: dict, run_dir: Path) -> BranchedModel:
    from ..datasets.base import TaskSpec
    from .model import build_model

    if manifest.get("trained_by") == "SharingScheduler":
        raise ValueError(f"{run_dir} was written by a SharingScheduler in your own loop: rebuild "
                         "your model and load your own checkpoint into it")
    if manifest.get("user_model"):
        described = manifest["user_model"]
        raise ValueError(
            f"{run_dir} trained your own {described['class']} (trunk {described['trunk'][:80]!r}"
            "...): pass model=BranchedModel(...) built as for that run, or a function that "
            "builds it")
    if "input_shape" not in manifest:
        raise ValueError(f"{run_dir}'s manifest has no input_shape (written by an earlier "
                         "version): pass model=BranchedModel(...) built as for that run")
    config = config_from_dict(manifest["config"])
    tasks = [TaskSpec(name, kind, n if kind == "multiclass" else 1) for name, kind, n in
             zip(manifest["task_names"], manifest["task_types"], manifest["n_outputs"])]
    n = len(tasks)
    copies = method_spec(config.method).trunk_copies(n)
    # the checkpoint holds the trained weights: the trunk's initial weights file is not needed
    model_config = dataclasses.replace(config.model, trunk_weights=None)
    return build_model(manifest["input_shape"], tasks, model_config, np.arange(n), copies,
                       seed=config.seed)


def load_model(run_dir: str | Path,
               model: BranchedModel | Callable[[], BranchedModel] | None = None,
               *, map_location: str | torch.device = "cpu") -> BranchedModel:
    """The trained, merged model of a finished run, in eval mode.

    Parameters
    ----------
    run_dir : path
        A run directory written by ``train`` (status ``complete``).
    model : BranchedModel or callable, optional
        For a run of your own model: a fresh instance built as for training, or a factory.
        Built-in runs need none.
    map_location : device
        Where the weights go.

    Raises
    ------
    ValueError
        The run is not complete, or a user model is needed and not given.
    CheckpointError
        The checkpoint is missing or unreadable (named in the message).
    """
    run_dir = Path(run_dir)
    manifest = store.read_manifest(run_dir)
    if manifest.get("status") != "complete":
        raise ValueError(f"{run_dir} is not a finished run (status {manifest.get('status')!r}): "
                         "finish it (--resume) before loading its model")
    if model is None:
        model = _built_in(manifest, run_dir)
    elif not isinstance(model, torch.nn.Module):
        model = model()
    if not isinstance(model, BranchedModel):
        raise TypeError(f"invalid model={type(model).__name__}: load_model needs a BranchedModel")
    state = load_checkpoint(store.RunPaths(run_dir).checkpoint)
    if "model" not in state:
        raise CheckpointError(f"{run_dir}'s checkpoint holds no model state")
    model.load_state_dict(state["model"])
    return model.to(map_location).eval()


def predict(run_dir: str | Path | BranchedModel, x: Any, *, model: Any = None,
            batch_size: int = 1024) -> np.ndarray:
    """Per-task predictions of a finished run's model: (N, n_tasks, max outputs).

    Outputs are what the heads give: a regression or rank task's value (in the dataset's
    standardized units), a binary task's logit, a multiclass task's logits.

    Parameters
    ----------
    run_dir : path or BranchedModel
        A finished run (loaded with :func:`load_model`), or an already loaded model.
    x : array or tensor, (N, ...)
        Inputs shaped like the run's training inputs.
    model : optional
        As for :func:`load_model`.
    """
    from .evaluation import predict_all

    loaded = run_dir if isinstance(run_dir, BranchedModel) else load_model(run_dir, model)
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float32)
    return predict_all(loaded, x, batch_size)


__all__ = ["load_model", "predict"]
