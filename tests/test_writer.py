"""The store's background writer (issue 16): order, renames in the owner's thread, errors,
back-pressure, and the history written as parts while a run trains."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import xarray as xr
from selective_sharing.core import store
from selective_sharing.core.store import BackgroundWriter


def _write(path, text: str, log: list) -> None:
    """An atomic write as the store does it: temp file, then store.replace."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    store.replace(tmp, path)
    log.append((path.name, threading.current_thread().name))


def test_writes_run_in_order_off_the_thread_and_renames_in_the_owner(tmp_path, monkeypatch):
    renamed_by = []
    real = os.replace

    def replace(src, dst):
        renamed_by.append((os.path.basename(dst), threading.current_thread().name))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    log: list = []
    with BackgroundWriter(max_pending=2) as writer:
        for i in range(6):
            writer.submit(_write, tmp_path / f"f{i}", str(i), log)
        writer.barrier()
        assert [n for n, _ in log] == [f"f{i}" for i in range(6)]
        assert {t for _, t in log} == {"selective-sharing-writer"}  # encoded off the step
        # every rename, the commit of a write, happened in this thread, in order
        assert renamed_by == [(f"f{i}", threading.current_thread().name) for i in range(6)]
    assert [(tmp_path / f"f{i}").read_text() for i in range(6)] == [str(i) for i in range(6)]


def test_a_failed_write_stops_later_ones_and_is_raised_once_in_the_owner(tmp_path):
    log: list = []
    writer = BackgroundWriter()

    def fail() -> None:
        raise store.StoreError(tmp_path / "event.nc", "could not be written (disk full)")

    writer.submit(_write, tmp_path / "a", "a", log)
    writer.submit(fail)
    writer.submit(_write, tmp_path / "b", "b", log)  # after the failure: never written
    with pytest.raises(store.StoreError, match="disk full"):
        writer.barrier()
    assert (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(RuntimeError, match="an earlier store write failed .*disk full"):
        writer.submit(_write, tmp_path / "c", "c", log)
    writer.close(raise_errors=False)
    assert not (tmp_path / "c").exists()


def test_a_failed_rename_is_the_write_error(tmp_path):
    writer = BackgroundWriter()
    missing = tmp_path / "no-such-dir" / "f"

    def write() -> None:
        tmp = tmp_path / ".f.tmp"
        tmp.write_text("x")
        store.replace(tmp, missing)

    writer.submit(write)
    with pytest.raises(FileNotFoundError):
        writer.barrier()
    writer.close(raise_errors=False)


def test_back_pressure_does_not_deadlock_and_close_drains(tmp_path):
    """With one slot, submit waits for room while the writer waits for its renames: the owner
    renames while it waits."""
    log: list = []
    writer = BackgroundWriter(max_pending=1)
    for i in range(5):
        writer.submit(_write, tmp_path / f"f{i}", str(i), log)
    writer.close()
    assert [n for n, _ in log] == [f"f{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(_write, tmp_path / "late", "x", log)


def test_poll_commits_what_is_ready_without_waiting(tmp_path):
    log: list = []
    writer = BackgroundWriter()
    writer.submit(_write, tmp_path / "f", "x", log)
    deadline = time.monotonic() + 10
    while not (tmp_path / "f").exists():  # what a training loop does: poll once per step
        assert time.monotonic() < deadline
        writer.poll()
        time.sleep(0.001)
    writer.close()


def _history(steps: range, tasks: int = 3) -> xr.Dataset:
    n = len(steps)
    return store.encode_history(
        step=np.arange(steps.start, steps.stop), loss=np.full((n, tasks), 0.5, np.float32),
        grad_norm=np.ones((n, tasks), np.float32), lr=np.full(n, 1e-3),
        assignment=np.tile(np.arange(tasks), (n, 1)), task_names=["a", "b", "c"])


def test_history_parts_join_and_trim(tmp_path):
    """Each save renames the previous history.nc to a part and writes only its own steps; the
    reader joins them; a resume trims what was written after its checkpoint."""
    whole = _history(range(0, 30))
    for first, last in ((0, 10), (10, 20), (20, 30)):
        store.shelve_history(tmp_path)
        store.write_history(tmp_path, _history(range(first, last)))
    assert [f for f, _ in store.list_history_parts(tmp_path)] == [0, 10]
    xr.testing.assert_identical(store.read_history(tmp_path), whole)
    store.trim_history(tmp_path, from_step=20)  # a resume from the checkpoint at step 20
    assert not store.RunPaths(tmp_path).history.exists()
    xr.testing.assert_identical(store.read_history(tmp_path), _history(range(0, 20)))
    store.write_history(tmp_path, _history(range(20, 30)))
    store.join_history(tmp_path, None)  # the run completes: one history.nc from step 0
    xr.testing.assert_identical(store.read_history(tmp_path), whole)
    store.remove_history_parts(tmp_path)
    assert not store.RunPaths(tmp_path).history_dir.exists()
    xr.testing.assert_identical(store.read_history(tmp_path), whole)


def test_history_parts_that_do_not_join_are_an_error(tmp_path):
    store.write_history(tmp_path, _history(range(5, 10)))
    store.shelve_history(tmp_path)
    store.write_history(tmp_path, _history(range(12, 15)))
    with pytest.raises(store.StoreError, match="consecutive steps"):
        store.read_history(tmp_path)


def test_writes_still_queued_at_exit_are_finished(tmp_path):
    """A script that never closes its writer (a user loop without close()) still gets its
    files: the writer drains at interpreter exit, renaming in the main thread."""
    import subprocess
    import sys

    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from selective_sharing.core import store\n"
        "def slow(path):\n"
        "    time.sleep(0.3)\n"
        "    tmp = path.with_name('.tmp')\n"
        "    tmp.write_text('done')\n"
        "    store.replace(tmp, path)\n"
        "w = store.BackgroundWriter()\n"
        f"w.submit(slow, Path({str(tmp_path / 'late')!r}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "late").read_text() == "done"


def test_a_complete_run_resumed_from_its_last_checkpoint_keeps_its_whole_history(tmp_path):
    """A complete run's parts are folded into history.nc and removed; resuming it from its
    final checkpoint (which holds no pending steps) must keep every step, and a resume from an
    earlier checkpoint cuts only the steps after it."""
    whole = _history(range(0, 30))
    store.write_history(tmp_path, whole)  # joined, parts removed
    store.trim_history(tmp_path, from_step=30)  # the final checkpoint: nothing after it
    xr.testing.assert_identical(store.read_history(tmp_path), whole)
    store.join_history(tmp_path, None)
    xr.testing.assert_identical(store.read_history(tmp_path), whole)
    store.remove_history_parts(tmp_path)
    store.trim_history(tmp_path, from_step=20)  # no part covers steps 0..19: cut, not deleted
    xr.testing.assert_identical(store.read_history(tmp_path), _history(range(0, 20)))
    store.join_history(tmp_path, _history(range(20, 30)))
    xr.testing.assert_identical(store.read_history(tmp_path), whole)


_FIRST_EVENT = """
import sys, torch
from torch import nn
from selective_sharing.core import BranchedModel, SharingScheduler, task_losses
torch.manual_seed(0)
model = BranchedModel(nn.Identity(), nn.Sequential(nn.Linear(7, 6), nn.Tanh()), [1] * 4,
                      hidden_dim=6, seed=3)
opt = torch.optim.SGD(model.parameters(), lr=1e-2)
x, y = torch.randn(16, 7), torch.randn(16, 4)
with SharingScheduler(model, opt, {"warmup_steps": 3, "max_events": 1},
                      run_dir=sys.argv[1]) as sharing:
    loaded = set(sys.modules)
    for _ in range(4):
        task_losses(model(x), y, torch.ones_like(y, dtype=torch.bool), model.tasks).sum().backward()
        opt.step(); opt.zero_grad(); sharing.step()
    sharing.flush()
    assert sharing.n_events == 1
print(sorted(set(sys.modules) - loaded))
"""


def test_the_first_event_imports_nothing_while_training(tmp_path):
    """Issue 16: the first store write of a process imported netCDF4 and dask.distributed
    (about 370 modules) on the writer thread, holding the GIL while the training thread
    stepped (the step after the first event took 150-320 ms instead of 8). The scheduler now
    does that work when it is built: nothing is imported from the first step to the written
    event."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FIRST_EVENT, str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    assert store.list_events(tmp_path / "run")  # the event was written


def test_warm_up_is_quiet_where_no_temporary_directory_can_be_written(monkeypatch):
    import tempfile

    from selective_sharing.core.store import io

    def refuse(*args, **kwargs):
        raise PermissionError("read-only temp")

    monkeypatch.setattr(io, "_WARM", [])
    monkeypatch.setattr(tempfile, "TemporaryDirectory", refuse)
    io.warm_up()  # no error: the first real write pays the cost instead
    assert io._WARM == []
