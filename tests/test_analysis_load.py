"""load_run / load_runs: the tree layout, combining runs, and broken stores."""

from __future__ import annotations

import shutil

import dask.array as da
import pytest
import xarray as xr
from selective_sharing.analysis import BrokenRunWarning, find_runs, load_run, load_runs
from selective_sharing.core import store
from test_analysis_runs import make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return [make_run(tmp_path_factory, "synthetic", m) for m in ("ss_similarity", "mtl")]


def test_load_run_layout(runs):
    run = runs[0]
    tree = load_run(run)
    manifest = store.read_manifest(run)
    assert {k: tree.attrs[k] for k in manifest} == manifest
    assert tree.attrs["run_dir"] == str(run)
    assert set(tree.children) == {"history", "metrics", "events", "activations"}
    xr.testing.assert_identical(tree["history"].to_dataset(), store.read_history(run))
    xr.testing.assert_identical(tree["metrics"].to_dataset(), store.read_metrics(run))
    events = store.list_events(run)
    assert list(tree["events"].children) == [p.stem for p in events]
    for path in events:
        xr.testing.assert_identical(tree["events"][path.stem].to_dataset(), store.read_event(path))
    assert list(tree["activations"].children) == ["final"]


def test_load_run_lazy(runs):
    tree = load_run(runs[0], lazy=True)
    node = tree["events"]["event_000000"].to_dataset()
    assert isinstance(node["summed"].data, da.Array)
    eager = store.read_event(store.list_events(runs[0])[0])
    xr.testing.assert_identical(node.load(), eager)


def test_lazy_load_keeps_no_file_open(runs):
    # Handles left in xarray's file cache were closed by the garbage collector from dask's
    # threads and crashed HDF5; lazy variables must open, read and close on their own.
    from xarray.backends.file_manager import FILE_CACHE

    tree = load_run(runs[0], lazy=True)
    tree["events"]["event_000001"]["factors"].load()
    assert not [key for key in FILE_CACHE if str(runs[0]) in str(key)]


def test_load_runs_combines_along_run(runs):
    tree = load_runs(runs)
    metrics, history = tree["metrics"].to_dataset(), tree["history"].to_dataset()
    assert list(metrics["run"].values) == [str(r) for r in runs]
    assert list(metrics["method"].values) == ["ss_similarity", "mtl"]
    assert list(metrics["dataset"].values) == ["synthetic", "synthetic"]
    assert list(metrics["seed"].values) == [0, 0]
    for i, run in enumerate(runs):
        one = store.read_metrics(run)
        assert metrics["main"].values[i] == one["main"].values
        assert (metrics["rmse"].sel(run=str(run)) == one["rmse"]).all()
        assert (history["loss"].isel(run=i) == store.read_history(run)["loss"]).all()
    assert tree.attrs["runs"] == [str(r) for r in runs] and tree.attrs["failed"] == {}


def test_load_runs_lazy_history(runs):
    tree = load_runs(runs, lazy=True)
    assert isinstance(tree["history"]["loss"].data, da.Array)


def test_find_runs_globs_and_folders(runs, tmp_path_factory):
    parent = runs[0].parent
    assert find_runs(str(parent / "synthetic_*")) == sorted(
        p for p in parent.iterdir() if p.name.startswith("synthetic_")
    )
    assert set(runs) <= set(find_runs(parent))


def _broken_copy(run, tmp_path, name):
    return shutil.copytree(run, tmp_path / name)


def test_truncated_history_names_the_file(runs, tmp_path):
    run = _broken_copy(runs[0], tmp_path, "truncated")
    path = store.RunPaths(run).history
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(store.StoreError, match="history.nc") as info:
        load_run(run)
    assert info.value.path == path


def test_corrupted_event_names_the_file(runs, tmp_path):
    run = _broken_copy(runs[0], tmp_path, "corrupt")
    path = store.list_events(run)[1]
    data = bytearray(path.read_bytes())
    data[:8] = b"garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(store.StoreError, match=path.name):
        load_run(run)


def test_load_runs_skips_broken_runs_with_a_warning(runs, tmp_path):
    broken = _broken_copy(runs[0], tmp_path, "broken")
    metrics = store.RunPaths(broken).metrics
    metrics.write_bytes(metrics.read_bytes()[:100])
    missing = tmp_path / "not_a_run"
    with pytest.warns(BrokenRunWarning) as record:
        tree = load_runs([runs[1], broken, missing])
    message = str(record[0].message)
    assert "skipped 2 of 3" in message
    assert str(broken) in message and "metrics.nc" in message and str(missing) in message
    assert tree.attrs["runs"] == [str(runs[1])]
    assert set(tree.attrs["failed"]) == {str(broken), str(missing)}
    assert list(tree["metrics"]["run"].values) == [str(runs[1])]


def test_load_run_warns_about_a_run_that_did_not_finish_and_names_a_missing_path(tmp_path):
    """Issue 15: a failed run loaded silently and its tree then lacked 'metrics' (KeyError);
    a missing path was reported as a missing manifest."""
    import pytest
    from selective_sharing.analysis import IncompleteRunWarning, load_run
    from selective_sharing.core import make_config, train
    from selective_sharing.core.store import StoreError

    class Stop:
        def on_event(self, trainer, result):
            raise RuntimeError("stopped on purpose")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="on purpose"):
        train(make_config("synthetic", overrides={"train.steps": 60, "warmup_steps": 40},
                          out=str(out)), progress=False, callbacks=[Stop()])
    with pytest.warns(IncompleteRunWarning, match=r"is marked 'failed' \(RuntimeError: stopped "
                                                  r"on purpose\).*no final metrics"):
        tree = load_run(out)
    assert "metrics" not in tree.children and len(tree["events"].children) == 1
    with pytest.raises(StoreError, match="no such run directory"):
        load_run(tmp_path / "nowhere")


def test_replay_report_repr_is_one_line(tmp_path):
    from selective_sharing.analysis import replay
    from selective_sharing.core import make_config, train

    run = train(make_config("synthetic", overrides={"train.steps": 60, "warmup_steps": 40},
                            out=str(tmp_path / "run")), progress=False)
    text = repr(replay(run))
    assert "\n" not in text and len(text) < 300
    assert text.startswith("ReplayReport(run=") and "matched=True" in text


# ----------------------------------------------------------------------------- coordinates, units


def _members(assignment, names, n):
    return ["/".join(t for t, a in zip(names, assignment) if a == e) for e in range(n)]


def test_every_file_of_a_training_run_labels_its_dims(runs):
    import numpy as np

    run = runs[0]
    names = store.read_manifest(run)["task_names"]
    events = [store.read_event(p) for p in store.list_events(run)]
    assert len(events) >= 2
    for ev in events:
        n_e = ev.sizes["entity"]
        for dim in ("entity", "entity_other", "row", "col", "factor", "cluster", "bin", "sketch"):
            assert ev[dim].values.tolist() == list(range(ev.sizes[dim])), dim
        assert ev["task"].values.tolist() == names == ev["task_other"].values.tolist()
        members = _members(ev["assignment_before"].values, names, n_e)
        assert ev["entity_tasks"].values.tolist() == members
        assert all(members)  # in a training run every entity holds a task
        assert set(ev["distance"].values) == set(ev["silhouettes"]["distance"].values)
        assert ev.sizes["cluster"] == int(ev.attrs["kmeans_k"])
    # entities shrink as tasks merge: each event's entity labels follow its own partition
    assert [e.sizes["entity"] for e in events] == [int(e.attrs["n_entities_before"])
                                                  for e in events]
    history, metrics = store.read_history(run), store.read_metrics(run)
    assert history["task"].values.tolist() == names and history["step"].dtype == np.int64
    assert metrics["task"].values.tolist() == names
    [final] = [store.read_activations(p) for p in store.list_activations(run)]
    n_e = final.sizes["entity"]
    assert final["entity"].values.tolist() == list(range(n_e))
    assert final["entity_tasks"].values.tolist() == _members(final["assignment"].values, names,
                                                             n_e)
    assert final["probe"].dtype == np.int64 and final["task"].values.tolist() == names


def test_training_run_metrics_record_method_seed_dataset_and_units(runs):
    for run, method in zip(runs, ("ss_similarity", "mtl")):
        m = store.read_metrics(run)
        assert m.attrs["method"] == method and int(m.attrs["seed"]) == 0
        assert m.attrs["dataset"] == "synthetic" and m.attrs["variant"] == "synthetic"
        assert "units" not in m["partition"].attrs
        tree = load_run(run, events=False, activations=False)
        assert tree["metrics"].attrs["method"] == method


def test_classification_run_stores_only_its_metrics(tmp_path_factory):
    import numpy as np
    from test_analysis_runs import IMAGE_DATASET

    run = make_run(tmp_path_factory, IMAGE_DATASET, "ss_similarity")
    m = store.read_metrics(run)
    task_metrics = {n for n, v in m.data_vars.items() if v.attrs.get("role") == "task_metric"}
    assert task_metrics == {"accuracy"}
    assert not [n for n, v in m.data_vars.items() if v.dtype.kind == "f" and np.isnan(v).all()]
    assert m["accuracy"].attrs["units"] == "1" and m.attrs["dataset"] == IMAGE_DATASET
    [final] = [store.read_activations(p) for p in store.list_activations(run)]
    assert final["region"].values.tolist() == list(range(final.sizes["region"]))
    assert "units" not in final["task_region"].attrs
    # combined with a regression run, a metric a run lacks reads as not applicable (NaN)
    synthetic = make_run(tmp_path_factory, "synthetic", "mtl")
    combined = load_runs([run, synthetic])["metrics"].to_dataset()
    assert combined["rmse"].sel(run=str(run)).isnull().all()
    assert combined["accuracy"].sel(run=str(synthetic)).isnull().all()
    assert combined["main"].notnull().all()


def test_school_explained_variance_is_in_percent(tmp_path):
    from selective_sharing.core import make_config, train

    cfg = make_config("school", "mtl", 0, overrides={"train.steps": 3, "train.threads": 1},
                      out=str(tmp_path / "school"))
    m = store.read_metrics(train(cfg, progress=False))
    assert m.attrs["main_metric"] == "pooled_explained_variance"
    assert m["explained_variance"].attrs["units"] == "%" == m["main"].attrs["units"]
    assert m["pooled_explained_variance"].attrs["role"] == "run_metric"
    assert float(m["main"]) == float(m["pooled_explained_variance"])
    assert "accuracy" not in m and "ndcg" not in m and "spearman" not in m


def _rewrite_as_old_format(run):
    """Rewrite every NetCDF file of ``run`` as the code before coordinates wrote it."""
    from test_store import old_format

    for path in sorted(run.rglob("*.nc")):
        old = old_format(store.open_store_dataset(path))
        if old.attrs["store_kind"] == "metrics":
            old.attrs = {k: v for k, v in old.attrs.items() if k not in ("method", "seed", "dataset")}
        store.atomic_write_dataset(path, old)


def test_old_format_run_still_loads_replays_and_combines(runs, tmp_path):
    from selective_sharing.analysis import replay

    old = _broken_copy(runs[0], tmp_path, "old_format")
    _rewrite_as_old_format(old)
    event = store.read_event(store.list_events(old)[0])
    assert "entity" not in event.coords and "row" not in event.coords
    assert "method" not in store.read_metrics(old).attrs
    tree = load_run(old)
    assert set(tree.children) == {"history", "metrics", "events", "activations"}
    lazy = load_run(old, lazy=True)
    xr.testing.assert_identical(lazy["events"]["event_000000"].to_dataset().load(), event)
    report = replay(old)
    assert report.matched and report.groups() == replay(runs[0]).groups()
    combined = load_runs([old, runs[1]])
    assert combined.attrs["failed"] == {} and combined["metrics"].sizes["run"] == 2
