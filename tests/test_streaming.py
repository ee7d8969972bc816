"""Streamed data (issue 11): map-style datasets of (x, y, mask) items read through a DataLoader
with workers and a checkpointed sampler; CelebA/OmniArt decode per item; defaults by input
kind for data without a registered profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from selective_sharing.core import make_config, store, train
from selective_sharing.core.data import StepBatchSampler, batch_indices
from selective_sharing.datasets import (
    DatasetError,
    StreamedMTLData,
    TaskSpec,
    from_arrays,
    from_datasets,
    load_dataset,
    stream,
    write_celeba_fixture,
)
from selective_sharing.datasets import celeba as celeba_module
from test_train import _Stop, _StopAfterEvent

pytest.importorskip("PIL")


def _events(run) -> list[xr.Dataset]:
    return [xr.load_dataset(p) for p in sorted((run / "events").glob("event_*.nc"))]


def test_sampler_resumes_mid_epoch_with_the_same_batches():
    full = [b for b in StepBatchSampler(50, 8, seed=3, stop=20)]
    assert len(full) == 20 and all(len(b) == 8 for b in full)
    epoch0 = np.concatenate(full[:6])  # 50 // 8 = 6 batches an epoch, the last 2 dropped
    assert len(set(epoch0.tolist())) == 48
    resumed = StepBatchSampler(50, 8, seed=3, stop=20, position=9)
    assert [b for b in resumed] == full[9:]
    assert full[9] == batch_indices(50, 8, 3, 9).tolist()
    assert StepBatchSampler(5, None, 0, stop=2).__iter__().__next__() == [0, 1, 2, 3, 4]


def test_sampler_refuses_a_checkpoint_of_other_data():
    state = StepBatchSampler(50, 8, seed=3, stop=20).state_dict(consumed=7)
    assert state["position"] == 7
    other = StepBatchSampler(60, 8, seed=3, stop=20)
    with pytest.raises(ValueError, match=r"sampler has n=50 but this run has 60"):
        other.load_state_dict(state)


def test_streamed_arrays_give_the_in_memory_events_and_metrics(tmp_path):
    """The DataLoader path (2 workers) reads the batches the in-memory path indexes."""
    data = load_dataset("synthetic", seed=0)
    over = {"train.steps": 70, "warmup_steps": 30, "regroup_every": 20, "batch_size": 32}
    runs = {}
    for kind, d in (("memory", data), ("streamed", stream(data))):
        config = make_config("synthetic", overrides={**over, "num_workers": 2},
                             out=str(tmp_path / kind))
        runs[kind] = train(config, data=d, progress=False)
    a, b = (_events(runs[k]) for k in ("memory", "streamed"))
    assert len(a) == len(b) == 2  # at steps 30 and 50
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea["summed"].values, eb["summed"].values)
        np.testing.assert_array_equal(ea["assignment_after"].values, eb["assignment_after"].values)
    ma, mb = (store.read_metrics(runs[k]) for k in ("memory", "streamed"))
    main = ma.attrs["main_metric"]
    np.testing.assert_array_equal(ma[main].values, mb[main].values)
    assert store.read_manifest(runs["streamed"])["streamed"] is True


def test_celeba_decodes_images_per_item_only(tmp_path, monkeypatch):
    root = write_celeba_fixture(tmp_path / "celeba", n_images=60)
    calls = []
    inner = celeba_module.read_image
    monkeypatch.setattr(celeba_module, "read_image", lambda *a: calls.append(a) or inner(*a))
    data = load_dataset("celeba", root=root, image_size=8)
    assert isinstance(data, StreamedMTLData) and len(data.train) == 40
    assert len(calls) == 2  # validation reads the first item of each split, nothing else
    x, y, _ = data.train[5]
    assert x.shape == (3, 8, 8) and len(calls) == 3
    np.testing.assert_array_equal(y, data.y_train[5])


def test_celeba_trains_through_workers(tmp_path):
    root = write_celeba_fixture(tmp_path / "celeba", n_images=60)
    config = make_config("celeba", overrides={"root": str(root), "image_size": 8,
                                              "train.steps": 20, "warmup_steps": 10,
                                              "batch_size": 8, "num_workers": 2},
                         out=str(tmp_path / "run"))
    run = train(config, progress=False)
    metrics = store.read_metrics(run)
    assert metrics.attrs["main_metric"] == "accuracy" and 0 <= float(metrics["main"]) <= 1
    assert store.read_manifest(run)["status"] == "complete"
    assert len(_events(run)) == 1


class _TorchItems(torch.utils.data.Dataset):
    """A user's Dataset returning tensors, without labels(): labels are read by iteration."""

    def __init__(self, n: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 8, 8, generator=gen)
        self.y = (self.x.mean(dim=(1, 2, 3))[:, None] > 0).float().repeat(1, 3)
        self.y[:, 2] = (self.x[:, 0, 0, 0] > 0).float()

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i], torch.ones(3, dtype=torch.bool)


def test_from_datasets_with_a_torch_dataset_and_image_defaults(tmp_path):
    data = from_datasets(_TorchItems(96, 0), _TorchItems(32, 1),
                         [("a", "binary"), ("b", "binary"), TaskSpec("c", "binary")],
                         name="my_images")
    assert data.input_kind == "image" and data.main_metric == "accuracy"
    assert data.y_test.shape == (32, 3) and data.m_test.all()
    config = make_config("my_images", overrides={"train.steps": 12, "warmup_steps": 6,
                                                 "num_workers": 0},
                         out=str(tmp_path / "run"))
    assert config.train.batch_size is None  # built without knowing the data: vector defaults
    run = train(config, data=data, progress=False)
    manifest = store.read_manifest(run)
    assert manifest["defaults"] == "generic_image"
    assert manifest["config"]["train"]["batch_size"] == 64  # image defaults, overrides kept
    assert manifest["config"]["train"]["steps"] == 12
    assert manifest["dataset"]["variant"] == "user"


def test_image_arrays_without_a_profile_get_image_defaults(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1, 8, 8)).astype(np.float32)
    data = from_arrays(x, {"a": (x[:, 0, 0, 0] > 0).astype(float), "b": x.mean((1, 2, 3))},
                       {"a": "binary", "b": "regression"}, name="img_arrays")
    explicit = make_config("img_arrays", input_kind="image")
    assert explicit.defaults_from == "generic_image" and explicit.train.batch_size == 64
    assert explicit.model.conv_channels == (16, 32)
    vector = make_config("img_arrays", input_kind="vector")
    assert vector.defaults_from == "generic_vector" and vector.train.batch_size is None
    config = make_config("img_arrays", overrides={"train.steps": 5, "warmup_steps": 2,
                                                  "batch_size": 16},
                         out=str(tmp_path / "run"))
    run = train(config, data=data, progress=False)
    manifest = store.read_manifest(run)
    assert manifest["defaults"] == "generic_image"
    assert manifest["config"]["train"]["batch_size"] == 16  # the user's override wins
    assert manifest["config"]["train"]["lr"] == 2e-3


def test_streamed_validation_names_the_bad_item():
    class Bad:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return np.zeros((3, 4, 4), np.float32), np.zeros(2, np.float32), np.ones(3, bool)

    with pytest.raises(DatasetError, match=r"train\[0\] has y \(2,\) and mask \(3,\)"):
        from_datasets(Bad(), Bad(), ["a", "b"])
    with pytest.raises(DatasetError, match="must be a map-style dataset"):
        from_datasets(iter([]), Bad(), ["a", "b"])
    with pytest.raises(DatasetError, match=r"invalid tasks\[0\]=\('a', 'ordinal'\)"):
        from_datasets(Bad(), Bad(), [("a", "ordinal")])


def test_a_forked_worker_does_not_keep_a_killed_writers_lock(tmp_path):
    """DataLoader workers are forked while the run is locked; when the trainer is SIGKILLed they
    live on for seconds. The lock must die with the trainer, so --resume can start at once."""
    import os
    import signal
    import subprocess
    import sys

    from selective_sharing.core.runlock import RunLock

    code = (
        "import multiprocessing as mp, sys, time\n"
        "from selective_sharing.core.runlock import RunLock\n"
        f"lock = RunLock({str(tmp_path)!r}); lock.acquire()\n"
        "child = mp.get_context('fork').Process(target=time.sleep, args=(60,)); child.start()\n"
        "print(child.pid, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)  # the forked child is still alive...
        with RunLock(tmp_path):  # ...and the lock is free
            assert (tmp_path / "run.lock").read_text().strip() == str(os.getpid())
    finally:
        os.kill(child, signal.SIGKILL)
        proc.stdout.close()



def test_a_lock_held_briefly_by_a_child_of_a_dead_writer_is_taken_after_it(tmp_path):
    """The lock file names a dead process, but the lock is still held: by a process forked from
    it moments before it was killed, which has not yet run its at-fork hook that closes the lock
    (test_a_forked_worker_does_not_keep_a_killed_writers_lock failed 1 time in 6 that way on
    a loaded machine). The lock is tried again until that child lets go, instead of refusing
    after waiting for a live holder that never comes."""
    import os
    import subprocess
    import sys
    import time

    from selective_sharing.core.runlock import RunLock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / 'run.lock')!r}, os.O_RDWR | os.O_CREAT, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        f"os.write(fd, b'{dead.pid}\\n')\n"
        "print('held', flush=True); time.sleep(0.5)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with RunLock(tmp_path):  # refused before, after 2 s: "being written by process <dead>"
            assert (tmp_path / "run.lock").read_text().strip() == str(os.getpid())
        assert time.monotonic() - start < 2.0
    finally:
        holder.wait()
        holder.stdout.close()


def _dropout_model(data):
    from selective_sharing.core.branched import BranchedModel

    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(data.input_shape[0], 16), torch.nn.ReLU())
    template = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3))
    return BranchedModel(trunk, template, data.tasks, seed=0)


def test_streamed_resume_with_dropout_gives_the_uninterrupted_events(tmp_path):
    """A resumed streamed run makes its DataLoader iterator at the resume step; that iterator
    must not draw from torch's global generator, which the template's Dropout uses (it did: the
    events after the resume differed from the uninterrupted run's; in memory they did not)."""
    data = stream(load_dataset("synthetic", seed=0))
    over = {"train.steps": 90, "warmup_steps": 30, "regroup_every": 20, "batch_size": 32,
            "num_workers": 0}

    def config(name: str):
        return make_config("synthetic", overrides=over, out=str(tmp_path / name))

    reference = train(config("reference"), data=data, model=_dropout_model(data), progress=False)
    with pytest.raises(_Stop):
        train(config("resumed"), data=data, model=_dropout_model(data), progress=False,
              callbacks=[_StopAfterEvent(2)])
    resumed = train(config("resumed"), data=data, model=_dropout_model(data), progress=False,
                    resume=True)
    a, b = _events(reference), _events(resumed)
    assert len(a) == len(b) == 3  # at steps 30, 50, 70: the resume starts at step 50
    for ea, eb in zip(a, b):
        xr.testing.assert_identical(ea, eb)


def test_loaders_leave_the_global_generator_alone():
    from selective_sharing.core.data import eval_loader, train_loader

    items = [(np.zeros(2, np.float32), np.zeros(1, np.float32), np.ones(1, bool))] * 10
    before = torch.get_rng_state()
    cpu = torch.device("cpu")
    assert len(list(eval_loader(items, 4, 0, cpu))) == 3
    assert len(list(train_loader(items, StepBatchSampler(10, 4, 0, 5), 0, cpu))) == 5
    assert torch.equal(before, torch.get_rng_state())



class _Augmented:
    """Items of ``data.train`` with noise from each global generator a dataset may use."""

    def __init__(self, items):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        import random

        x, y, m = self.items[i]
        noise = 0.1 * torch.randn(len(x)).numpy() + 0.1 * np.random.rand(len(x)) + random.random()
        return (np.asarray(x) + noise).astype(np.float32), y, m


def _batches(items, position: int, workers: int) -> list:
    from selective_sharing.core.data import train_loader

    sampler = StepBatchSampler(len(items), 8, 3, 12, position)
    return [x.numpy() for x, _, _ in train_loader(items, sampler, workers, torch.device("cpu"))]


def test_an_items_random_draws_depend_on_its_step_alone():
    """Augmentation noise drawn in ``__getitem__`` is the same with 0 or 2 workers, and a loader
    that starts at step 5 (a resume) reads the batches the one from step 0 read from there on."""
    items = _Augmented(stream(load_dataset("synthetic", seed=0)).train)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    full = _batches(items, 0, 0)
    assert torch.equal(before[0], torch.get_rng_state())  # no workers: the caller's streams
    assert np.array_equal(before[1], np.random.get_state()[1])  # are left as they were
    assert not np.array_equal(full[0][0], full[1][0])
    for got in (_batches(items, 0, 2), _batches(items, 5, 0), _batches(items, 5, 2)):
        assert len(got) in (12, 7)
        for a, b in zip(full[-len(got):], got):
            np.testing.assert_array_equal(a, b)


def test_streamed_resume_with_augmentation_in_workers_gives_the_uninterrupted_events(tmp_path):
    base = stream(load_dataset("synthetic", seed=0))
    data = from_datasets(_Augmented(base.train), base.test, base.tasks)
    over = {"train.steps": 90, "warmup_steps": 30, "regroup_every": 20, "batch_size": 32,
            "num_workers": 2}

    def config(name: str):
        return make_config("synthetic", overrides=over, out=str(tmp_path / name))

    reference = train(config("reference"), data=data, progress=False)
    with pytest.raises(_Stop):
        train(config("resumed"), data=data, progress=False, callbacks=[_StopAfterEvent(2)])
    resumed = train(config("resumed"), data=data, progress=False, resume=True)
    a, b = _events(reference), _events(resumed)
    assert len(a) == len(b) == 3
    for ea, eb in zip(a, b):
        xr.testing.assert_identical(ea, eb)
