"""Broken stores (issue 7, item 4), on the files of a real run: a truncated or corrupted NetCDF
file, another ``schema_version`` or a missing manifest is a clear error that names the file;
the run's other files still load; resuming such a run fails before it changes anything.

Corrupted bytes are always written as a new file (temp + rename, as the store itself writes):
rewriting a file in place under a path that HDF5 already failed to open in the same process can
crash the reader (see the issue 7 note).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import xarray as xr
from selective_sharing.core import store
from selective_sharing.core.checkpoint import CheckpointError
from selective_sharing.core.rundir import RunDirError
from selective_sharing.core.store import StoreError

from .conftest import Reference, train_tiny

READERS = {
    "events/event_000001.nc": lambda run: store.read_event(run / "events/event_000001.nc"),
    "history.nc": store.read_history,
    "metrics.nc": store.read_metrics,
    "activations/final.nc": lambda run: store.read_activations(run / "activations/final.nc"),
}

# bytes kept of a file of n bytes
CUTS = {
    "empty": lambda n: 0,
    "signature": lambda n: 8,
    "half": lambda n: n // 2,
    "last_byte": lambda n: n - 1,
}


@pytest.fixture
def run(reference: Reference, tmp_path):
    """A private copy of the finished reference run."""
    return shutil.copytree(reference.run, tmp_path / "run")


def put(path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.corrupt")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def others_still_load(run, reference: Reference, broken: str) -> None:
    for name, read in READERS.items():
        if name != broken:
            read(run)
    for i, path in enumerate(store.list_events(run)):
        if path.name not in broken:
            xr.testing.assert_identical(store.read_event(path), reference.events[i])


@pytest.mark.parametrize("name", sorted(READERS))
@pytest.mark.parametrize("cut", sorted(CUTS))
def test_truncated_file_is_an_error_naming_it(name, cut, run, reference) -> None:
    path = run / name
    data = path.read_bytes()
    put(path, data[: CUTS[cut](len(data))])
    with pytest.raises(StoreError, match="empty file|truncated or corrupted") as err:
        READERS[name](run)
    assert str(err.value).startswith(f"{path}: ") and err.value.path == path
    others_still_load(run, reference, name)


@pytest.mark.parametrize("name", sorted(READERS))
def test_garbage_blocks_never_load_as_different_data(name, run, reference) -> None:
    """64 random bytes at seeded offsets: an error naming the file, or (bytes the file does not
    use) the same data, never a silently different dataset."""
    path = run / name
    data = path.read_bytes()
    original = READERS[name](run)
    rng = np.random.default_rng(list(name.encode()))
    outcomes = []
    for trial in range(12):
        off = int(rng.integers(8, len(data) - 64))
        broken = data[:off] + rng.bytes(64) + data[off + 64 :]
        copy = run / f"{path.stem}_{trial}.nc"  # a new path each time (see module doc)
        put(copy, broken)
        try:
            loaded = store.open_store_dataset(copy)
        except StoreError as err:
            assert str(err).startswith(f"{copy}: ")
            outcomes.append("error")
        else:
            xr.testing.assert_identical(loaded, original)
            outcomes.append("same")
    assert "error" in outcomes


def test_flipped_byte_in_a_scalar_is_detected(run) -> None:
    path = run / "metrics.nc"
    value = store.read_metrics(run)["main"].values.astype("<f8").tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(value)
    assert at > 0 and data.find(value, at + 1) == -1  # the scalar is stored once, raw
    data[at + 7] ^= 0x01  # flip the lowest exponent bit: the value halves or doubles
    put(path, bytes(data))
    with pytest.raises(StoreError, match="checksum"):
        store.read_metrics(run)


def _flip_scalar(path, value: float) -> None:
    """Flip the lowest exponent bit of the one raw copy of float64 ``value`` in ``path``."""
    raw = np.float64(value).astype("<f8").tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw)
    assert at > 0 and data.find(raw, at + 1) == -1
    data[at + 7] ^= 0x01
    put(path, bytes(data))


def test_flipped_byte_is_detected_by_load_run_eager_and_lazy(run) -> None:
    from selective_sharing.analysis import load_run

    path = run / "events/event_000001.nc"
    _flip_scalar(path, store.read_event(path)["threshold"].values)
    with pytest.raises(StoreError, match=f"{path}: content checksum mismatch in variable"):
        load_run(run)
    tree = load_run(run, lazy=True)  # header only: arrays are read (and checked) when used
    node = tree["events"].children["event_000001"]
    assert "content_sha256" not in node.attrs  # the checksums never show
    with pytest.raises(StoreError, match=f"{path}: content checksum mismatch in variable"):
        # synchronous: a failed threaded compute leaves dask's other read tasks running
        node.to_dataset().compute(scheduler="synchronous")


def test_checksums_are_written_and_never_returned(run) -> None:
    with store.HDF5_LOCK, xr.open_dataset(run / "history.nc", engine="netcdf4") as raw:
        written = json.loads(raw.attrs["content_sha256"])
        assert set(written) == set(raw.variables)
    assert "content_sha256" not in store.read_history(run).attrs


def test_other_schema_version_is_an_error_naming_the_file(run, reference) -> None:
    import netCDF4

    path = run / "events/event_000002.nc"
    copy = path.with_name(".edit.nc")
    shutil.copy(path, copy)
    with netCDF4.Dataset(copy, "a") as nc:
        nc.setncattr("schema_version", 99)
    os.replace(copy, path)
    with pytest.raises(StoreError) as err:
        store.read_event(path)
    assert str(err.value).startswith(f"{path}: schema_version 99 found, expected 1")
    others_still_load(run, reference, "event_000002.nc")


# ----------------------------------------------------------------------------- resuming


def snapshot(run) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def as_interrupted(run) -> None:
    """Make the copied run look killed mid-way (status running), so a resume proceeds."""
    store.update_manifest(run, status="running")


def test_resume_without_manifest_says_there_is_no_run(run) -> None:
    (run / "manifest.json").unlink()
    with pytest.raises(StoreError, match=r"manifest.json: not found: .* is not a run directory"):
        store.read_manifest(run)
    before = snapshot(run)
    with pytest.raises(
        RunDirError,
        match=rf"cannot --resume {run}: it holds no run \(no "
        r"manifest.json\)",
    ):
        train_tiny(run, resume=True)
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["truncated", "not_json", "schema_version"])
def test_resume_with_a_broken_manifest_names_it_and_changes_nothing(damage, run) -> None:
    as_interrupted(run)
    path = run / "manifest.json"
    text = path.read_text()
    if damage == "truncated":
        put(path, text[: len(text) // 2].encode())
    elif damage == "not_json":
        put(path, b"\x00\xffgarbage")
    else:
        put(path, json.dumps({**json.loads(text), "schema_version": 99}).encode())
    expected = {
        "truncated": "invalid JSON, the manifest is corrupted",
        "not_json": "cannot be read|invalid JSON",
        "schema_version": "schema_version 99 found, expected 1",
    }[damage]
    before = snapshot(run)
    with pytest.raises(StoreError, match=expected) as err:
        train_tiny(run, resume=True)
    assert str(err.value).startswith(f"{path}: ")
    assert snapshot(run) == before


def test_resume_with_a_truncated_checkpoint_fails_naming_it(run, reference) -> None:
    as_interrupted(run)
    path = run / "checkpoint.pt"
    put(path, path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is unreadable"):
        train_tiny(run, resume=True)
    manifest = store.read_manifest(run)
    assert manifest["status"] == "failed" and str(path) in manifest["error"]
    others_still_load(run, reference, "checkpoint.pt")


def test_load_runs_skips_a_corrupted_run_and_reports_it(run, reference, tmp_path) -> None:
    from selective_sharing.analysis import BrokenRunWarning, load_runs

    broken = shutil.copytree(reference.run, tmp_path / "broken")
    metrics = broken / "metrics.nc"
    put(metrics, metrics.read_bytes()[:1000])
    with pytest.warns(
        BrokenRunWarning, match=rf"(?s)skipped 1 of 2 run\(s\).*{broken}: StoreError"
    ):
        tree = load_runs([run, broken])
    assert str(broken) in tree.attrs["failed"] and str(run) not in tree.attrs["failed"]
    assert f"{metrics}: truncated or corrupted" in tree.attrs["failed"][str(broken)]
    assert tree["metrics"].sizes["run"] == 1
    np.testing.assert_array_equal(
        tree["metrics"]["rmse"].values[0], reference.metrics["rmse"].values
    )


def test_damaged_checksum_attribute_is_an_error_naming_the_file(run) -> None:
    import netCDF4

    path = run / "history.nc"
    copy = path.with_name(".edit.nc")
    shutil.copy(path, copy)
    with netCDF4.Dataset(copy, "a") as nc:
        nc.setncattr("content_sha256", '{"loss": ')  # cut short
    os.replace(copy, path)
    with pytest.raises(StoreError, match=f"{path}: damaged content_sha256 attribute"):
        store.read_history(run)
