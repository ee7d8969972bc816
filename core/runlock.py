"""One writer per run directory: a lock file holding the writer's pid.

A second process that tries to train into the same directory gets :class:`RunLockedError`.
A lock left by a process that no longer exists (killed with SIGKILL, say) is stale and is taken
over, so ``--resume`` after a crash needs no manual cleanup.
"""

from __future__ import annotations

import os
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Context manager: ``with RunLock(run_dir): ...`` holds ``run_dir/run.lock``."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "run.lock"

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "0")
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self) -> None:
        me = os.getpid()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = self._holder()
            if pid and pid != me and _alive(pid):
                raise RunLockedError(
                    f"{self.path.parent} is being written by process {pid} (lock file "
                    f"{self.path}); wait for it to finish, or train into another --out") from None
            tmp = self.path.with_name(f".run.lock.tmp-{me}")
            tmp.write_text(str(me))
            os.replace(tmp, self.path)  # stale lock of a dead process: take it over
            return
        with os.fdopen(fd, "w") as f:
            f.write(str(me))

    def release(self) -> None:
        if self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
