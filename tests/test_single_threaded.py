"""``single_threaded`` limits OpenMP per thread and BLAS per process, and gives each thread back
its own OpenMP count.

A decision on the training thread can overlap a ``complete_record`` on the store's writer
thread. Before the fix, the thread that left last restored the values the first one had seen:
when the writer (2 OpenMP threads by default) entered first and training left last, training
went on with 2 OpenMP threads (torch reads the thread's OpenMP count as its intra-op count)
instead of the run's 1, and a resumed run's gradients then differed in their last bits from the
uninterrupted run's (tests/faults/test_kill_resume_streamed.py failed in CI). And a BLAS limit
asked through threadpoolctl from the writer was ignored (threadpoolctl lets one thread control
OpenBLAS), so a decision overlapping it ran BLAS on every core.
"""

from __future__ import annotations

import threading

import pytest
import torch
from selective_sharing.core.grouping import clustering
from threadpoolctl import ThreadpoolController


def _counts(user_api: str) -> list[int]:
    """This thread's view of the libraries' thread counts."""
    return [lib["num_threads"] for lib in ThreadpoolController().select(user_api=user_api).info()]


@pytest.fixture
def scanned(monkeypatch):
    """A fresh library scan (torch's OpenMP is loaded by now) and the torch thread count back."""
    monkeypatch.setattr(clustering, "_CONTROLLER", [])
    monkeypatch.setattr(clustering, "_INSIDE", {"depth": 0, "blas": None})
    before = torch.get_num_threads()
    if not _counts("openmp"):
        pytest.skip("no OpenMP runtime loaded by torch in this build")
    # as in a run, this (the training) thread sets BLAS limits through threadpoolctl first:
    # threadpoolctl then ignores other threads' OpenBLAS limits while this one lives
    blas = ThreadpoolController().select(user_api="blas")
    blas.limit(limits={lib["filepath"]: lib["num_threads"] for lib in blas.info()})
    yield
    torch.set_num_threads(before)


def _overlap(first_inside: dict, release: threading.Event, entered: threading.Event) -> None:
    """The writer thread: enter first (with its own default OpenMP count), leave when told."""
    first_inside["before"] = _counts("openmp")
    with clustering.single_threaded():
        first_inside["openmp"], first_inside["blas"] = _counts("openmp"), _counts("blas")
        entered.set()
        release.wait(30)
    first_inside["after"] = _counts("openmp")


def test_the_thread_that_leaves_last_keeps_its_own_openmp_count(scanned):
    torch.set_num_threads(1)  # the run's count on the training thread
    blas_before = _counts("blas")
    seen: dict = {}
    entered, release = threading.Event(), threading.Event()
    writer = threading.Thread(target=_overlap, args=(seen, release, entered))
    writer.start()
    assert entered.wait(30)
    with clustering.single_threaded():  # training enters second ...
        inside = _counts("openmp"), _counts("blas"), torch.get_num_threads()
        release.set()
        writer.join(30)  # ... and leaves last
    assert inside == ([1] * len(inside[0]), [1] * len(inside[1]), 1)
    assert set(seen["openmp"]) == {1} and set(seen["blas"]) == {1}
    assert torch.get_num_threads() == 1  # was 2 (the writer's count) before the fix
    assert _counts("blas") == blas_before  # the last to leave restored the process-wide limit
    assert seen["after"] == seen["before"]  # the writer got its own count back too


def test_training_thread_count_survives_when_it_enters_first(scanned):
    torch.set_num_threads(1)
    seen: dict = {}
    entered, release = threading.Event(), threading.Event()
    with clustering.single_threaded():  # training first; the writer enters and leaves last
        writer = threading.Thread(target=_overlap, args=(seen, release, entered))
        writer.start()
        assert entered.wait(30)
    release.set()
    writer.join(30)
    assert torch.get_num_threads() == 1
    assert seen["after"] == seen["before"]
    assert set(seen["openmp"]) == {1}


def test_nested_in_one_thread_restores_in_order(scanned):
    torch.set_num_threads(1)
    with clustering.single_threaded():
        with clustering.single_threaded():
            assert torch.get_num_threads() == 1
        assert clustering._INSIDE["depth"] == 1 and set(_counts("blas")) == {1}
    assert clustering._INSIDE["depth"] == 0 and clustering._INSIDE["blas"] is None
    assert torch.get_num_threads() == 1
