"""Load a ``reproduce/`` script as a module, for the tests that call its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPRODUCE = Path(__file__).resolve().parents[1] / "reproduce"


def load_script(name: str) -> ModuleType:
    """``reproduce/<name>.py`` as the module ``<name>_script`` (registered in ``sys.modules``
    before it runs: its dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPRODUCE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
