"""Killed training loses nothing (issue 7, item 1): SIGKILL at seeded random points, then resume.

Each trial trains the tiny run in a subprocess that stops at a fault point drawn with the
trial's seed: in the middle of a step, or in one of the run's atomic writes (an event file, the
checkpoint, or another store file: manifest, history, activations, metrics), before the rename,
with the temp file torn in half, or right after the rename. While the child trains, the parent
polls the events directory; at the fault point it checks the directory as any reader sees it,
delivers SIGKILL, checks again, and resumes (in-process, through the command line, or in a
second child that is killed again). Every trial must end identical to the uninterrupted
reference run.

Trials 0 and 1 (a torn event write, a torn checkpoint write) run in the default suite; the
other 10 are marked slow. Over the 12 trials every category meets every write mode, and
every third trial kills the resumed run a second time where steps remain (15 SIGKILLs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from selective_sharing.core import store
from selective_sharing.core.checkpoint import load_checkpoint
from selective_sharing.core.rundir import RunDirError

from .conftest import (
    TINY,
    FaultChild,
    Reference,
    assert_matches_reference,
    check_visible_state,
    cli_resume,
    train_tiny,
)

CATEGORIES = ("event", "checkpoint", "step", "other")
MODES = ("torn", "before", "after")
N_TRIALS = 12
QUICK = (0, 1)
TRIALS = [t if t in QUICK else pytest.param(t, marks=pytest.mark.slow) for t in range(N_TRIALS)]


def plan(trial: int, ref: Reference) -> dict:
    """The first fault of ``trial``: the category cycles, the point within it is seeded."""
    rng = np.random.default_rng([7, trial])
    category = CATEGORIES[trial % len(CATEGORIES)]
    if category == "step":
        return {"kind": "step", "at": int(rng.integers(0, TINY["train.steps"]))}
    kinds = {
        "event": ("events/",),
        "checkpoint": ("checkpoint.pt",),
        "other": ("manifest.json", "history.nc", "metrics.nc", "activations/"),
    }
    points = [i for i, w in enumerate(ref.writes) if w.startswith(kinds[category])]
    mode = MODES[(trial // len(CATEGORIES)) % len(MODES)]
    return {"kind": "write", "at": int(rng.choice(points)), "mode": mode}


def status_at(fault: dict, ref: Reference) -> tuple[str, ...]:
    """The manifest status a reader must see at the fault point."""
    last = fault["kind"] == "write" and fault["at"] == len(ref.writes) - 1
    return ("complete",) if last and fault["mode"] == "after" else ("running",)


def kill_at(run, fault: dict, ref: Reference, workdir, *, resume: bool = False) -> dict:
    """Run a child to ``fault``, check the directory there, SIGKILL it, check again."""
    child = FaultChild(run, fault, workdir, resume=resume)
    statuses = status_at(fault, ref) if not resume else ("running",)
    info = child.wait_paused(watch=ref, run=run, statuses=("running", *statuses))
    if fault["kind"] == "write" and not resume:  # the write sequence is deterministic
        assert info["file"] == ref.writes[fault["at"]]
    if fault["kind"] == "write" and fault["mode"] != "after":
        tmp = Path(info["tmp"])
        assert tmp.name.startswith(".") and tmp.exists()  # mid-write: hidden, unfinished
    has_manifest = (run / "manifest.json").exists()
    if has_manifest:
        check_visible_state(run, ref, statuses)
    assert child.kill() == -9
    if has_manifest:
        check_visible_state(run, ref, statuses)
    # The dead child's lock is left behind, stale: the resume must take it over.
    assert (run / "run.lock").read_text().strip() == str(info["pid"])
    return info


@pytest.mark.parametrize("trial", TRIALS)
def test_killed_run_resumes_to_the_reference(trial, reference, tmp_path) -> None:
    run = tmp_path / "run"
    fault = plan(trial, reference)
    kill_at(run, fault, reference, tmp_path)
    if not (run / "manifest.json").exists():
        # Killed before the run's first manifest was committed: there is no run to resume.
        with pytest.raises(RunDirError, match="cannot --resume .* holds no run"):
            train_tiny(run, resume=True)
        train_tiny(run)
    elif trial % 3 == 2:  # kill the resumed run again, mid-step, then resume once more
        ckpt = run / "checkpoint.pt"
        start = load_checkpoint(ckpt)["step"] if ckpt.exists() else 0
        rng = np.random.default_rng([11, trial])
        if start < TINY["train.steps"]:
            again = {"kind": "step", "at": int(rng.integers(start, TINY["train.steps"]))}
            kill_at(run, again, reference, tmp_path, resume=True)
        train_tiny(run, resume=True)
    elif trial % 4 == 3:
        proc = cli_resume(run)
        assert proc.returncode == 0, proc.stderr
    else:
        train_tiny(run, resume=True)
    assert_matches_reference(run, reference)
    assert not (run / "run.lock").exists()


def test_plan_covers_every_fault_category(reference) -> None:
    faults = [plan(t, reference) for t in range(N_TRIALS)]
    files = {reference.writes[f["at"]].split("/")[0] for f in faults if f["kind"] == "write"}
    assert {"events", "checkpoint.pt"} <= files and len(files) >= 4
    assert {f["mode"] for f in faults if f["kind"] == "write"} == set(MODES)
    assert sum(f["kind"] == "step" for f in faults) == N_TRIALS // len(CATEGORIES)
    # every write the reference made is a store file or the checkpoint, in a fixed order
    assert reference.writes[0] == "manifest.json" and reference.writes[-1] == "manifest.json"
    assert sum(w.startswith("events/") for w in reference.writes) == len(reference.events)


def test_resume_removes_the_temp_files_of_killed_writers(reference, tmp_path) -> None:
    run = shutil.copytree(reference.run, tmp_path / "run")
    store.update_manifest(run, status="running")
    torn = [run / "events" / ".event_000003.nc.tmp-999999", run / ".checkpoint.pt.tmp-999999"]
    for path in torn:  # what a writer killed mid-write leaves: a hidden, torn temp file
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    train_tiny(run, resume=True)
    assert_matches_reference(run, reference)
    assert not [p for p in run.rglob(".*") if ".tmp-" in p.name]
