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


# ----------------------------------------------------------------------------- paper-ready figures


def _all_legends(fig) -> list:
    out = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return out + [leg for sub in fig.subfigs for leg in _all_legends(sub)]


def _titles(fig) -> str:
    texts = [fig._suptitle.get_text()] if fig._suptitle else []
    texts += [sub._suptitle.get_text() for sub in fig.subfigs if sub._suptitle]
    return "\n".join(texts + [ax.get_title() for ax in fig.axes])


def _series(ax) -> int:
    """Data series drawn in ``ax``: lines of more than 2 points (not reference lines) and
    non-empty collections (scatters, dendrogram links, contours)."""
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    return len(lines) + sum(1 for c in ax.collections if len(c.get_paths()) > 0)


def check_paper_ready(fig, run_attrs: dict | None = None) -> None:
    """Labelled axes, colorbars on every image, legends where several series, the run named."""
    colorbars = [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    mappables = {id(cb.mappable) for cb in colorbars}
    has_legend = bool(_all_legends(fig))
    for ax in fig.axes:
        if not ax.get_visible() or getattr(ax, "_colorbar", None) is not None:
            continue
        if not (ax.images or ax.get_lines() or ax.collections or ax.patches):
            continue
        if ax.images:
            assert all(id(im) in mappables for im in ax.images), f"image without colorbar: {ax}"
        else:
            assert ax.get_xlabel() and ax.get_ylabel(), f"unlabelled axes {ax.get_title()!r}"
        if _series(ax) > 1:
            assert ax.get_legend() is not None or has_legend, f"no legend: {ax.get_title()!r}"
    if run_attrs is not None:
        title = _titles(fig)
        assert run_attrs["dataset"]["name"] in title
        assert run_attrs["method"] in title and f"seed {run_attrs['seed']}" in title


@pytest.fixture(scope="module")
def ss_tree(tmp_path_factory):
    from selective_sharing.analysis import load_run

    return load_run(make_run(tmp_path_factory, "synthetic", "ss_similarity"), activations=False)


def test_every_run_figure_is_paper_ready(ss_tree):
    from selective_sharing.analysis import (
        plot_event_distances,
        plot_factor_space,
        plot_grouping_timeline,
        plot_learning_curves,
        plot_loss_around_event,
        plot_parameter_count,
    )

    figures = [
        plot_grouping_timeline(ss_tree),
        plot_event_distances(ss_tree, 0),
        plot_factor_space(ss_tree, 0),
        plot_learning_curves(ss_tree),
        plot_loss_around_event(ss_tree, 0),
        plot_parameter_count(ss_tree),
        plot_threshold_sweep(ss_tree),
    ]
    for fig in figures:
        check_paper_ready(fig, ss_tree.attrs)
        assert fig.get_layout_engine() is not None  # constrained layout: nothing clipped


def test_dendrogram_leaves_label_the_heatmap_columns(ss_tree):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from selective_sharing.analysis import plot_event_distances

    fig = plot_event_distances(ss_tree, 0)
    FigureCanvasAgg(fig).draw()
    tree_ax = next(ax for ax in fig.axes if ax.collections and not ax.images)
    heat_ax = next(ax for ax in fig.axes if ax.images)
    leaves = [t.get_text() for t in tree_ax.get_xticklabels()]
    columns = [t.get_text() for t in heat_ax.get_xticklabels()]
    assert leaves == columns and len(set(leaves)) == len(leaves) > 1
    np.testing.assert_allclose(tree_ax.get_xticks(), heat_ax.get_xticks())
    np.testing.assert_allclose(tree_ax.get_xlim(), heat_ax.get_xlim())
    a, b = tree_ax.get_position(), heat_ax.get_position()
    np.testing.assert_allclose([a.x0, a.x1], [b.x0, b.x1], atol=1e-6)  # leaves over columns


def test_learning_curves_distinct_and_events_marked(ss_tree):
    from selective_sharing.analysis import plot_learning_curves

    fig = plot_learning_curves(ss_tree)
    ax = fig.axes[0]
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len(curves) == ss_tree["history"].sizes["task"] == 12
    pairs = {
        (
            tuple(
                np.round(np.atleast_1d(__import__("matplotlib").colors.to_rgba(ln.get_color())), 3)
            ),
            ln.get_linestyle(),
        )
        for ln in curves
    }
    assert len(pairs) == len(curves)
    events = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2]
    assert len(events) == 3  # steps 10, 20, 30
    assert ax.get_legend() is not None and len(ax.get_legend().texts) == 12


def test_parameter_plot_starts_at_zero_and_names_the_drop(ss_tree):
    from selective_sharing.analysis import plot_parameter_count

    ax = plot_parameter_count(ss_tree).axes[0]
    assert ax.get_ylim()[0] == 0
    merged = sum(
        node.attrs["n_params_before"] != node.attrs["n_params_after"]
        for node in ss_tree["events"].children.values()
    )
    assert merged >= 1
    assert sum("%" in t.get_text() for t in ax.texts) == merged


def test_threshold_sweep_marks_the_cut_within_the_used_distance(ss_tree):
    from selective_sharing.analysis.events import read_events

    _, decoded = read_events(ss_tree, bins=False)
    fig = plot_threshold_sweep(ss_tree)
    ax = fig.axes[0]
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    cuts = [(r.threshold, r.n_entities_after) for r, _ in decoded if np.isfinite(r.threshold)]
    assert cuts and len(stars) == len(cuts)
    for star, (thr, n) in zip(stars, cuts):
        assert star.get_xdata()[0] == pytest.approx(thr) and star.get_ydata()[0] == n
    top = max(
        max(float(np.max(r.distances[r.chosen_distance])) for r, _ in decoded),
        *(c for c, _ in cuts),
    )
    lo, hi = ax.get_xlim()
    assert lo == 0 and hi <= top + 1e-9
    assert {r.chosen_distance for r, _ in decoded} <= set(ax.get_xlabel().split())


def test_figure6_is_paper_ready(image_trio):
    from selective_sharing.analysis import draw_figure6

    numbers = figure6_numbers(image_trio)
    fig = draw_figure6(image_trio, numbers=numbers, embedding="pca")
    check_paper_ready(fig)
    manifest = store.read_manifest(image_trio[0])
    title = _titles(fig)
    assert manifest["dataset"]["name"] in title
    assert all(label in title for label in numbers["label"].unique())
    # (b): one colorbar per saliency map, titled with every member of its group
    image_axes = [ax for ax in fig.axes if ax.images]
    expected = []
    for run in image_trio:
        snap = store.read_activations(store.RunPaths(run).activations("final"))
        a, names = snap["assignment"].values, [str(t) for t in snap["task"].values]
        expected += [
            ", ".join(names[t] for t in np.flatnonzero(a == g)) for g in range(a.max() + 1)
        ]
    assert [ax.get_title().replace("\n", " ") for ax in image_axes] == expected
    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(bars) == len(image_axes)
    # the midline is explained: a legend entry for the region contours
    assert any("region" in t.get_text() for leg in _all_legends(fig) for t in leg.texts)
    # (c): error bars from the spread over tasks
    from matplotlib.container import ErrorbarContainer

    numbers_axes = [ax for ax in fig.axes if ax.patches]
    assert len(numbers_axes) == 3
    for ax in numbers_axes:
        assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)


def _overlaps(fig) -> list[tuple[str, str]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    texts = []
    for ax in fig.axes:
        # the ticks drawn: get_xticklabels() also lists labels outside the view, never placed
        drawn = [*ax.xaxis._update_ticks(), *ax.yaxis._update_ticks()]
        labels = [t for tick in drawn for t in (tick.label1, tick.label2) if t.get_visible()]
        for t in [*labels, ax.title, ax.xaxis.label, ax.yaxis.label]:
            if t.get_visible() and t.get_text():
                texts.append((t.get_text(), t.get_window_extent(renderer).shrunk(0.95, 0.9)))
    heads = [f._suptitle for f in (fig, *fig.subfigs) if f._suptitle]
    texts += [(t.get_text(), t.get_window_extent(renderer).shrunk(0.95, 0.9)) for t in heads]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(texts)
        for b, box_b in texts[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def test_figure6_for_ten_runs_scales_and_stays_legible(image_trio):
    from selective_sharing.analysis import draw_figure6, load_run

    numbers3 = figure6_numbers(image_trio)
    trees, frames = [], []
    for k in range(10):
        tree = load_run(image_trio[k % 3]).copy()
        tree.attrs["seed"] = k
        trees.append(tree)
        part = numbers3[numbers3["run"] == str(image_trio[k % 3])].copy()
        part["label"] = part["method"] + f"/seed{k}"
        frames.append(part)
    fig = draw_figure6(trees, numbers=pd.concat(frames), embedding="pca")
    width, height = fig.get_size_inches() * fig.dpi
    assert width == pytest.approx(7.0 * fig.dpi)  # double column
    assert 10 * 1.5 * fig.dpi < height < 10 * 2.6 * fig.dpi  # grows per run, bounded
    assert _overlaps(fig) == []
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.get_xticklabels() if t.get_text()]
    assert min(sizes) >= 5  # points, printed at 7 in
