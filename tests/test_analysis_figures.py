"""Per-run figures and Figure 6: hand-computed numbers on built snapshots, files on real runs."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import pandas as pd
import pytest
from selective_sharing.analysis import (
    draw_run_figures,
    figure6_numbers,
    plot_threshold_sweep,
    save_figure,
    write_figure6,
)
from selective_sharing.analysis.figure6 import (
    knn_consistency,
    probe_score,
    saliency_share,
    task_representation,
)
from selective_sharing.core import store
from selective_sharing.core.store import encode_activations
from test_analysis_runs import IMAGE_DATASET, make_run

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _snapshot(saliency, *, region_masks=None, task_region=None, object_masks=None, rep=None):
    n_tasks, n_probe = saliency.shape[:2]
    return encode_activations(
        name="final",
        step=1,
        task_names=[f"t{i}" for i in range(n_tasks)],
        probe_index=np.arange(n_probe),
        representation=np.zeros((n_probe, 4), np.float32) if rep is None else rep,
        labels=np.zeros((n_probe, n_tasks), np.float32),
        label_mask=np.ones((n_probe, n_tasks), bool),
        assignment=np.arange(n_tasks),
        estimator_output=None,
        saliency=saliency.astype(np.float32),
        region_masks=region_masks,
        task_region=task_region,
        object_masks=object_masks,
        method="mtl",
    )


def test_saliency_share_by_hand():
    halves = np.zeros((2, 2, 4), bool)
    halves[0, :, :2] = halves[1, :, 2:] = True
    sal = np.ones((3, 5, 2, 4))
    sal[0, :, :, 2:] = 0.0  # task 0: all saliency in the left half
    sal[1, :, :, :2] = 3.0  # task 1: 3:1 left vs right, but it needs the right half
    snap = _snapshot(sal, region_masks=halves, task_region=np.array([0, 1, -1]))
    share, area = saliency_share(snap)
    np.testing.assert_allclose(share[:2], [1.0, 0.25])
    np.testing.assert_allclose(area[:2], [0.5, 0.5])
    assert np.isnan(share[2]) and np.isnan(area[2])  # task_region -1: no region needed


def test_saliency_share_with_object_masks():
    masks = np.zeros((2, 2, 4), bool)
    masks[0, 0, 0] = True  # probe 0: one pixel of eight
    masks[1, :, :] = True  # probe 1: everything
    sal = np.ones((1, 2, 2, 4))
    share, area = saliency_share(
        _snapshot(sal, object_masks=masks, task_region=np.zeros(1, np.int64))
    )
    np.testing.assert_allclose(share, [(1 / 8 + 1.0) / 2])
    np.testing.assert_allclose(area, [(1 / 8 + 1.0) / 2])


def test_knn_and_probe_on_separated_clusters():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    rep = rng.normal(size=(40, 3)) * 0.1 + y[:, None] * 10.0
    assert knn_consistency(rep, y, True, k=5) == 1.0
    assert probe_score(rep, y, True, cv=5) == 1.0
    noise = rng.normal(size=(40, 3))
    assert knn_consistency(noise, y, True, k=5) < 0.8
    target = rep[:, 0] * 2.0
    assert probe_score(rep, target, False, cv=5) > 0.999


def test_stl_reads_each_task_block():
    rep = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)  # 3 tasks x 2 units
    snap = _snapshot(np.ones((3, 2, 1, 1)), rep=rep)
    np.testing.assert_array_equal(task_representation(snap, {"method": "stl"}, 1), rep[:, 2:4])
    np.testing.assert_array_equal(task_representation(snap, {"method": "mtl"}, 1), rep)


def test_draw_run_figures(tmp_path_factory, tmp_path):
    run = make_run(tmp_path_factory, "synthetic", "ss_similarity")
    paths = draw_run_figures(run, tmp_path, max_events=1, sweep=False)
    paths += save_figure(plot_threshold_sweep(run, thresholds=[0.0, 1.0, 2.0]), tmp_path, "sweep")
    names = {p.name for p in paths}
    for stem in (
        "timeline",
        "learning_curves",
        "parameters",
        "distances_event_000",
        "factor_space_event_000",
        "sweep",
    ):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    assert all(p.stat().st_size > 1000 for p in paths)
    assert not (tmp_path / "distances_event_001.png").exists()  # max_events=1


def test_reproduce_figures_script(tmp_path_factory, tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path_factory, "synthetic", "mtl")
    argv = ["figures.py", str(run), "--out", str(tmp_path), "--formats", "png"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "reproduce" / "figures.py"), run_name="__main__")
    assert info.value.code == 0
    assert "replay: exact (0 events" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "learning_curves.png",
        "parameters.png",
        "timeline.png",
    ]


@pytest.fixture(scope="module")
def image_trio(tmp_path_factory):
    return [make_run(tmp_path_factory, IMAGE_DATASET, m) for m in ("stl", "mtl", "ss_similarity")]


def test_figure6_on_image_runs(image_trio, tmp_path):
    paths = write_figure6(image_trio, tmp_path, embedding="pca")
    assert [p.name for p in paths["figure"]] == ["figure6.png", "figure6.pdf"]
    numbers = pd.read_csv(tmp_path / "figure6.csv")
    assert list(numbers["method"].unique()) == ["stl", "mtl", "ss_similarity"]
    assert len(numbers) == 3 * 8
    assert numbers["saliency_share"].between(0, 1).all()
    assert (numbers["region_area"] == 0.5).all()  # the needed half of a two-digit image
    assert numbers["knn_consistency"].between(0, 1).all()
    assert numbers["probe_score"].between(0, 1).all()
    assert numbers["region"].tolist() == [0, 1] * 12  # tasks alternate left, right
    summary = pd.read_csv(tmp_path / "figure6_summary.csv")
    expected = numbers.groupby("label", sort=False)["saliency_share"].mean()
    np.testing.assert_allclose(summary["saliency_share"], expected.to_numpy())


def test_figure6_numbers_without_saliency(tmp_path_factory):
    run = make_run(tmp_path_factory, "synthetic", "ss_similarity")
    numbers = figure6_numbers([run])
    assert numbers["saliency_share"].isna().all()  # vector data: no saliency maps
    assert (numbers["probe_metric"] == "r2").all()  # regression tasks
    # One dataset per task: the probes (the first test rows) label only some tasks, and the
    # numbers exist exactly for the tasks with at least 3 labelled probes.
    labelled = store.read_activations(store.RunPaths(run).activations("final"))["label_mask"]
    enough = labelled.values.sum(axis=0) >= 3
    assert enough.any()
    np.testing.assert_array_equal(numbers["knn_consistency"].notna(), enough)
    np.testing.assert_array_equal(numbers["probe_score"].notna(), enough)
