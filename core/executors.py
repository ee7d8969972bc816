"""Executors of the run grid: a local process pool, a dask.distributed cluster, or serial.

All offer ``submit(job) -> future``, ``wait_any(futures) -> done set``, ``slots`` (jobs run at
once) and ``close()``; :func:`selective_sharing.core.grid.run_grid` drives them the same way.
No torch here: workers import the training code when they run a job.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from .grid import Job, run_job


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the grid's process dies (even by SIGKILL),
    so a killed grid leaves no orphan training on; its run stays ``running`` and is redone."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if sys.platform.startswith("linux"):  # the kernel kills us the moment the parent dies
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the watcher thread below still works
            pass
    if os.getppid() != parent:  # the parent died before we got here
        os._exit(1)

    def watch() -> None:  # the portable fallback (macOS, no prctl): polls the parent
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class LocalPool:
    """A process pool (spawned workers: the parent never forks a process with torch loaded)."""

    def __init__(self, workers: int):
        self.workers, self.slots = workers, workers
        self._pool = self._new()

    def _new(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, job: Job) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._pool.submit(run_job, job)
        except BrokenProcessPool:  # a worker died (out of memory, killed): start a new pool
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new()
            return self._pool.submit(run_job, job)

    def wait_any(self, futures: Iterable[Any]) -> set:
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(list(futures), return_when=FIRST_COMPLETED).done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskPool:
    """dask.distributed: the scheduler at ``address``, else a LocalCluster of ``workers``
    single-threaded worker processes. Workers need this package installed (they import it)."""

    def __init__(self, workers: int, address: str | None):
        from dask.distributed import Client, LocalCluster

        self.cluster = None
        if address is None:
            self.cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        self.client = Client(address or self.cluster)
        self.slots = sum(self.client.nthreads().values()) or workers

    def submit(self, job: Job) -> Any:
        return self.client.submit(run_job, job, pure=False, key=f"{job.name}-{time.time_ns()}")

    def wait_any(self, futures: Iterable[Any]) -> set:
        from dask.distributed import wait

        return set(wait(list(futures), return_when="FIRST_COMPLETED").done)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class SerialPool:
    """Runs each job in this process when it is submitted (debugging, tests): no workers."""

    slots = 1

    def submit(self, job: Job) -> Any:
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(run_job(job))
        return future

    def wait_any(self, futures: Iterable[Any]) -> set:
        return set(futures)

    def close(self) -> None:
        pass


def make_pool(executor: str, workers: int, scheduler: str | None) -> Any:
    """The pool of ``executor`` (``local``, ``dask`` or ``serial``)."""
    if executor == "dask":
        return DaskPool(workers, scheduler)
    return LocalPool(workers) if executor == "local" else SerialPool()
