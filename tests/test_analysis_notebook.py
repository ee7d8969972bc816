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


def _cell_text(nb, needle: str) -> str:
    """The outputs of the one code cell whose source contains ``needle``."""
    [cell] = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_notebook_picks_runs_by_method_and_checks_its_outputs(tmp_path_factory, monkeypatch):
    """Issue 15: the notebook once globbed 10 runs and analysed ss_kmeans as "the Selective
    Sharing run", whose counterfactuals all printed the same groups. It now picks one run per
    method (stl, mtl, ss_similarity) whatever else is given and in whatever order, shows a
    counterfactual that changes the groups, and its outputs say so."""
    made = {m: make_run(tmp_path_factory, IMAGE_DATASET, m)
            for m in ("ss_similarity", "mtl_full", "stl", "mtl")}
    monkeypatch.setenv("SELECTIVE_SHARING_RUNS", os.pathsep.join(map(str, made.values())))
    monkeypatch.setenv("SELECTIVE_SHARING_EMBEDDING", "pca")  # UMAP's import alone takes 20 s
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell

    picked = _cell_text(nb, "METHODS = ").splitlines()
    assert picked[0] == "4 run(s) found; compared, one per method:"
    assert [line.split() for line in picked[1:4]] == [
        [m, str(made[m])] for m in ("stl", "mtl", "ss_similarity")]

    table = _cell_text(nb, 'metrics[["main", "n_parameters", "n_groups"]]')
    assert "mtl_full" not in table
    assert [table.find(str(made[m])) for m in ("stl", "mtl", "ss_similarity")] == sorted(
        table.find(str(made[m])) for m in ("stl", "mtl", "ss_similarity"))

    replayed = _cell_text(nb, "report = replay(ss_run)")
    assert replayed.startswith(f"exact replay of {made['ss_similarity']}: ")
    assert " 0 matched" not in replayed and "matched" in replayed

    story = _cell_text(nb, "explain(ss_run")
    assert " merged at event " in story and "never merged" in story
    for part in ("What was compared:", "Where the cut lies:", "The pair:",
                 "What would have changed it:"):
        assert part in story

    counter = _cell_text(nb, "counterfactuals = [").splitlines()
    formed = [line for line in counter if line.startswith("the run formed ")]
    outcomes = [line for line in counter if line.startswith("{")]
    assert len(formed) == 1 and len(outcomes) == 3
    assert any("changes the groups" in line for line in outcomes)
    assert all(("changes the groups" in line) != ("same groups" in line) for line in outcomes)
    assert any(line.startswith("warning: ") and "does not use min_silhouette" in line
               and "'kmeans'" in line for line in counter)

    summary = _cell_text(nb, "summarize_figure6(numbers)")
    rows = [line.split()[1] for line in summary.splitlines()[1:]]
    assert rows == ["stl", "mtl", "ss_similarity"]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 3  # threshold sweep, grouping timeline, Figure 6
