"""The project's shape: namespace mapping, environment.yml vs pyproject, README vs CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# pip name -> conda name, where they differ.
CONDA_NAMES = {"torch": "pytorch", "netcdf4": "netcdf4", "dask[distributed]": "dask"}


def _packages_on_disk() -> set[str]:
    found = set()
    for top in ("core", "analysis", "datasets"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add("selective_sharing." + ".".join(rel))
    return found


def test_every_subpackage_is_listed_and_mapped() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert _packages_on_disk() == listed
    for pkg in listed:
        rel = pkg.removeprefix("selective_sharing.").replace(".", "/")
        assert mapping[pkg] == rel, f"{pkg} must map onto {rel}/"
    # Never install bare top-level core/analysis/datasets (would shadow HF `datasets`).
    assert not any(not p.startswith("selective_sharing.") for p in listed)


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", req.strip())
    assert m, req
    return m.group(1).lower(), m.group(2).replace(" ", "")


def _environment_deps() -> dict[str, str]:
    deps: dict[str, str] = {}
    in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        m = re.match(r"^  - ([A-Za-z0-9_.\-]+)(.*)$", line)
        if in_deps and m and m.group(1) not in ("pip", "python"):
            deps[m.group(1).lower()] = m.group(2).replace(" ", "")
    return deps


@pytest.mark.parametrize("group", ["dependencies", "test"])
def test_environment_yml_agrees_with_pyproject(group: str) -> None:
    project = PYPROJECT["project"]
    reqs = project["dependencies"] if group == "dependencies" else (
        project["optional-dependencies"]["test"])
    env = _environment_deps()
    for req in reqs:
        name, spec = _split(req)
        conda = CONDA_NAMES.get(name, name)
        assert conda in env, f"{req} from pyproject is missing in environment.yml as {conda}"
        assert env[conda] == spec, f"{conda}: environment.yml {env[conda]!r} != pyproject {spec!r}"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one() -> None:
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)\n```", head, flags=re.S)
    assert len(blocks) == 2, "the README must open with exactly two command blocks"
    install_run, install_test = (b.strip() for b in blocks)
    assert "pip install" in install_run and "reproduce/" in install_run or "train" in install_run
    assert ".[test]" in install_test and "pytest" in install_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_test in ci, ".ci/run must run the README's test command verbatim"
    before = ci.split(install_test)[0]
    # a newcomer's machine: a fresh venv, and the torch pip resolves there (issue 10), never a
    # pinned or preinstalled build that would keep CI green while the README command fails
    assert re.search(r"python3? -m venv ", before) and "/bin/activate" in before, \
        ".ci/run must create and enter a fresh virtual environment first"
    assert "torch==" not in before and "--system-site-packages" not in before


def test_pyproject_keeps_a_normal_torch_range() -> None:
    torch_req = [r for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch")]
    assert torch_req == ["torch>=2.2"]


def test_shipped_code_does_not_cite_the_unshipped_design_notes() -> None:
    """Docstrings point to what ships (the README, the code), not to DESIGN.md, which does not."""
    tops = ("core", "analysis", "datasets", "reproduce", "tests")
    cited = [f"{p.relative_to(ROOT)}:{i}" for top in tops
             for p in sorted((ROOT / top).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if "DESIGN" in line and p.name != "test_packaging.py"]
    assert cited == []
