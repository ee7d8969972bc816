"""The house's load-bearing walls: who may import whom.

Every module of core/, analysis/ and datasets/ is parsed (not imported) and each of its imports,
at module level and inside functions, is checked against the layering table below, which is the
project's design rule:

| module | may import | must never import |
|---|---|---|
| `core.grouping` (pure decision rule) | numpy, scipy, scikit-learn | torch, any file I/O, analysis |
| `core.store` (schema, read/write) | xarray, numpy | torch, analysis |
| `core` (model, training, recorders) | torch, `core.grouping`, `core.store`, `datasets` | analysis, reproduce |
| `datasets` | numpy, torch (adapters only, imported lazily), file readers | core, analysis, reproduce |
| `analysis` | `core.grouping`, `core.store`, xarray, matplotlib, seaborn, umap-learn (lazily) | torch, `core` training modules |
| `reproduce/` scripts | everything above | (nothing imports reproduce) |

The standard library is allowed everywhere except where a row forbids file I/O. A few allowed
third-party names are spelled out where the table says "scikit-learn" (its `threadpoolctl`) or
relies on xarray's own dependencies (pandas, the NetCDF backends).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-dir"
]
STDLIB = set(sys.stdlib_module_names)
FILE_IO = {"os", "pathlib", "io", "shutil", "tempfile", "glob", "pickle", "sqlite3", "mmap"}
NUMERIC = {"numpy", "scipy", "sklearn"}
PLOTTING = {"matplotlib", "seaborn", "cycler"}
TABLES = {"xarray", "pandas", "netCDF4", "h5netcdf", "dask"}
# The `selective-sharing` command is an application front end, above every layer like the
# reproduce/ scripts: its `explain` and `replay` subcommands import analysis, lazily. No library
# module imports it (tested below), so core's library code still never reaches analysis.
COMMAND = "selective_sharing.core.cli"


@dataclass(frozen=True)
class Import:
    """One import statement's target, as an absolute dotted name."""

    module: str  # the importing module
    target: str  # e.g. "torch", "selective_sharing.core.grouping.event"
    line: int
    lazy: bool  # inside a function (imported on first use)

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    def within(self, prefix: str) -> bool:
        return self.target == prefix or self.target.startswith(prefix + ".")

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "at module level"
        return f"{self.module}:{self.line} imports {self.target} ({where})"


def module_name(path: Path) -> str:
    """The dotted name of a source file under the namespace mapping of pyproject.toml."""
    rel = path.relative_to(ROOT)
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: -len(kv[1])):
        if rel.parent.as_posix() == folder:
            return package if path.name == "__init__.py" else f"{package}.{path.stem}"
    raise AssertionError(f"{rel} is in no package of pyproject.toml's package-dir")


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (module level and nested), resolved to absolute names."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child.lineno, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module != "__future__":
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    anchor = ".".join(parts[: len(parts) - child.level + 1])
                    base = f"{anchor}.{base}" if base else anchor
                # `from pkg import name` may import the submodule pkg.name: check that form
                found.extend(Import(module, f"{base}.{a.name}", child.lineno, lazy)
                             for a in child.names)
            visit(child, nested)

    visit(ast.parse(source), False)
    return found


def _all_imports() -> list[Import]:
    out = []
    for top in ("core", "analysis", "datasets"):
        for path in sorted((ROOT / top).rglob("*.py")):
            out += imports_of(path.read_text(), module_name(path), path.name == "__init__.py")
    return out


def violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the table, or None."""
    m, project = imp.module, "selective_sharing"
    if imp.top in ("reproduce",) or imp.within("selective_sharing.reproduce"):
        return "nothing imports reproduce/"
    if m.startswith("selective_sharing.core.grouping"):
        if imp.top == project:
            ok = imp.within("selective_sharing.core.grouping")
            return None if ok else "core.grouping imports only itself within the project"
        if imp.top in FILE_IO:
            return "core.grouping does no file I/O"
        ok = imp.top in STDLIB | NUMERIC | {"threadpoolctl"}
        return None if ok else "core.grouping imports only numpy, scipy and scikit-learn"
    if m.startswith("selective_sharing.core.store"):
        if imp.top == project:
            ok = imp.within("selective_sharing.core.store")
            return None if ok else "core.store imports only itself within the project"
        ok = imp.top in STDLIB | TABLES | {"numpy"}
        return None if ok else "core.store imports only xarray and numpy"
    if m.startswith("selective_sharing.core"):
        if imp.within("selective_sharing.analysis") and not (m == COMMAND and imp.lazy):
            return "core never imports analysis"
        return None
    if m.startswith("selective_sharing.datasets"):
        if imp.within("selective_sharing.core") or imp.within("selective_sharing.analysis"):
            return "datasets never imports core or analysis"
        if imp.top == "torch" and not imp.lazy:
            return "datasets imports torch only lazily (inside the adapters' functions)"
        return None
    if m.startswith("selective_sharing.analysis"):
        if imp.top == "torch":
            return "analysis never imports torch"
        if imp.within("selective_sharing.core"):
            ok = any(imp.within(f"selective_sharing.core.{part}") for part in ("grouping", "store"))
            return None if ok else "analysis imports only core.grouping and core.store of core"
        if imp.top == "umap" and not imp.lazy:
            return "analysis imports umap-learn only lazily"
        return None
    return None


def test_every_module_keeps_to_the_layering_table() -> None:
    imports = _all_imports()
    assert len({i.module for i in imports}) > 40  # the parser saw the tree
    broken = [f"{imp}: {why}" for imp in imports if (why := violation(imp))]
    assert broken == []


def test_only_the_entry_points_import_the_command() -> None:
    users = {i.module for i in _all_imports() if i.within(COMMAND)}
    assert users <= {"selective_sharing.core.training", "selective_sharing.core.train"}
    assert all(i.lazy for i in _all_imports() if i.within(COMMAND))


def test_nothing_imports_reproduce() -> None:
    tops = ("core", "analysis", "datasets", "tests")
    for path in [p for top in tops for p in (ROOT / top).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "reproduce" for n in names), path


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("selective_sharing.core.grouping.event", "import torch\n", "numpy, scipy"),
        ("selective_sharing.core.grouping.event", "def f():\n    import os\n", "file I/O"),
        ("selective_sharing.core.grouping.event", "from .. import training\n", "only itself"),
        ("selective_sharing.core.store.io", "from ..grouping import EventResult\n", "only itself"),
        ("selective_sharing.core.training", "from ..analysis import replay\n", "never imports"),
        ("selective_sharing.datasets.school", "import torch\n", "only lazily"),
        ("selective_sharing.datasets.school", "from ..core import store\n", "never imports"),
        ("selective_sharing.analysis.plots", "def f():\n    import torch\n", "never imports torch"),
        ("selective_sharing.analysis.plots", "from ..core import training\n", "only core.grouping"),
        ("selective_sharing.analysis.plots", "from ..core.training import train\n", "only core"),
    ],
)
def test_a_forbidden_import_is_caught(module: str, source: str, why: str) -> None:
    """The checker itself: each row adds one forbidden import to a module of that layer."""
    [why_found] = [w for imp in imports_of(source, module) if (w := violation(imp))]
    assert why in why_found


def test_allowed_imports_pass() -> None:
    allowed = {
        "selective_sharing.core.grouping.event": "import numpy\nfrom .factorize import factorize\n",
        "selective_sharing.core.training": "import torch\nfrom .grouping import grouping_event\n",
        "selective_sharing.datasets.torch_adapter": "def f():\n    import torch\n",
        "selective_sharing.analysis.replay": "from ..core.grouping import GroupingConfig\n"
                                             "from ..core import store\n",
    }
    for module, source in allowed.items():
        found = imports_of(source, module)
        assert found and [violation(i) for i in found] == [None] * len(found)
