"""Devices, mixed precision and compilation for training (``train.device``, ``train.amp``,
``train.compile``).

``resolve_device`` turns ``auto|cpu|cuda|cuda:N|mps`` into a ``torch.device`` and fails, before
anything is trained or written, when the device is absent, naming it and what torch reports.
``Precision`` holds the autocast dtype and, for fp16, the ``torch.amp.GradScaler`` of a run.
``compile_trunk`` compiles a model's trunk in place with a ``torch.compile`` backend, after
checking that the backend exists here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

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


def _cxx_compiler() -> str | None:
    """The C++ compiler inductor would call on the CPU (``CXX``, else g++ or clang++), if found."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
    return next((path for name in names if (path := shutil.which(name))), None)


def check_compile(backend: str, device: torch.device) -> None:
    """Fail, before anything is trained or written, when ``train.compile=backend`` cannot run
    here: ``backend`` must be ``"none"`` or a backend of
    ``torch.compiler.list_backends(exclude_tags=())``, and inductor on the CPU needs a C++
    compiler.

    Raises
    ------
    ValueError
        Naming the backend and the backends available, or the missing C++ compiler.
    """
    if backend == "none":
        return
    available = torch.compiler.list_backends(exclude_tags=())
    if backend not in available:
        raise ValueError(
            f"train.compile={backend!r} is not a torch.compile backend of torch "
            f"{torch.__version__}: use none, one of {sorted(torch.compiler.list_backends())} "
            "(inductor is torch.compile's default), or a debugging backend such as aot_eager "
            "or eager (torch.compiler.list_backends(exclude_tags=()) lists them all)")
    if backend == "inductor" and device.type == "cpu" and _cxx_compiler() is None:
        raise ValueError(
            "train.compile='inductor' on the CPU needs a C++ compiler (g++ or clang++ on PATH, "
            "or CXX naming one): install one, or set train.compile=aot_eager (no code "
            "generation) or none")


def compile_trunk(model: nn.Module, backend: str, device: torch.device) -> bool:
    """Compile ``model.trunk`` in place with ``torch.compile(backend=backend)``
    (``train.compile``, checked by :func:`check_compile`); ``"none"`` leaves it as it is.

    In place (``nn.Module.compile``): the trunk's parameters, ``state_dict`` keys, hooks and
    checkpoints are those of the eager module. Only the trunk is compiled: which estimators a
    step runs depends on the batch's labels, and a merge changes the stacked estimators'
    shapes, which would recompile a compiled estimator stack at every merging event.

    Parameters
    ----------
    model : nn.Module
        A model with a ``trunk`` module (:class:`~.branched.BranchedModel`).
    backend : str
        ``"none"``, or a backend of ``torch.compiler.list_backends(exclude_tags=())``.
    device : torch.device
        Where the model runs.

    Returns
    -------
    bool
        Whether the trunk was compiled.
    """
    check_compile(backend, device)
    if backend == "none":
        return False
    trunk = getattr(model, "trunk", None)
    if not isinstance(trunk, nn.Module):
        raise TypeError(f"train.compile={backend!r} compiles model.trunk, but this "
                        f"{type(model).__name__} has no trunk module: set train.compile=none")
    trunk.compile(backend=backend)
    return True


__all__ = ["AMP_MODES", "DeviceError", "Precision", "check_compile", "compile_trunk",
           "resolve_device"]
