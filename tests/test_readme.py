"""The README's runnable Python examples execute as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(# README example: [^\n]*\n.*?)```", README, flags=re.S)


def test_the_readme_has_runnable_examples() -> None:
    assert any("from_arrays" in e and "data=data" in e for e in EXAMPLES)


@pytest.mark.parametrize("code", EXAMPLES, ids=[e.splitlines()[0][18:] for e in EXAMPLES])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every example prints what it claims; the custom-data one prints the groups it found.
    if "from_arrays" in code:
        assert "adjusted Rand index" in proc.stdout
