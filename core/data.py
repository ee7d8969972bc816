"""Which samples each training step reads, and the DataLoaders of streamed data.

One rule decides the batch of every step, for in-memory and streamed data alike
(:func:`batch_indices`): epoch ``e`` visits the samples in the order of a permutation seeded by
``(seed, e)``, ``batch_size`` at a time, the last incomplete batch dropped; no batch size (or
one at least the data's size) is full-batch. Step ``s``'s batch is a function of ``s`` alone,
so the sampler's position *is* the step count: a checkpoint holds it, and a run resumed
mid-epoch reads exactly the batches the uninterrupted run read.

Items drawing random numbers (augmentations) are fetched with the global generators of
``torch`` (CPU), NumPy and ``random`` seeded by ``(seed, step, index)`` (:class:`StepSeededItems`),
so an item's draws are a function of the step that reads it alone: the same with any number of
workers or ranks, and after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, get_worker_info


def batch_indices(n: int, batch_size: int | None, seed: int, step: int,
                  _cache: dict | None = None) -> np.ndarray:
    """Sample indices of training step ``step`` (0-based) over ``n`` samples."""
    if batch_size is None or batch_size >= n:
        return np.arange(n)
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    if _cache is not None and _cache.get("epoch") == epoch:
        order = _cache["order"]
    else:
        order = np.random.default_rng([seed, epoch]).permutation(n)
        if _cache is not None:
            _cache.update(epoch=epoch, order=order)
    return order[k * batch_size:(k + 1) * batch_size]


class StepBatchSampler(Sampler):
    """Batches of steps ``position, position + 1, ..., stop - 1`` by :func:`batch_indices`;
    with ``world > 1`` (data-parallel ranks), rank ``rank``'s share of each: ``idx[rank::world]``.

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int or None
        None: full batch.
    seed : int
    stop : int
        The step after the last (the run's length).
    position : int
        The first step to yield (a resumed run's step count).
    rank, world : int
        This process's rank and the number of ranks sharing each global batch.
    """

    def __init__(self, n: int, batch_size: int | None, seed: int, stop: int, position: int = 0,
                 rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.stop = n, batch_size, seed, stop
        self.position, self.rank, self.world = position, rank, world
        self._cache: dict = {}

    def global_batch(self, step: int) -> np.ndarray:
        """Every rank's indices of step ``step``."""
        return batch_indices(self.n, self.batch_size, self.seed, step, self._cache)

    def __iter__(self) -> Iterator[list[int]]:
        while self.position < self.stop:
            idx = self.global_batch(self.position)[self.rank::self.world]
            self.position += 1
            yield idx.tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.position)

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """``position``: the next step to read, ``consumed`` when given (a DataLoader with
        workers draws batches ahead of the loop, so the loop's step count is the position a
        checkpoint must hold); ``n``, ``batch_size`` and ``seed`` identify the order, so a
        resume on other data or settings is refused instead of reading other batches."""
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed,
                "world": self.world, "position": self.position if consumed is None else consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world", 1) != self.world:
            raise ValueError(
                f"the checkpoint was written by a run of {state.get('world', 1)} process(es) but "
                f"this one has {self.world}: resume with the same number of processes "
                f"(torchrun --nproc_per_node={state.get('world', 1)}), so that every rank reads "
                "the batches it read before")
        for key in ("n", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"the checkpoint's sampler has {key}={state[key]!r} but this run has "
                    f"{getattr(self, key)!r}: resume with the data and settings the run started "
                    "with (a different dataset size, batch size or seed reads other batches)")
        self.position = int(state["position"])


def _loader_kwargs(num_workers: int, device: torch.device) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers > 0:
        kw["prefetch_factor"] = 4
    return kw


class StepSeededItems:
    """``items`` read by ``(step, index)`` keys, each with the global random generators seeded
    by ``(seed, step, index)``: torch's CPU generator, NumPy's legacy global one (``np.random``)
    and ``random``'s, which is where torchvision's transforms and most augmentation libraries
    draw from.

    A DataLoader worker is otherwise seeded once when it starts, and then draws for the items it
    happens to be given: the draws of an item then depend on the number of workers, on which
    worker read it, and on when the workers (re)started, so a resumed run augmented its items
    differently from the uninterrupted run. Here an item read at a step always gets the same
    draws. Generators a dataset holds itself (``np.random.default_rng`` made in its
    ``__init__``) are not reseeded: draw from the global ones, or seed yours from
    :func:`torch.initial_seed` inside ``__getitem__``.

    Outside a worker process (``num_workers=0``) the generators' states are put back after each
    batch, so the training loop's own stream (a template's Dropout) is not touched.
    """

    def __init__(self, items: Any, seed: int):
        self.items, self.seed = items, int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        if get_worker_info() is not None:  # a worker's generators serve its items alone
            return [self._seeded(step, i) for step, i in keys]
        states = torch.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            return [self._seeded(step, i) for step, i in keys]
        finally:
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])

    def _seeded(self, step: int, i: int) -> Any:
        h = _mix(self.seed, step, i)
        torch.default_generator.manual_seed(h >> 1)  # the CPU one only: a GPU's stays as it is
        np.random.seed(h & 0xFFFFFFFF)
        random.seed(h >> 32)
        return self.items[i]


_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64's finalizer, chained): seeds that differ in every
    bit for neighbouring steps and items, in about a microsecond (``np.random.SeedSequence``
    takes ten). Reseeding costs 17 us per item in all on the 2-core machine (0.25 -> 0.79 ms
    per batch of 32 tabular items read without workers; nothing next to decoding an image)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = ((h ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9) & _MASK64
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 29
    return h


class _StepKeys(Sampler):
    """The batches of a :class:`StepBatchSampler` as ``(step, index)`` keys."""

    def __init__(self, sampler: StepBatchSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.sampler.position
        for idx in self.sampler:
            yield [(step, i) for i in idx]
            step += 1

    def __len__(self) -> int:
        return len(self.sampler)


def train_loader(items: Any, sampler: StepBatchSampler, num_workers: int,
                 device: torch.device) -> DataLoader:
    """A DataLoader that reads ``items`` in the sampler's batches, ``num_workers`` at a time,
    each item with its random generators seeded by ``(seed, step, index)``
    (:class:`StepSeededItems`).

    It has its own generator, seeded by the sampler's seed and starting position. A DataLoader
    without one draws its workers' base seed from torch's global generator each time an
    iterator is made, which the trainer does at step 0 of a run and again at the step a resume
    starts from: the global stream of the resumed run was then one draw ahead of the
    uninterrupted run's, and a model drawing from it (a template's Dropout on the CPU) gave
    other events after the resume."""
    seed = _mix(sampler.seed, sampler.position) >> 1
    return DataLoader(StepSeededItems(items, sampler.seed), batch_sampler=_StepKeys(sampler),
                      generator=torch.Generator().manual_seed(seed),
                      **_loader_kwargs(num_workers, device))


def eval_loader(items: Any, batch_size: int, num_workers: int,
                device: torch.device) -> DataLoader:
    """A DataLoader over ``items`` in order (test predictions, probes); like
    :func:`train_loader`, it leaves torch's global generator alone."""
    return DataLoader(items, batch_size=batch_size, shuffle=False,
                      generator=torch.Generator().manual_seed(0),
                      **_loader_kwargs(num_workers, device))


@torch.no_grad()
def predict_items(model: Any, items: Any, batch_size: int, num_workers: int = 0) -> np.ndarray:
    """Every task's output on every item of a streamed split, (N, n_tasks, O), in eval mode, on
    the model's device, ``batch_size`` items at a time."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [model(x.to(device, non_blocking=True)).float().cpu().numpy()
               for x, _, _ in eval_loader(items, batch_size, num_workers, device)]
    finally:
        model.train(was_training)
    return np.concatenate(out)


__all__ = ["StepBatchSampler", "StepSeededItems", "batch_indices", "eval_loader", "predict_items",
           "train_loader"]
