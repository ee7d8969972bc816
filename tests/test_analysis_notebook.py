"""reproduce/explore_runs.ipynb executes with nbclient on small runs and explains a decision."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_analysis_runs import IMAGE_DATASET, make_run

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "reproduce" / "explore_runs.ipynb"


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_runs_and_explains(tmp_path_factory, monkeypatch):
    runs = [make_run(tmp_path_factory, IMAGE_DATASET, m) for m in ("stl", "mtl", "ss_similarity")]
    monkeypatch.setenv("SELECTIVE_SHARING_RUNS", os.pathsep.join(map(str, runs)))
    monkeypatch.setenv("SELECTIVE_SHARING_EMBEDDING", "pca")  # UMAP's import alone takes 20 s
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    text = _text(nb)
    assert "3 run(s)" in text
    assert "exact replay of" in text and "matched" in text
    assert " merged at event " in text  # the explained decision
    assert "never merged" in text or "already shared" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # sweep, timeline and Figure 6
