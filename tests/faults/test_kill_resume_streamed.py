"""A streamed CelebA run (generated fixture images, 2 DataLoader workers) killed with SIGKILL in
the middle of an epoch and resumed gives the events and metrics of an uninterrupted run: the
sampler's position is the checkpointed step count, so the resumed DataLoader reads exactly the
batches the uninterrupted run read from there on (issue 11)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import xarray as xr
from selective_sharing.core import store

pytestmark = pytest.mark.slow
pytest.importorskip("PIL")

# 60 fixture images: 40 train (4 in 6 of the fixture's partitions), batches of 6: 6 batches an
# epoch. Events at steps 20, 31, 42, ...: every checkpoint lies in the middle of an epoch.
SETTINGS = {"image_size": 8, "train.steps": 150, "warmup_steps": 20, "regroup_every": 11,
            "batch_size": 6, "num_workers": 2, "train.threads": 1, "train.device": "cpu"}
PER_EPOCH = 40 // 6


def _cmd(root: Path, out: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "selective_sharing.core.train", "--dataset", "celeba",
           "--method", "ss_similarity", "--out", str(out), "--no-progress",
           f"--set=root={root}"] + [f"--set={k}={v}" for k, v in SETTINGS.items()]
    return cmd + (["--resume"] if resume else [])


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_after_event(cmd: list[str], run: Path, event: int) -> None:
    """Start the run; SIGKILL it as soon as event file ``event`` exists (workers running)."""
    target = run / "events" / f"event_{event:06d}.nc"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not target.exists():
        assert proc.poll() is None, f"the run ended before event {event}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no event in 600 s"
        time.sleep(0.002)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert alive, "the run finished before it could be killed"


def test_celeba_killed_mid_epoch_resumes_to_the_same_events_and_metrics(tmp_path):
    from selective_sharing.datasets import write_celeba_fixture

    root = write_celeba_fixture(tmp_path / "celeba", n_images=60, seed=0)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _run(_cmd(root, reference))
    _kill_after_event(_cmd(root, killed), killed, event=1)
    manifest = store.read_manifest(killed)
    assert manifest["status"] == "running"  # killed: nothing marked it otherwise
    state = torch.load(killed / "checkpoint.pt", map_location="cpu", weights_only=False)
    step = state["step"]
    assert step in (20, 31) and step % PER_EPOCH != 0  # the resume starts mid-epoch
    assert state["sampler"] == {"n": 40, "batch_size": 6, "seed": 0, "world": 1, "position": step}
    _run(_cmd(root, killed, resume=True))
    ref_events, events = store.list_events(reference), store.list_events(killed)
    assert len(events) == len(ref_events) >= 5
    for a, b in zip(ref_events, events):
        try:
            xr.testing.assert_identical(xr.load_dataset(a), xr.load_dataset(b))
        except AssertionError as err:  # which event, from which resume point
            raise AssertionError(f"{b.name} differs (resumed from step {step}): {err}") from None
    drop = ["wall_time_s"]
    xr.testing.assert_identical(store.read_metrics(killed).drop_vars(drop),
                                store.read_metrics(reference).drop_vars(drop))
    xr.testing.assert_identical(store.read_history(killed), store.read_history(reference))
    assert store.read_manifest(killed)["status"] == "complete"
