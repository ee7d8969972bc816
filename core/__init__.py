"""Selective Sharing core: models, training, gradient capture, grouping, merging, run stores.

Importing this package does not import torch: ``train`` and the torch modules load on first
use, so analysis/ can import the pure ``core.grouping`` and ``core.store`` without torch.
"""

from __future__ import annotations

from typing import Any

from .config import ConfigError, RunConfig, config_from_dict, make_config

__all__ = ["ConfigError", "RunConfig", "config_from_dict", "make_config", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from .train import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
