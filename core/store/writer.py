"""Store writes off the training step: one background thread prepares them, in order.

The training thread hands each write to :class:`BackgroundWriter` (:meth:`~BackgroundWriter.submit`)
and goes on with the next step. One writer thread runs the writes in submission order: it
encodes, compresses and writes each file to its temp name and fsyncs it. The last act of every
atomic write, the rename of the temp file over the real name (:func:`replace`), is handed back
to the training thread, which does it at its next :meth:`~BackgroundWriter.poll` (every
``SharingScheduler.step``) or while it waits in :meth:`~BackgroundWriter.barrier`. So:

- files appear in exactly the order they were submitted, each whole (an event file before the
  history part and the checkpoint that count it), and never two renames at once;
- the next write is prepared only after the previous one is renamed, so a failure (a full
  disk, a read-only directory) hits the same write it would hit in a synchronous run;
- after a failed write nothing later is written, and the failure is raised in the training
  thread at its next :meth:`~BackgroundWriter.poll`, :meth:`~BackgroundWriter.submit` or
  :meth:`~BackgroundWriter.barrier`, as the exception the write raised (a
  :class:`~.errors.StoreError` or ``CheckpointError`` naming the file);
- everything that touches the run directory's names happens in the training thread, where
  signals and process-wide state (resource limits, patched functions) behave as in a
  synchronous run.

A process killed while writes are pending loses them, and no more: the disk holds the files of
some prefix of the submitted writes (plus, at most, one hidden temp file that a resume
deletes), and a resume starts from the newest checkpoint in that prefix, losing at most the
steps since that checkpoint's event.

At most ``max_pending`` writes wait; a further :meth:`~BackgroundWriter.submit` blocks (still
renaming what is ready) until one is done, so a disk slower than training holds training back
instead of filling memory.

Measured (issue 16, T=40, 5k-parameter estimators, 2-core CPU): an event's files cost about
110 ms of the training thread when written in it (event file 78, checkpoint 18, history 13):
8% of 100 steps of 13 ms. Submitted here they cost the training thread a copy of the state and
three renames; the rest runs on the other core, mostly outside the GIL (zlib and HDF5 in the
netCDF4 C library, ``torch.save``'s file writes).
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import warnings
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

#: Writes that may wait before :meth:`BackgroundWriter.submit` blocks.
MAX_PENDING = 8

_local = threading.local()


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace(src, dst)``, the commit of an atomic write. On a writer thread it is done by
    the thread that owns the writer, in order (see the module documentation), and its error is
    raised here."""
    writer = getattr(_local, "writer", None)
    if writer is None:
        os.replace(src, dst)
    else:
        writer._rename_in_owner(src, dst)


def _close_at_exit(ref: weakref.ref) -> None:
    writer = ref()
    if writer is not None and not writer._closed:
        try:
            writer.close()
        except BaseException as err:  # noqa: BLE001 - at exit: report, do not mask the exit
            warnings.warn(f"{writer.name}: a store write failed at exit ({type(err).__name__}: "
                          f"{err})", RuntimeWarning, stacklevel=1)


class _Rename:
    __slots__ = ("src", "dst", "done", "error")

    def __init__(self, src: str | os.PathLike, dst: str | os.PathLike):
        self.src, self.dst = src, dst
        self.done = threading.Event()
        self.error: BaseException | None = None


class BackgroundWriter:
    """Runs submitted writes in order on one daemon thread; the renames that commit them run in
    the thread that submits. See the module documentation.

    Parameters
    ----------
    name : str
        The thread's name (shown by debuggers and ``py-spy``).
    max_pending : int
        Writes that may wait before :meth:`submit` blocks (>= 1).
    """

    def __init__(self, name: str = "selective-sharing-writer", max_pending: int = MAX_PENDING):
        if max_pending < 1:
            raise ValueError(f"invalid max_pending={max_pending!r}: it must be >= 1")
        self.name = name
        self._tasks: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._renames: queue.SimpleQueue[_Rename] = queue.SimpleQueue()
        self._wake = threading.Event()  # a rename is waiting, or a write finished
        self._error: BaseException | None = None
        self._raised = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._abandoned = False  # the owner stopped servicing renames

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        _local.writer = self
        while True:
            item = self._tasks.get()
            try:
                if item is None:
                    return
                fn, args, kwargs = item
                if self._error is None:  # after a failure nothing later is written
                    try:
                        fn(*args, **kwargs)
                    except BaseException as err:  # raised in the submitting thread
                        self._error = err
            finally:
                self._tasks.task_done()
                self._wake.set()

    def _rename_in_owner(self, src: str | os.PathLike, dst: str | os.PathLike) -> None:
        """(writer thread) Have the owner rename, wait for it, raise its error here."""
        request = _Rename(src, dst)
        self._renames.put(request)
        self._wake.set()
        while not request.done.wait(0.1):
            if self._abandoned:  # the owner stopped (an error, a signal): no rename comes
                raise RuntimeError(f"{self.name} was closed before {dst} was renamed into "
                                   "place; its temp file is left for a resume to delete")
        if request.error is not None:
            raise request.error

    # -- the owner's side --------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Writes submitted and not finished."""
        return self._tasks.unfinished_tasks

    def poll(self) -> None:
        """Do the renames that are ready (cheap when none is); raise the error of a failed
        write. ``SharingScheduler.step`` calls it every step."""
        while True:
            try:
                request = self._renames.get_nowait()
            except queue.Empty:
                break
            try:
                os.replace(request.src, request.dst)
            except BaseException as err:  # the writer wraps it (StoreError, CheckpointError)
                request.error = err
            finally:
                request.done.set()
        self._raise_error()

    def _fail_waiting_renames(self) -> None:
        """Fail the renames still waiting (the writer is abandoned); raise nothing."""
        while True:
            try:
                request = self._renames.get_nowait()
            except queue.Empty:
                return
            request.error = RuntimeError(f"{self.name} was closed before the rename")
            request.done.set()

    def _raise_error(self) -> None:
        err = self._error
        if err is None:
            return
        if not self._raised:
            self._raised = True
            raise err
        raise RuntimeError(f"an earlier store write failed ({type(err).__name__}: {err}); "
                           "nothing after it was written") from err

    def _wait(self) -> None:
        self._wake.wait(0.05)
        self._wake.clear()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)`` after every earlier write. Its atomic writes must
        commit through :func:`replace` (the store's and checkpoint writers do).

        The arguments must not change after the call (pass copies of live state).

        Raises
        ------
        BaseException
            The error of an earlier write that failed (raised once; later calls raise a
            RuntimeError naming it): nothing after a failed write is written.
        RuntimeError
            The writer is closed.
        """
        if self._closed:
            raise RuntimeError(f"{self.name} is closed: no more writes")
        self.poll()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
            # a loop that ends without close() (a user's script) still gets its last writes
            atexit.register(_close_at_exit, weakref.ref(self))
        while True:
            try:
                self._tasks.put_nowait((fn, args, kwargs))
                return
            except queue.Full:  # wait for room, renaming what the writer has ready
                self._wait()
                self.poll()

    def barrier(self) -> None:
        """Wait until every submitted write is on disk; raise the error of one that failed."""
        while self._tasks.unfinished_tasks:
            self.poll()
            self._wait()
        self.poll()

    def close(self, *, raise_errors: bool = True) -> None:
        """Finish the pending writes and stop the thread. ``raise_errors=False`` (closing
        because of another error): a failed write is not raised, the first error stays on top."""
        if self._closed:
            return
        try:
            while self._tasks.unfinished_tasks:
                try:
                    self.poll()
                except BaseException:
                    if raise_errors:
                        raise
                self._wait()
            if raise_errors:
                self.poll()
        finally:  # also when an exception (a signal, KeyboardInterrupt) stopped the loop above
            self._closed = True
            if self._thread is not None:
                if self._tasks.unfinished_tasks:  # nothing more will be renamed
                    self._abandoned = True
                    self._error = self._error or RuntimeError(f"{self.name} was closed early")
                    self._fail_waiting_renames()
                self._tasks.put(None)
                self._thread.join()
                self._thread = None

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(raise_errors=exc is None)


__all__ = ["MAX_PENDING", "BackgroundWriter", "replace"]
