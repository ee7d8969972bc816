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
