"""Devices and mixed precision for training (``train.device``, ``train.amp``).

``resolve_device`` turns ``auto|cpu|cuda|cuda:N|mps`` into a ``torch.device`` and fails, before
anything is trained or written, when the device is absent, naming it and what torch reports.
``Precision`` holds the autocast dtype and, for fp16, the ``torch.amp.GradScaler`` of a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .config import AMP_MODES, DEVICE_PATTERN

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(RuntimeError):
    """A requested device is absent or unusable; the message names it and what torch reports."""


def _cuda_report() -> str:
    built = torch.version.cuda
    if built is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return (f"torch {torch.__version__} (built with CUDA {built}) sees "
            f"{torch.cuda.device_count()} CUDA device(s); torch.cuda.is_available() is "
            f"{torch.cuda.is_available()}")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` of ``spec``: ``auto`` (CUDA when available, else the CPU), ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``.

    Raises
    ------
    DeviceError
        The device is absent (no CUDA, index out of range, no MPS): the message names the
        device, what torch reports, and the fix (``--device cpu`` or ``auto``).
    ValueError
        ``spec`` is not a device name.
    """
    text = str(spec)
    if not DEVICE_PATTERN.match(text):
        raise ValueError(f"invalid device={text!r}: one of auto, cpu, cuda, cuda:N, mps")
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(text)
    fix = "Run with --device cpu (train.device=cpu), or --device auto to use what is present"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {text!r} requested but no CUDA device is usable: "
                              f"{_cuda_report()}. {fix}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {text!r} requested but {_cuda_report()} (indices 0.."
                              f"{torch.cuda.device_count() - 1}). {fix}")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            built = mps is not None and mps.is_built()
            raise DeviceError(f"device 'mps' requested but MPS is not available (torch "
                              f"{torch.__version__}, MPS built: {built}). {fix}")
    return device


class Precision:
    """A run's autocast setting: ``none`` (fp32), ``bf16`` or ``fp16`` (with a GradScaler).

    Parameters
    ----------
    mode : {"none", "bf16", "fp16"}
    device : torch.device
        The training device: autocast's ``device_type``.

    ``autocast()`` wraps the forward pass and the loss; ``backward(loss)`` scales the loss for
    fp16; ``step(optimizer)`` unscales, skips steps with non-finite gradients (fp16) and
    updates the scale. The scheduler reads ``scaler`` to divide the scale out of captured
    gradients and to drop the capture of skipped steps.
    """

    def __init__(self, mode: str, device: torch.device):
        if mode not in AMP_MODES:
            raise ValueError(f"invalid amp={mode!r}: amp must be one of {list(AMP_MODES)}")
        self.mode, self.device = mode, device
        self.dtype = _AMP_DTYPES.get(mode)
        self.scaler: Any = None
        if mode == "fp16":
            self.scaler = torch.amp.GradScaler(device.type)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def device_rng_state(device: torch.device) -> Any:
    """The device's own RNG state (CUDA), or None: saved with checkpoints so randomness on the
    device (a template's Dropout) continues exactly after a resume."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return None


def set_device_rng_state(device: torch.device, state: Any) -> None:
    if state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state, device)


__all__ = ["AMP_MODES", "DeviceError", "Precision", "resolve_device"]
