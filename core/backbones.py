"""Optional image trunks from torchvision (the ``vision`` extra), for :class:`BranchedModel`.

A trunk maps ``(B, C, H, W)`` float32 images to a representation ``(B, D)``; ``out_features``
is D. Nothing is downloaded: a trunk starts from a random init or from a local state_dict file.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

_INSTALL = ("model.trunk='resnet18' needs torchvision: pip install 'selective-sharing[vision]' "
            "(or pip install torchvision matching your torch)")
_SAVE_HINT = ("save one with torch.save(torchvision.models.resnet18().state_dict(), path) or "
              "torch.save(trunk.state_dict(), path)")


def _torchvision() -> ModuleType:
    try:
        import torchvision
    except ImportError as e:
        raise ImportError(_INSTALL) from e
    except RuntimeError as e:  # installed, but built for another torch (e.g. CUDA wheel, CPU torch)
        raise ImportError(f"torchvision is installed but does not load with torch "
                          f"{torch.__version__} ({e}): install the torchvision build made for this "
                          "torch (a CPU-only torch needs the CPU torchvision)") from e
    return torchvision


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def _load_weights(trunk: nn.Module, weights: str | os.PathLike) -> None:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"resnet18 weights file {str(path)!r} does not exist: give the path "
                                f"of a local state_dict file ({_SAVE_HINT}); nothing is downloaded")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling raises many types
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"cannot read resnet18 weights file {str(path)!r} ({type(e).__name__}: "
                         f"{first}): it must hold a plain state_dict; {_SAVE_HINT}") from e
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"resnet18 weights file {str(path)!r} holds a {type(state).__name__}, not "
                         f"a state_dict of tensors (a checkpoint dict? save only its model's "
                         f"state_dict); {_SAVE_HINT}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = trunk.state_dict()
    bad = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"resnet18 weights file {str(path)!r} does not fit this trunk: shape "
                         f"mismatch (file != trunk) for {_first(bad)}; was it saved for another "
                         f"in_channels or another architecture?")
    result = trunk.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        what = [f"{name} keys: {_first(keys)}" for name, keys in
                (("missing", missing), ("unexpected", result.unexpected_keys)) if keys]
        raise ValueError(f"resnet18 weights file {str(path)!r} is not a resnet18 state_dict "
                         f"({'; '.join(what)}); {_SAVE_HINT}")


def resnet18_trunk(in_channels: int = 3, weights: str | os.PathLike | None = None) -> nn.Module:
    """A torchvision ResNet-18 without its classifier: ``(B, C, H, W)`` -> ``(B, 512)``.

    Parameters
    ----------
    in_channels : int
        Image channels C; other than 3, ``conv1`` is a fresh ``Conv2d(C, 64, 7, 2, 3)``.
    weights : str or os.PathLike, optional
        A local file holding a state_dict, saved with ``torch.save`` from
        ``torchvision.models.resnet18().state_dict()`` or from a trunk of this function (keys
        ``fc.*`` are ignored). None (default): random init. Nothing is ever downloaded.

    Returns
    -------
    nn.Module
        The trunk, with ``out_features = 512``. Any image size works (the adaptive average
        pool ends in 512 values); at 32x32 the last block is 1x1, so in train mode a batch
        needs two or more images (BatchNorm).

    Raises
    ------
    ImportError
        torchvision is not installed (or not built for the installed torch).
    FileNotFoundError
        ``weights`` names no file.
    ValueError
        ``in_channels`` is not a positive int, or ``weights`` cannot be read or does not fit
        (missing or unexpected keys, shape mismatches: up to 5 are named).
    """
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"invalid in_channels={in_channels!r}: a positive number of channels")
    torchvision = _torchvision()
    trunk = torchvision.models.resnet18(weights=None)
    trunk.fc = nn.Identity()
    if in_channels != 3:
        trunk.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
    if weights is not None:
        _load_weights(trunk, weights)
    trunk.out_features = 512
    return trunk


__all__ = ["resnet18_trunk"]
