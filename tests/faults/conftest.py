"""Shared machinery of the fault-injection suite (issue 7): a tiny run, its uninterrupted
reference, a training subprocess that stops at a chosen fault point, and the checks of what any
reader of the run directory sees.

The fault points are the run's *atomic writes* (each store file and the checkpoint is written to
a hidden temp file and renamed over its name) and its *steps*. The reference run records the
ordered list of its writes; a faulted child counts the same writes (the sequence is
deterministic) and stops before the rename (``before``), with its temp file cut in half
(``torn``: a crash in the middle of writing), or right after the rename (``after``), or in the
middle of a step (after the backward pass, before the optimizer update). The parent inspects the
directory as it is at that instant, then delivers SIGKILL (or lets the child go on).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import xarray as xr
from selective_sharing.core import make_config, store
from selective_sharing.core.config import RunConfig

# 12 tasks in 3 planted groups, 60 mini-batch steps, grouping events at steps 20, 30, 40, 50;
# patience 2 makes the hysteresis state cross checkpoints. A few seconds on 2 cores.
TINY = {
    "train.steps": 60,
    "warmup_steps": 20,
    "regroup_every": 10,
    "patience": 2,
    "samples_per_task": 40,
    "n_tasks": 12,
    "n_groups": 3,
    "batch_size": 64,
    "train.threads": 1,
}
EVENT_NAME = re.compile(r"^event_\d{6}\.nc$")
TESTS_DIR = Path(__file__).resolve().parents[1]
CHILD_CODE = (
    f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); "
    "from faults.conftest import child_main; child_main()"
)
WAIT_S = 300  # the longest a child may take to reach its fault point (a loaded CI machine)


def tiny_config(out: str | os.PathLike, **extra: object) -> RunConfig:
    return make_config("synthetic", "ss_similarity", 0, overrides={**TINY, **extra}, out=str(out))


def train_tiny(out: str | os.PathLike, *, resume: bool = False, **kwargs: object) -> Path:
    from selective_sharing.core.training import train

    return train(tiny_config(out), resume=resume, progress=False, **kwargs)


def cli_resume(run: Path) -> subprocess.CompletedProcess:
    """``python -m selective_sharing.core.train ... --resume`` on a tiny run."""
    cmd = [
        sys.executable,
        "-m",
        "selective_sharing.core.train",
        "--dataset",
        "synthetic",
        "--method",
        "ss_similarity",
        "--seed",
        "0",
        "--out",
        str(run),
        "--resume",
        "--no-progress",
    ] + [f"--set={k}={v}" for k, v in TINY.items()]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=WAIT_S)


def run_relative(path: str | os.PathLike, run: str | os.PathLike) -> str | None:
    """``path`` relative to the run directory ('events/event_000001.nc'), None outside it and
    for the lock file (not a store write)."""
    p, r = os.path.abspath(os.fspath(path)), os.path.abspath(os.fspath(run))
    if not p.startswith(r + os.sep):
        return None
    rel = p[len(r) + 1 :].replace(os.sep, "/")
    return None if rel == "run.lock" else rel


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """``train.threads=1`` sets torch's global thread count: give other tests theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test():
    """A test that fails while its :class:`FaultChild` waits at the fault point would leave the
    child paused forever (an orphan once pytest exits): kill every child still running."""
    yield
    while FaultChild.started:
        child = FaultChild.started.pop()
        if child.proc.poll() is None:
            child.kill()


@dataclass
class Reference:
    """The uninterrupted tiny run and the ordered run-relative paths of its atomic writes."""

    run: Path
    writes: list[str]
    events: list[xr.Dataset]
    metrics: xr.Dataset
    history: xr.Dataset
    activations: xr.Dataset


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    import torch

    run = tmp_path_factory.mktemp("reference") / "run"
    writes: list[str] = []
    real_replace = os.replace

    def recording(src, dst, *args, **kwargs):
        rel = run_relative(dst, run)
        if rel is not None:
            writes.append(rel)
        return real_replace(src, dst, *args, **kwargs)

    threads = torch.get_num_threads()
    with mock.patch("os.replace", recording):
        train_tiny(run)
    torch.set_num_threads(threads)
    return Reference(
        run,
        writes,
        [store.read_event(p) for p in store.list_events(run)],
        store.read_metrics(run),
        store.read_history(run),
        store.read_activations(run / "activations" / "final.nc"),
    )


def check_visible_state(run: Path, ref: Reference, statuses: tuple[str, ...]) -> dict:
    """Assert what a reader of ``run`` sees now is consistent and lossless; return the manifest.

    Event files: only ``event_NNNNNN.nc`` names besides hidden temp files, numbered 0..n-1 with
    no gap or duplicate, each opening cleanly and identical to the reference's; the manifest
    lists all of them but possibly the newest (written, not yet recorded). Every other store
    file and the checkpoint open cleanly.
    """
    from selective_sharing.core.checkpoint import load_checkpoint

    manifest = store.read_manifest(run)
    assert manifest["status"] in statuses, (manifest["status"], manifest.get("error"))
    events_dir = run / "events"
    names = sorted(os.listdir(events_dir)) if events_dir.is_dir() else []
    visible = [n for n in names if not n.startswith(".")]
    assert all(EVENT_NAME.match(n) for n in visible), names
    assert visible == [f"event_{i:06d}.nc" for i in range(len(visible))], names
    assert visible == [p.name for p in store.list_events(run)]
    for i, name in enumerate(visible):
        xr.testing.assert_identical(store.read_event(events_dir / name), ref.events[i])
    listed = manifest["events"]
    assert listed == visible[: len(listed)] and len(visible) - len(listed) in (0, 1), listed
    if (run / "checkpoint.pt").exists():
        state = load_checkpoint(run / "checkpoint.pt")
        assert len(listed) - 1 <= state["sharing"]["n_events"] <= len(listed)
    for name in ("history.nc", "metrics.nc"):
        if (run / name).exists():
            store.open_store_dataset(run / name)
    for path in store.list_activations(run):
        store.read_activations(path)
    return manifest


def assert_matches_reference(run: Path, ref: Reference) -> None:
    """The finished run lost nothing: same events, history, activations, and metrics but for
    the wall time; the manifest is complete and lists every event. (Its ``error`` is not
    checked: a resumed run keeps the error of the failure it resumed from, see
    ``test_resumed_run_clears_the_old_error``.)"""
    manifest = check_visible_state(run, ref, ("complete",))
    events = store.list_events(run)
    assert len(events) == len(ref.events) and manifest["events"] == [p.name for p in events]
    drop = ["wall_time_s"]
    xr.testing.assert_identical(
        store.read_metrics(run).drop_vars(drop), ref.metrics.drop_vars(drop)
    )
    xr.testing.assert_identical(store.read_history(run), ref.history)
    xr.testing.assert_identical(
        store.read_activations(run / "activations" / "final.nc"), ref.activations
    )


class FaultChild:
    """A tiny training run in a subprocess that stops at ``fault`` and waits (see module doc).

    ``fault``: ``{"kind": "none"}``, ``{"kind": "step", "at": k}``, ``{"kind": "write", "at": n,
    "mode": "before" | "torn" | "after"}`` or ``{"kind": "fsize", "at": n, "limit": bytes}``
    (from write n on, files may not grow past ``limit`` bytes: a full disk, as the kernel
    reports it). ``wrap`` prefixes the command (e.g. ``unshare``).
    """

    #: Children started and not yet reaped by the autouse fixture that kills leftovers.
    started: list[FaultChild] = []

    def __init__(
        self,
        run: Path,
        fault: dict,
        workdir: Path,
        *,
        resume: bool = False,
        wrap: tuple[str, ...] = (),
    ):
        tag = uuid.uuid4().hex[:8]
        self.marker = workdir / f"marker-{tag}.json"
        self.result = workdir / f"result-{tag}.json"
        self.log = workdir / f"child-{tag}.log"
        spec = {
            "out": str(run),
            "resume": resume,
            "fault": fault,
            "marker": str(self.marker),
            "result": str(self.result),
        }
        env = {**os.environ, "SS_FAULT_SPEC": json.dumps(spec)}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*wrap, sys.executable, "-c", CHILD_CODE],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        FaultChild.started.append(self)

    def wait_paused(
        self,
        watch: Reference | None = None,
        run: Path | None = None,
        statuses: tuple[str, ...] = ("running",),
    ) -> dict:
        """Wait until the child reached its fault point; return what it reported there. With
        ``watch``, check ``run``'s events and status at every poll meanwhile."""
        seen: set[str] = set()
        deadline = time.monotonic() + WAIT_S
        while not self.marker.exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"child exited ({self.proc.returncode}) before its fault "
                    f"point:\n{self.log.read_text()[-3000:]}"
                )
            assert time.monotonic() < deadline, "child did not reach its fault point in time"
            if watch is not None:
                _watch(run, watch, seen, statuses)
            time.sleep(0.02)
        return json.loads(self.marker.read_text())

    def kill(self) -> int:
        """SIGKILL, then reap (a zombie would still look alive to ``kill(pid, 0)``)."""
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=60)

    def go_on(self) -> int:
        """Let a paused child continue; return its exit code."""
        self.marker.with_name(self.marker.name + ".go").touch()
        return self.proc.wait(timeout=WAIT_S)

    def outcome(self) -> dict:
        """The exception the child's training raised (``{"type": None}``: none)."""
        return json.loads(self.result.read_text())


def _watch(run: Path, ref: Reference, seen: set[str], statuses: tuple[str, ...]) -> None:
    events_dir = run / "events"
    names = os.listdir(events_dir) if events_dir.is_dir() else []
    for name in names:
        if name.startswith(".") or name in seen:
            continue  # hidden temp files of unfinished writes
        assert EVENT_NAME.match(name), f"partial or foreign event file visible: {name}"
        xr.testing.assert_identical(
            store.read_event(events_dir / name), ref.events[int(name[6:12])]
        )
        seen.add(name)
    if (run / "manifest.json").exists():
        assert store.read_manifest(run)["status"] in statuses


# ----------------------------------------------------------------------------- in the child


def child_main() -> None:
    """Entry point of :class:`FaultChild`'s subprocess."""
    from selective_sharing.core.training import train

    spec = json.loads(os.environ["SS_FAULT_SPEC"])
    run, marker = Path(spec["out"]), Path(spec["marker"])
    _install_fault(spec["fault"], run, marker)
    outcome: dict = {"type": None}
    try:
        train(tiny_config(run), resume=spec["resume"], progress=False)
    except Exception as err:  # noqa: BLE001 - any failure is reported to the parent
        outcome = {
            "type": type(err).__name__,
            "message": str(err),
            "notes": list(getattr(err, "__notes__", [])),
        }
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    Path(spec["result"]).write_text(json.dumps(outcome))
    sys.exit(0 if outcome["type"] is None else 1)


def _install_fault(fault: dict, run: Path, marker: Path) -> None:
    import selective_sharing.core.trainer as train_module

    real_replace = os.replace
    state = {"writes": 0, "step": -1}

    def pause(info: dict) -> None:
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps(info))
        real_replace(tmp, marker)
        go = marker.with_name(marker.name + ".go")
        while not go.exists():  # the parent kills us here, or lets us go on
            time.sleep(0.005)

    def full_disk(limit: int) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    def replace(src, dst, *args, **kwargs):
        rel = run_relative(dst, run)
        if rel is None:
            return real_replace(src, dst, *args, **kwargs)
        n = state["writes"]
        state["writes"] += 1
        hit = fault["kind"] == "write" and fault["at"] == n
        info = {"write": n, "file": rel, "tmp": os.fspath(src), "pid": os.getpid()}
        if hit and fault["mode"] == "torn":
            os.truncate(src, os.path.getsize(src) // 2)
        if hit and fault["mode"] != "after":
            pause(info)
        out = real_replace(src, dst, *args, **kwargs)
        if hit and fault["mode"] == "after":
            pause(info)
        if fault["kind"] == "fsize" and fault["at"] == n + 1:
            full_disk(fault["limit"])
        return out

    if fault["kind"] == "fsize" and fault["at"] == 0:
        full_disk(fault["limit"])
    os.replace = replace
    real_step, real_norms = train_module.Trainer._step, train_module.entity_grad_norms

    def step(self) -> None:
        state["step"] = self.step
        return real_step(self)

    def norms(model):  # called after the backward pass, before the optimizer update
        if fault["kind"] == "step" and state["step"] == fault["at"]:
            pause({"step": state["step"], "pid": os.getpid()})
        return real_norms(model)

    train_module.Trainer._step = step
    train_module.entity_grad_norms = norms
