"""One rank of a 2-process (gloo) run killed with SIGKILL: the run is marked failed naming that
rank, the events written before it stay intact, a resume with another process count is refused,
and ``--resume`` with 2 processes ends with the events and metrics of an uninterrupted run
(issue 12)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import xarray as xr
from selective_sharing.core import store

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(),
                                 reason="torch.distributed is not available")]

# events every 40 steps over 400: the kill after event 1 leaves most of the run to do
SETTINGS = {"train.steps": 400, "warmup_steps": 40, "regroup_every": 40}


def _cmd(out: Path, nproc: int, resume: bool = False) -> list[str]:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    cmd = launch + ["-m", "selective_sharing.core.train", "--dataset", "synthetic", "--method",
                    "ss_similarity", "--seed", "0", "--out", str(out), "--no-progress"]
    return cmd + [f"--set={k}={v}" for k, v in SETTINGS.items()] + (["--resume"] * resume)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker of ``torchrun`` (pid ``parent``) that has ``RANK=rank``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            ppid = int(next(l.split()[1] for l in status.splitlines() if l.startswith("PPid")))
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def test_a_killed_rank_fails_the_run_by_name_and_resume_completes(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    done = subprocess.run(_cmd(reference, 2), capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(_cmd(run, 2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 600
    while not (run / "events" / "event_000001.nc").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0

    manifest = store.read_manifest(run)
    assert manifest["status"] == "failed"
    assert f"rank 1 (pid {victim} on " in manifest["error"], manifest["error"]
    events, ref_events = store.list_events(run), store.list_events(reference)
    assert 2 <= len(events) < len(ref_events)
    for a, b in zip(events, ref_events):  # what was written before the kill is intact
        xr.testing.assert_identical(xr.load_dataset(a), xr.load_dataset(b))

    one = subprocess.run(_cmd(run, 1, resume=True), capture_output=True, text=True,
                         timeout=600, check=False)
    assert one.returncode != 0
    assert "was trained by 2 process(es) and this resume has 1" in one.stderr
    assert store.read_manifest(run)["status"] == "failed"  # the refusal changed nothing

    resumed = subprocess.run(_cmd(run, 2, resume=True), capture_output=True, text=True,
                             timeout=900, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = store.list_events(run)
    assert len(events) == len(ref_events)
    for a, b in zip(events, ref_events):
        xr.testing.assert_identical(xr.load_dataset(a), xr.load_dataset(b))
    drop = ["wall_time_s"]
    xr.testing.assert_identical(store.read_metrics(run).drop_vars(drop),
                                store.read_metrics(reference).drop_vars(drop))
    assert store.read_manifest(run)["status"] == "complete"
