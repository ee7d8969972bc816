"""A run's events do not depend on when the store's writer thread runs.

The writer completes each event's record (its pooled k-means) under ``single_threaded`` while
the training thread may be deciding the next event under it too. Here both are slowed down
(a sleep in the writer's k-means, a longer one in the decision) so that the writer enters
first and the training thread leaves last, the order that once handed the writer's OpenMP
thread count (2 on a 2-core machine) to training (1 thread in this run): every event from the
third on then differed in its last bits from the uninterrupted run's. The events must be
identical to those of the same run left to its own timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from selective_sharing.core import store

pytestmark = pytest.mark.slow
pytest.importorskip("PIL")

SETTINGS = {"image_size": 8, "train.steps": 80, "warmup_steps": 20, "regroup_every": 11,
            "batch_size": 6, "num_workers": 0, "train.threads": 1, "train.device": "cpu"}

# The CLI with the writer's k-means and the training thread's decision slowed down (sleeps
# inside single_threaded): the writer is still inside when the next decision enters, and
# leaves before it.
SLOWED = """
import runpy, sys, time
from selective_sharing.core.grouping import event
kmeans, decide = event.pooled_kmeans, event._decide
def slow_kmeans(*a, **k):
    time.sleep(0.3)
    return kmeans(*a, **k)
def slow_decide(*a, **k):
    time.sleep(0.6)
    return decide(*a, **k)
event.pooled_kmeans, event._decide = slow_kmeans, slow_decide
sys.argv = ["train"] + sys.argv[1:]
runpy.run_module("selective_sharing.core.train", run_name="__main__")
"""


def _args(root: Path, out: Path) -> list[str]:
    return (["--dataset", "celeba", "--method", "ss_similarity", "--out", str(out),
             "--no-progress", f"--set=root={root}"]
            + [f"--set={k}={v}" for k, v in SETTINGS.items()])


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_events_do_not_depend_on_the_writer_threads_timing(tmp_path):
    from selective_sharing.datasets import write_celeba_fixture

    root = write_celeba_fixture(tmp_path / "celeba", n_images=60, seed=0)
    reference, slowed = tmp_path / "reference", tmp_path / "slowed"
    _run([sys.executable, "-m", "selective_sharing.core.train", *_args(root, reference)])
    _run([sys.executable, "-c", SLOWED, *_args(root, slowed)])
    ref_events, events = store.list_events(reference), store.list_events(slowed)
    assert len(events) == len(ref_events) >= 5
    differing = [i for i, (a, b) in enumerate(zip(ref_events, events))
                 if not xr.load_dataset(a).identical(xr.load_dataset(b))]
    assert differing == []
