"""``python -m selective_sharing.core.train``: the ``train`` command (same as ``selective-sharing
train``; ``torchrun ... -m selective_sharing.core.train`` for several processes).

From Python, call the function :func:`selective_sharing.core.train` (implemented in
:mod:`selective_sharing.core.training`). This module is the command's entry point; importing it
still works and forwards calls to that function, for code written against earlier versions.
"""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path
from typing import Any

from .training import Trainer, TrainingError, main, train

__all__ = ["Trainer", "TrainingError", "main", "train"]


class _CallableModule(types.ModuleType):
    """``import selective_sharing.core.train`` sets the package attribute ``train`` to this module;
    calling it still calls :func:`~selective_sharing.core.training.train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
sys.modules[__name__].__signature__ = inspect.signature(train)  # type: ignore[attr-defined]

if __name__ == "__main__":
    main()
