"""Selective Sharing core: models, training, gradient capture, grouping, merging, run stores.

The component for your own model and loop (README, "Your own model, in your own loop")::

    from selective_sharing.core import BranchedModel, SharingScheduler, task_losses

Importing this package does not import torch: ``train``, the component and the torch modules
load on first use, so analysis/ can import the pure ``core.grouping`` and ``core.store``
without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import ConfigError, RunConfig, config_from_dict, make_config

# name -> submodule that defines it; imported on first access (these need torch).
_LAZY = {
    "train": "training",
    "BranchedModel": "branched",
    "SharingScheduler": "scheduler",
    "task_losses": "losses",
    "load_model": "inference",
    "predict": "inference",
    "resolve_device": "devices",
    "DeviceError": "devices",
    "StepBatchSampler": "data",
    "resnet18_trunk": "backbones",
}

__all__ = ["ConfigError", "RunConfig", "config_from_dict", "make_config", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
