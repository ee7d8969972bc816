"""analysis/ works in a process where ``import torch`` raises (issue 4 item 6).

Each test runs a script in a fresh interpreter whose first act is to put a meta-path finder in
front of every other that refuses ``torch`` and its submodules. The script prints JSON with its
results and the modules it ended up importing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from test_analysis_runs import IMAGE_DATASET, make_run

REPO = Path(__file__).resolve().parents[1]
BLOCK_TORCH = """
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this process (import of {name!r})")
        return None

sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker does not work")
"""
FORBIDDEN = (
    "torch",
    *(
        f"selective_sharing.core.{m}"
        for m in (
            "train", "model", "rundir", "evaluation", "activations", "capture", "merge",
            "checkpoint",
        )
    ),
)
REPORT = f"""
loaded = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)
print("RESULT " + json.dumps({{"out": out, "forbidden_loaded": loaded}}))
"""


def run_without_torch(body: str, tmp_path: Path) -> dict:
    script = tmp_path / "script.py"
    script.write_text(BLOCK_TORCH + textwrap.dedent(body) + REPORT)
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["forbidden_loaded"] == []
    return result["out"]


@pytest.fixture(scope="module")
def image_trio(tmp_path_factory):
    return [make_run(tmp_path_factory, IMAGE_DATASET, m) for m in ("stl", "mtl", "ss_similarity")]


def _figure6_script(runs: list[Path], out_dir: Path, embedding: str) -> str:
    argv = ["figure6.py", *map(str, runs), "--out", str(out_dir), "--embedding", embedding]
    return f"""
        import runpy
        sys.argv = {argv!r}
        try:
            runpy.run_path({str(REPO / "reproduce" / "figure6.py")!r}, run_name="__main__")
        except SystemExit as stop:
            out["code"] = stop.code
    """


def _check_figure6(out_dir: Path) -> None:
    for name in ("figure6.png", "figure6.pdf", "figure6.csv", "figure6_summary.csv"):
        assert (out_dir / name).stat().st_size > 0
    summary = pd.read_csv(out_dir / "figure6_summary.csv")
    assert list(summary["method"]) == ["stl", "mtl", "ss_similarity"]
    assert summary["saliency_share"].between(0, 1).all()


def test_analysis_without_torch(tmp_path_factory, image_trio, tmp_path):
    """load_run, load_runs, replay, explain and reproduce/figure6.py in one torch-less process
    (one interpreter start: the imports are most of the cost)."""
    run = make_run(tmp_path_factory, "synthetic", "ss_similarity")
    body = f"""
        from selective_sharing.analysis import explain, load_run, load_runs, replay
        tree = load_run({str(run)!r})
        report = replay(tree)
        out = {{
            "events": len(tree["events"].children),
            "matched": report.matched,
            "runs": load_runs([{str(run)!r}]).attrs["runs"],
            "explained": explain(tree, 0, 1).text,
        }}
    """
    body = textwrap.dedent(body) + textwrap.dedent(
        _figure6_script(image_trio, tmp_path / "fig", "pca")
    )
    out = run_without_torch(body, tmp_path)
    assert out["events"] == 3 and out["matched"] is True
    assert out["runs"] == [str(run)]
    assert out["explained"].startswith("task_00 and task_01 ")
    assert out["code"] == 0
    _check_figure6(tmp_path / "fig")


@pytest.mark.slow
def test_figure6_script_with_umap_without_torch(image_trio, tmp_path):
    body = "out = {}\n" + textwrap.dedent(_figure6_script(image_trio, tmp_path / "f", "umap"))
    out = run_without_torch(body, tmp_path)
    assert out["code"] == 0
    _check_figure6(tmp_path / "f")
