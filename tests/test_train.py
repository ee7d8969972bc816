"""End-to-end training on small synthetic runs: store contents, determinism, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from selective_sharing.core import make_config, store
from selective_sharing.core.methods import methods_where
from selective_sharing.core.training import train

SMALL = {"train.steps": 60, "warmup_steps": 20, "regroup_every": 10, "patience": 1,
         "samples_per_task": 40}


def _run(tmp: Path, name: str, method: str = "ss_similarity", seed: int = 0, **extra) -> Path:
    cfg = make_config("synthetic", method, seed, overrides={**SMALL, **extra},
                      out=str(tmp / name))
    return train(cfg, progress=False)


def _events(run: Path) -> list[xr.Dataset]:
    return [store.read_event(p) for p in store.list_events(run)]


def test_store_files_are_plain_netcdf_with_named_dims_units_descriptions(tmp_path) -> None:
    run = _run(tmp_path, "a")
    files = sorted(run.rglob("*.nc"))
    names = {p.name for p in files}
    assert {"history.nc", "metrics.nc", "final.nc", "event_000000.nc"} <= names
    code = (
        "import sys, xarray as xr\n"
        "for p in sys.argv[1:]:\n"
        "    ds = xr.open_dataset(p)\n"
        "    assert 'schema_version' in ds.attrs, p\n"
        "    for v in ds.data_vars.values():\n"
        "        assert v.attrs.get('units', '-') and v.attrs.get('description'), (p, v.name)\n"
        "        assert all(not d.startswith('dim_') for d in v.dims), (p, v.name)\n"
        "print('ok', len(sys.argv) - 1)\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"ok {len(files)}"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["dataset"]["variant"] == "synthetic"
    assert manifest["events"] == [p.name for p in store.list_events(run)]


def test_metrics_hold_partition_parameters_passes_and_ari(tmp_path) -> None:
    run = _run(tmp_path, "a")
    m = store.read_metrics(run)
    assert int(m["backward_passes"]) == 60
    assert int(m["n_groups"]) == len(np.unique(m["partition"].values))
    assert -1.0 <= float(m["adjusted_rand_index"]) <= 1.0
    events = _events(run)
    assert int(m["n_parameters"]) == int(events[-1].attrs["n_params_after"])
    mtl = store.read_metrics(_run(tmp_path, "mtl", method="mtl"))
    assert int(mtl["n_groups"]) == 30
    assert int(mtl["n_parameters"]) >= int(m["n_parameters"])


def test_same_seed_gives_identical_event_data(tmp_path) -> None:
    a, b = _events(_run(tmp_path, "a")), _events(_run(tmp_path, "b"))
    assert len(a) == len(b) >= 2
    for ea, eb in zip(a, b):
        xr.testing.assert_identical(ea, eb)


class _KillAfterSecondEvent:
    def on_event(self, trainer, result) -> None:
        if trainer.n_events == 2:
            import os

            os._exit(3)  # a crash right after the 2nd event's checkpoint


def test_resume_after_kill_gives_identical_events_and_metrics(tmp_path) -> None:
    full = _run(tmp_path, "full")
    killed = tmp_path / "killed"
    code = (
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from test_train import SMALL, _KillAfterSecondEvent\n"
        "from selective_sharing.core import make_config\n"
        "from selective_sharing.core.training import train\n"
        "cfg = make_config('synthetic', 'ss_similarity', 0, overrides=SMALL, out=%r)\n"
        "train(cfg, progress=False, callbacks=[_KillAfterSecondEvent()])\n"
    ) % (str(Path(__file__).parent), str(killed))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert store.read_manifest(killed)["status"] == "running"
    assert len(store.list_events(killed)) == 2
    cmd = [sys.executable, "-m", "selective_sharing.core.train", "--dataset", "synthetic",
           "--method", "ss_similarity", "--seed", "0", "--out", str(killed), "--resume",
           "--no-progress"] + [f"--set={k}={v}" for k, v in SMALL.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for ea, eb in zip(_events(full), _events(killed), strict=True):
        xr.testing.assert_identical(ea, eb)
    ma, mb = store.read_metrics(full), store.read_metrics(killed)
    ma, mb = ma.drop_vars("wall_time_s"), mb.drop_vars("wall_time_s")
    xr.testing.assert_identical(ma, mb)
    assert store.read_manifest(killed)["status"] == "complete"


def test_existing_run_needs_resume_and_missing_run_cannot_resume(tmp_path) -> None:
    run = _run(tmp_path, "a")
    cfg = make_config("synthetic", "ss_similarity", 0, overrides=SMALL, out=str(run))
    with pytest.raises(RuntimeError, match="already holds a run .*--resume"):
        train(cfg, progress=False)
    cfg2 = make_config("synthetic", "ss_similarity", 0, overrides=SMALL,
                       out=str(tmp_path / "none"))
    with pytest.raises(RuntimeError, match="cannot --resume .* holds no run"):
        train(cfg2, progress=False, resume=True)


def test_overwrite_deletes_the_run_and_trains_it_again(tmp_path) -> None:
    run = _run(tmp_path, "a")
    first = store.read_manifest(run)
    events = sorted(p.name for p in (run / "events").iterdir())
    (run / "notes.txt").write_text("mine")  # a file the store does not own stays
    (run / "events" / "event_000099.nc").write_bytes(b"stale")  # gone with the old run
    cfg = make_config("synthetic", "ss_similarity", 0, overrides=SMALL, out=str(run))
    with pytest.raises(RuntimeError, match="--overwrite \\(overwrite=True\\)"):
        train(cfg, progress=False)
    with pytest.raises(ValueError, match="resume=True and overwrite=True contradict"):
        train(cfg, progress=False, resume=True, overwrite=True)
    assert train(cfg, progress=False, overwrite=True) == run
    second = store.read_manifest(run)
    assert second["status"] == "complete" and second["created"] > first["created"]
    assert not (run / "events" / "event_000099.nc").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (run / "events").iterdir()) == events


def test_core_train_is_the_function_with_its_signature_and_docs() -> None:
    """``help(selective_sharing.core.train)`` documents the function, not a module with
    ``(*args, **kwargs)``, even after the implementation module was imported."""
    code = ("import inspect, pydoc\n"
            "import selective_sharing.core as core\n"
            "import selective_sharing.core.training\n"
            "print(inspect.isfunction(core.train), list(inspect.signature(core.train).parameters))\n"
            "print(pydoc.render_doc(core.train, renderer=pydoc.plaintext))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    first, doc = out.split("\n", 1)
    assert first == ("True ['config', 'data', 'model', 'resume', 'overwrite', 'progress', "
                     "'callbacks']")
    assert "train(config: 'RunConfig'" in doc and "Train one run and write its store" in doc
    assert "overwrite : bool" in doc and "function train in module" in doc.split("\n", 1)[0]


# every registered method that fixes no partition before training (tests/test_baselines.py
# trains those): generated from the registry, so a new method is trained here without a listing
@pytest.mark.parametrize("method", methods_where(partition=None))
def test_every_method_trains_and_records(tmp_path, method) -> None:
    run = _run(tmp_path, method, method=method)
    m = store.read_metrics(run)
    assert np.isfinite(m["rmse"].values).all()
    n_groups = int(m["n_groups"])
    assert n_groups == {"mtl_full": 1, "stl": 30, "mtl": 30}.get(method, n_groups)
    assert (len(store.list_events(run)) > 0) == method.startswith("ss_")


def _train_in_subprocess(out: Path, threads: int, *, kill: bool = False,
                         resume: bool = False) -> subprocess.CompletedProcess:
    """Train (or resume) the SMALL run in a fresh process whose torch uses ``threads`` intra-op
    threads (``OMP_NUM_THREADS``, as a user's environment would set it)."""
    if resume:
        cmd = [sys.executable, "-m", "selective_sharing.core.train", "--dataset", "synthetic",
               "--method", "ss_similarity", "--seed", "0", "--out", str(out), "--resume",
               "--no-progress"] + [f"--set={k}={v}" for k, v in SMALL.items()]
    else:
        code = (
            "import sys\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import torch\n"
            f"assert torch.get_num_threads() == {threads}, torch.get_num_threads()\n"
            "from test_train import SMALL, _KillAfterSecondEvent\n"
            "from selective_sharing.core import make_config\n"
            "from selective_sharing.core.training import train\n"
            f"cfg = make_config('synthetic', 'ss_similarity', 0, overrides=SMALL, out={str(out)!r})\n"
            f"train(cfg, progress=False, callbacks={'[_KillAfterSecondEvent()]' if kill else '()'})\n"
        )
        cmd = [sys.executable, "-c", code]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.parametrize(("first", "then"), [(1, 2), (2, 1)])
def test_resume_on_another_thread_count_gives_identical_events_and_metrics(
    tmp_path, first: int, then: int
) -> None:
    """The reference run and the killed run's first part use ``first`` threads; the resume runs
    in a process with ``then`` threads and must use the recorded ``first`` again (issue 10: with
    MKL builds the summed window differs in the last digit between thread counts)."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = _train_in_subprocess(full, first)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _train_in_subprocess(killed, first, kill=True)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert store.read_manifest(killed)["threads"] == first
    proc = _train_in_subprocess(killed, then, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for ea, eb in zip(_events(full), _events(killed), strict=True):
        xr.testing.assert_identical(ea, eb)
    drop = ["wall_time_s"]
    xr.testing.assert_identical(store.read_metrics(full).drop_vars(drop),
                                store.read_metrics(killed).drop_vars(drop))
    manifest = store.read_manifest(killed)
    assert manifest["status"] == "complete" and manifest["threads"] == first


def test_train_restores_the_thread_count_and_the_global_rng(tmp_path) -> None:
    import torch

    before = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _run(tmp_path, "a", **{"train.threads": 1 if before > 1 else 2})
    assert torch.get_num_threads() == before
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)
    assert store.read_manifest(tmp_path / "a")["threads"] == (1 if before > 1 else 2)


class _Stop(Exception):
    pass


class _StopAfterEvent:
    """A callback that interrupts training once ``n`` events (and their checkpoint) are on disk."""

    def __init__(self, n: int):
        self.n = n

    def on_event(self, trainer, result) -> None:
        if trainer.n_events == self.n:
            raise _Stop


def test_merge_warmup_ramps_the_learning_rate_after_a_merge_and_resumes_exactly(tmp_path):
    """``train.merge_warmup=K``: the K steps after an event that merged estimators train at
    lr * k / (K + 1), k = 1..K, then at lr again; a run stopped at the event (its checkpoint
    holds the warm-up still to come) resumes to the uninterrupted run's history and events."""
    over = {"train.steps": 60, "sharing.warmup_steps": 30, "train.merge_warmup": 4}

    def config(name: str):
        return make_config("synthetic", overrides=over, out=str(tmp_path / name))

    reference = train(config("reference"), progress=False)
    h = store.read_history(reference)
    groups = [len(set(a)) for a in h["assignment"].values]
    assert groups[29] == 30 and groups[30] < 30  # the event after step 30 merged
    np.testing.assert_allclose(h["lr"].values[:30], 0.01)
    np.testing.assert_allclose(h["lr"].values[30:34], [0.002, 0.004, 0.006, 0.008])
    np.testing.assert_allclose(h["lr"].values[34:], 0.01)
    with pytest.raises(_Stop):
        train(config("resumed"), progress=False, callbacks=[_StopAfterEvent(1)])
    resumed = train(config("resumed"), progress=False, resume=True)
    xr.testing.assert_identical(store.read_history(resumed), h)
    for a, b in zip(_events(reference), _events(resumed), strict=True):
        xr.testing.assert_identical(a, b)
    drop = ["wall_time_s"]
    xr.testing.assert_identical(store.read_metrics(resumed).drop_vars(drop),
                                store.read_metrics(reference).drop_vars(drop))


@pytest.mark.parametrize("method", ["ss_similarity", "tag"])
def test_batches_without_any_label_train_through(tmp_path, method) -> None:
    """Mini-batches with no labelled entry at all (here 48 of 60 samples carry no label) take a
    step with zero loss gradients instead of failing (``torch.cat`` of no estimator outputs, then
    a loss without a graph); the affinity recorder skips them; the history marks them NaN."""
    from selective_sharing.datasets import from_arrays

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    targets = {f"t{i}": (x[:, i] + 0.1 * rng.standard_normal(60)).astype(np.float32)
               for i in range(4)}
    mask = np.zeros((60, 4), bool)
    mask[:12] = True
    data = from_arrays(x, targets, "regression", mask=mask, seed=0, test_fraction=0.2)
    overrides = {"train.steps": 30, "train.batch_size": 4, "warmup_steps": 10,
                 "baseline.n_groups": 2, "baseline.affinity_every": 1}
    run = train(make_config(data.name, method, 0, overrides=overrides, out=str(tmp_path / "r")),
                data=data, progress=False)
    assert store.read_manifest(run)["status"] == "complete"
    loss = store.read_history(run)["loss"].values
    empty = np.isnan(loss).all(axis=1)
    assert 0 < empty.sum() < len(loss)  # both kinds of batch were met
    assert np.isfinite(loss[~empty]).any(axis=1).all()
    if method == "tag":
        assert 0 < store.read_affinity(run).attrs["recorded_steps"] < 30
