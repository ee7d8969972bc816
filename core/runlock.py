"""One writer per run directory: ``run.lock``, locked with ``flock`` and holding the writer's pid.

A second process that tries to train into the same directory gets :class:`RunLockedError`,
whose message names the pid of the process writing it. The operating system releases an
``flock`` when its holder dies, however it dies (SIGKILL included), so a lock file left by a dead
process is stale by construction and is taken over: ``--resume`` after a crash needs no manual
cleanup. Using the kernel lock rather than "is this pid alive?" also makes the takeover
race-free (two resumers of one stale run cannot both win) and immune to pid reuse and to
killed-but-unreaped (zombie) holders.

Where ``flock`` is unavailable (Windows, some network file systems) the pid alone decides: the
lock is taken with ``O_EXCL`` and a lock whose pid no longer exists is taken over.

A forked child (a DataLoader worker) does not hold its parent's lock: an ``flock`` belongs to
the open file, which a fork shares, so a worker orphaned by a SIGKILLed trainer would keep the
run locked until it noticed (seconds) and a ``--resume`` right after the kill would be refused.
Every held lock is closed in the child right after the fork (``os.register_at_fork``).
"""

from __future__ import annotations

import errno
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_HELD: weakref.WeakSet = weakref.WeakSet()  # the RunLocks this process holds


def _forget_in_child() -> None:
    """After a fork, in the child: close the inherited lock files and forget the locks, so the
    child neither keeps the run locked nor removes the lock file of its parent."""
    for lock in list(_HELD):
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
        lock._fd, lock._owner = None, False
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (macOS): existence is all we can tell
        return True


def _not_writable(err: OSError, path: Path) -> OSError:
    """``err`` again (same type and errno), with a message that says what to fix."""
    return type(err)(
        err.errno,
        f"cannot create or write the lock file ({err.strerror}); the run directory "
        f"{path.parent} must be writable: check its permissions, read-only mounts and free space",
        str(path),
    )


class RunLock:
    """Context manager: ``with RunLock(run_dir): ...`` holds ``run_dir/run.lock``.

    Raises
    ------
    RunLockedError
        Another live process holds the lock; the message names its pid.
    OSError
        The lock file cannot be created (read-only directory, no space): the message names the
        file and the directory.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "run.lock"
        self._fd: int | None = None
        self._owner = False  # fallback mode: we created or took over the lock file

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "0") or None
        except (FileNotFoundError, ValueError):
            return None

    def _live_holder(self) -> int | None:
        """The pid in the lock file if that process is alive, else None."""
        pid = self._holder()
        return pid if pid and alive(pid) else None

    def _locked_error(self, pid: int | None) -> RunLockedError:
        who = f"process {pid}" if pid else "another process (its pid is not written yet)"
        if pid == os.getpid():
            who += " (this process: a second writer in the same process)"
        return RunLockedError(
            f"{self.path.parent} is being written by {who} (lock file {self.path}); wait for "
            "it to finish, or train into another --out"
        )

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunLockedError` naming the holder's pid."""
        if self._fd is not None or self._owner:
            raise RuntimeError(f"this RunLock already holds {self.path}")
        try:
            if fcntl is None or not self._acquire_flock():
                self._acquire_by_pid()
        except OSError as err:  # RunLockedError is no OSError: it passes through
            raise _not_writable(err, self.path) from err

    def _acquire_flock(self, timeout: float = 2.0) -> bool:
        """True once held; False when this file system has no flock (use the pid fallback).

        A busy lock whose file names a live process is refused at once. Otherwise the lock is
        tried again for up to ``timeout`` seconds: its holder may have taken it and not yet
        written its pid, or the holder is gone and a process forked from it still shares the
        lock until its at-fork hook closes it (a fork moments before a SIGKILL: on a busy
        machine the child may run that hook only after the kill)."""
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in _BUSY:
                    pid = self._live_holder()
                    if pid is not None or time.monotonic() > deadline:
                        raise self._locked_error(pid or self._holder()) from None
                    time.sleep(0.005)
                    continue
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return False
                raise
            # The holder may have released (and unlinked) the file between our open and our
            # flock: then we hold a lock on a file nobody else sees. Retry on the current one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)  # a stale lock's pid is overwritten: the takeover
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _HELD.add(self)
        return True

    def _acquire_by_pid(self) -> None:
        me = os.getpid()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = self._holder()
            if pid and alive(pid):
                raise self._locked_error(pid) from None
            tmp = self.path.with_name(f".run.lock.tmp-{me}")
            tmp.write_text(str(me))
            os.replace(tmp, self.path)  # stale lock of a dead process: take it over
        else:
            with os.fdopen(fd, "w") as f:
                f.write(str(me))
        self._owner = True
        _HELD.add(self)

    def release(self) -> None:
        """Give the lock back and remove the lock file (no-op when not held)."""
        _HELD.discard(self)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                self.path.unlink(missing_ok=True)  # while still locked: nobody else owns it
            except OSError:
                pass  # a read-only directory now: the unlocked file is stale, which is fine
            finally:
                os.close(fd)
        elif self._owner:
            self._owner = False
            if self._holder() == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
