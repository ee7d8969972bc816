"""Tests of the run store (the core/store package): exact round trips, plain-xarray
readability, atomic writes, and clear errors on bad files."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from selective_sharing.core import store
from selective_sharing.core.grouping import EventResult
from selective_sharing.core.store import SCHEMA_VERSION, StoreError
from selective_sharing.core.store import io as store_io
from selective_sharing.core.store.event_codec import decode_event_arrays, decoded_variables
from selective_sharing.core.store import schema as store_schema

ARRAY_FIELDS = (
    "summed",
    "assignment_before",
    "streak_before",
    "singular_values",
    "factors",
    "degenerate",
    "kmeans_labels",
    "membership",
    "proposed",
    "condition",
    "streak_after",
    "assignment_after",
    "parent",
)
EVENT_DIMS = {
    "entity",
    "entity_other",
    "row",
    "col",
    "bin",
    "sketch",
    "factor",
    "cluster",
    "task",
    "task_other",
    "distance",
}


# Variables holding categorical values (ids, indices) or flags: written without units.
CATEGORICAL = {
    "assignment_before",
    "assignment_after",
    "kmeans_labels",
    "proposed",
    "parent",
    "degenerate",
    "assignment",
    "partition",
    "probe",
    "label_mask",
    "region_masks",
    "task_region",
    "object_masks",
}


def _spiky(rng: np.random.Generator, shape: tuple, dtype: str) -> np.ndarray:
    """Random floats with NaN, +-inf, -0.0 and a subnormal planted: exactness must cover them."""
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).smallest_subnormal]
    flat[: min(len(specials), flat.size)] = specials[: flat.size]
    return a


def make_event(
    rng,
    *,
    E=5,
    R=3,
    C=7,
    T=6,
    r=2,
    K=3,
    n_bins=4,
    sketch=8,
    names=("cosine", "subspace"),
    threshold=0.25,
):
    """A hand-built EventResult of the documented shapes/dtypes, plus encode_event's keywords."""
    result = EventResult(
        summed=_spiky(rng, (E, R, C), "float32"),
        assignment_before=rng.integers(0, E, T),
        streak_before=rng.integers(0, 4, (T, T)),
        singular_values=rng.random((E, r)),
        factors=_spiky(rng, (E, r, C), "float64"),
        degenerate=rng.random(E) < 0.4,
        distances={n: rng.random((E, E)) for n in names},
        silhouettes={n: float(rng.uniform(-1, 1)) for n in names},
        chosen_distance=names[0] if names else "cosine",
        kmeans_k=K,
        kmeans_labels=rng.integers(-1, K, (E, r)),
        membership=rng.random((E, K)),
        proposed=rng.integers(0, E, E),
        condition=rng.random((E, E)),
        threshold=threshold,
        streak_after=rng.integers(0, 4, (T, T)),
        assignment_after=np.sort(rng.integers(0, E, T)),
        parent=rng.integers(0, E, E),
    )
    config = {"strategy": "similarity", "rank": r, "threshold": None, "auto": list(names)}
    meta = {
        "index": int(rng.integers(0, 50)),
        "step": 1200,
        "window_start": 1000,
        "bins": _spiky(rng, (E, n_bins, sketch), "float32"),
        "sketch_seed": 7919,
        "sketch_kind": "gaussian",
        "task_names": [f"task_{t}" for t in range(T)],
        "n_params_before": 5000,
        "n_params_after": 4000,
        "merge_mode": "average",
        "grouping_config": config,
        "decision_rule": 2,
    }
    return result, meta


def decision(result) -> dict:
    """The decision fields of an EventResult (or of a store Event), by name: what the core side
    hands the store's event encoder, which may not import the grouping rule."""
    return {name: getattr(result, name) for name in store.DECISION_FIELDS}


def encode(result, meta: dict) -> xr.Dataset:
    """The event dataset of ``result`` (EventResult or store Event) and make_event's keywords."""
    return store.encode_event(**decision(result), **meta)


def decode(ds: xr.Dataset, **kwargs) -> tuple[store.Event, dict]:
    """``(Event, meta)``: the decoded record and its context as make_event's keywords."""
    event = store.decode_event(ds, **kwargs)
    meta = {name: getattr(event, name) for name in store.CONTEXT_FIELDS}
    return event, dict(meta, task_names=list(event.task_names))


def bit_equal(a, b) -> bool:
    """Same dtype, shape and bytes (NaN payloads and -0.0 included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_event(x: EventResult, y: EventResult) -> None:
    for name in ARRAY_FIELDS:
        assert bit_equal(getattr(x, name), getattr(y, name)), name
        assert np.array_equal(getattr(x, name), getattr(y, name), equal_nan=True), name
    assert list(x.distances) == list(y.distances)
    for n in x.distances:
        assert bit_equal(x.distances[n], y.distances[n]), n
    assert x.silhouettes == y.silhouettes
    assert (x.chosen_distance, x.kmeans_k) == (y.chosen_distance, y.kmeans_k)
    assert bit_equal(np.float64(x.threshold), np.float64(y.threshold))


def assert_same_meta(m: dict, n: dict) -> None:
    assert m.keys() == n.keys()
    for key, value in m.items():
        if key == "bins":
            assert bit_equal(value, n[key])
        else:
            assert value == n[key], key


def encode_all(run_dir: Path, rng) -> dict[str, xr.Dataset]:
    """Write one file of every kind into ``run_dir``; return the encoded datasets by kind."""
    result, meta = make_event(rng)
    T, S = 6, 9
    names = meta["task_names"]
    dsets = {
        "event": encode(result, meta),
        "history": store.encode_history(
            step=np.arange(1, S + 1) * 10,
            loss=_spiky(rng, (S, T), "float32"),
            grad_norm=rng.random((S, T)).astype(np.float32),
            lr=np.full(S, 1e-3),
            assignment=rng.integers(0, 3, (S, T)),
            task_names=names,
        ),
        "metrics": metrics_dataset(rng, names),
        "activations": activations_dataset(rng, names),
    }
    store.write_event(run_dir, dsets["event"])
    store.write_history(run_dir, dsets["history"])
    store.write_metrics(run_dir, dsets["metrics"])
    store.write_activations(run_dir, dsets["activations"])
    return dsets


def metrics_dataset(rng, names, ari=0.75, acc=None) -> xr.Dataset:
    T = len(names)
    acc = rng.random(T) if acc is None else acc
    return store.encode_metrics(
        task_names=names,
        task_metrics={"accuracy": acc, "auc": rng.random(T)},
        main_metric="accuracy",
        n_parameters=12345,
        n_parameters_estimators=2345,
        n_groups=3,
        assignment=rng.integers(0, 3, T),
        wall_time_s=12.5,
        backward_passes=300,
        forward_passes=310,
        steps=300,
        adjusted_rand_index=ari,
        variant="synthetic",
    )


def activations_dataset(rng, names, full=True, name="final") -> xr.Dataset:
    T, P, H, W = len(names), 5, 4, 6

    def opt(a):
        return a if full else None

    return store.encode_activations(
        name=name,
        step=300,
        task_names=names,
        probe_index=np.arange(P) * 3,
        representation=rng.random((P, 16)).astype(np.float32),
        labels=_spiky(rng, (P, T), "float32"),
        label_mask=rng.random((P, T)) < 0.7,
        assignment=rng.integers(0, 3, T),
        estimator_output=opt(rng.random((P, 3, 8)).astype(np.float32)),
        saliency=opt(rng.random((T, P, H, W)).astype(np.float32)),
        region_masks=opt(rng.random((2, H, W)) < 0.5),
        task_region=opt(rng.integers(-1, 2, T)),
        object_masks=opt(rng.random((P, H, W)) < 0.5),
        method="ss_similarity",
    )


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- events


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"K": 1},
        {"threshold": float("nan")},
        {"names": ("subspace",)},
        {"E": 1, "T": 1},
        {"names": ()},
        {"r": 1, "C": 1},
    ],
)
def test_event_round_trip_exact_through_file(tmp_path, kwargs):
    result, meta = make_event(np.random.default_rng(0), **kwargs)
    ds = encode(result, meta)
    path = store.write_event(tmp_path, ds)
    assert path == tmp_path / "events" / f"event_{meta['index']:06d}.nc"
    back = store.read_event(path)
    xr.testing.assert_identical(back, ds)
    decoded, decoded_meta = decode(back)
    assert_same_event(decoded, result)
    assert_same_meta(decoded_meta, meta)
    xr.testing.assert_identical(encode(decoded, decoded_meta), back)
    assert decoded.membership.shape[1] == kwargs.get("K", 3)


@settings(max_examples=30, deadline=None)
@given(
    E=st.integers(1, 6),
    T=st.integers(1, 7),
    r=st.integers(1, 4),
    K=st.integers(1, 5),
    C=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_event_decode_encode_is_identity_in_memory(E, T, r, K, C, seed):
    result, meta = make_event(np.random.default_rng(seed), E=E, T=T, r=r, K=K, C=C)
    ds = encode(result, meta)
    decoded, decoded_meta = decode(ds)
    assert_same_event(decoded, result)
    assert_same_meta(decoded_meta, meta)
    xr.testing.assert_identical(encode(decoded, decoded_meta), ds)


BLOCK_TORCH = """
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked")
sys.meta_path.insert(0, BlockTorch())
import selective_sharing.core.store
print("torch" in sys.modules)
"""


def test_store_imports_without_torch():
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_grouping_config_dataclass_is_stored_as_json_dict():
    @dataclasses.dataclass(frozen=True)
    class Config:
        strategy: str = "kmeans"
        auto_candidates: tuple = ("cosine",)

    result, meta = make_event(np.random.default_rng(14))
    ds = encode(result, {**meta, "grouping_config": Config()})
    stored = decode(ds)[1]["grouping_config"]
    assert stored == {"strategy": "kmeans", "auto_candidates": ["cosine"]}


def test_event_records_meta_and_dims():
    result, meta = make_event(np.random.default_rng(1))
    ds = encode(result, meta)
    assert set(ds.sizes) == EVENT_DIMS
    assert list(ds["distance"].values) == ["cosine", "subspace"]
    assert ds.attrs["n_entities_after"] == result.n_entities_after
    assert json.loads(ds.attrs["grouping_config"]) == meta["grouping_config"]
    assert ds["distances"].dims == ("distance", "entity", "entity_other")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("summed", np.zeros((5, 3, 7)), "summed must have dtype float32"),
        ("degenerate", np.zeros(5, dtype=np.int64), "degenerate must have dtype bool"),
        ("parent", np.zeros(4, dtype=np.int64), "parent has entity=4"),
        ("kmeans_labels", np.zeros(5, dtype=np.int64), "kmeans_labels must have dims"),
    ],
)
def test_encode_event_rejects_bad_arrays_naming_the_field(field, value, match):
    result, meta = make_event(np.random.default_rng(2))
    bad = EventResult(**{**result.__dict__, field: value})
    with pytest.raises(ValueError, match=match):
        encode(bad, meta)


def test_write_event_is_noop_when_identical_and_refuses_a_different_one(tmp_path):
    result, meta = make_event(np.random.default_rng(3))
    path = store.write_event(tmp_path, encode(result, meta))
    before = path.stat()
    assert store.write_event(tmp_path, encode(result, meta)) == path
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    changed = dict(meta, step=meta["step"] + 1)
    with pytest.raises(StoreError, match="differs") as err:
        store.write_event(tmp_path, encode(result, changed))
    assert str(path) in str(err.value) and "attr step" in str(err.value)
    assert decode(store.read_event(path))[1]["step"] == meta["step"]


def test_list_events_sorted_ignores_temp_and_foreign_files(tmp_path):
    rng = np.random.default_rng(4)
    for index in (12, 3, 1_000_000):
        result, meta = make_event(rng)
        store.write_event(tmp_path, encode(result, dict(meta, index=index)))
    (tmp_path / "events" / ".event_000013.nc.tmp-999").write_bytes(b"partial")
    (tmp_path / "events" / "notes.txt").write_text("x")
    names = [p.name for p in store.list_events(tmp_path)]
    assert names == ["event_000003.nc", "event_000012.nc", "event_1000000.nc"]
    assert store.list_events(tmp_path / "nothing_here") == []


# ----------------------------------------------------------------------------- other files


def test_history_metrics_activations_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    dsets = encode_all(tmp_path, rng)
    xr.testing.assert_identical(store.read_history(tmp_path), dsets["history"])
    xr.testing.assert_identical(store.read_metrics(tmp_path), dsets["metrics"])
    [act] = store.list_activations(tmp_path)
    assert act == tmp_path / "activations" / "final.nc"
    back = store.read_activations(act)
    xr.testing.assert_identical(back, dsets["activations"])
    assert back["label_mask"].dtype == bool and back["region_masks"].dtype == bool
    assert bit_equal(back["labels"].values, dsets["activations"]["labels"].values)
    assert bit_equal(store.read_history(tmp_path)["loss"].values, dsets["history"]["loss"].values)
    assert store.read_history(tmp_path)["step"].dtype == np.int64


def test_activations_without_optional_arrays(tmp_path):
    ds = activations_dataset(np.random.default_rng(6), ["a", "b"], full=False, name="epoch_3")
    assert "saliency" not in ds and "object_masks" not in ds
    path = store.write_activations(tmp_path, ds)
    xr.testing.assert_identical(store.read_activations(path), ds)
    with pytest.raises(ValueError, match="name"):
        store.write_activations(tmp_path, ds.assign_attrs(name="../escape"))


def test_metrics_main_and_optional_ari():
    rng = np.random.default_rng(7)
    acc = np.array([0.5, np.nan, 0.7])
    ds = metrics_dataset(rng, ["a", "b", "c"], ari=None, acc=acc)
    assert "adjusted_rand_index" not in ds
    assert float(ds["main"]) == pytest.approx(np.nanmean(acc))
    assert {n for n, v in ds.data_vars.items() if v.attrs.get("role") == "task_metric"} == {
        "accuracy",
        "auc",
    }
    all_nan = metrics_dataset(rng, ["a", "b", "c"], acc=np.full(3, np.nan))
    assert np.isnan(float(all_nan["main"]))
    with pytest.raises(ValueError, match="main_metric='rmse'"):
        store.encode_metrics(**{**_metrics_kwargs(), "main_metric": "rmse"})
    with pytest.raises(ValueError, match="n_groups"):
        store.encode_metrics(
            **{
                **_metrics_kwargs(),
                "task_metrics": {"n_groups": np.zeros(2)},
                "main_metric": "n_groups",
            }
        )


def _metrics_kwargs() -> dict:
    ones = {"n_parameters": 1, "n_parameters_estimators": 1, "n_groups": 1, "steps": 1}
    return {
        **ones,
        "task_names": ["a", "b"],
        "task_metrics": {"accuracy": np.ones(2)},
        "main_metric": "accuracy",
        "assignment": np.zeros(2, dtype=np.int64),
        "wall_time_s": 1.0,
        "backward_passes": 1,
        "forward_passes": 1,
        "adjusted_rand_index": None,
        "variant": "real",
    }


def test_history_rejects_unsorted_steps_and_bad_task_names():
    kw = {
        "step": np.array([1, 3, 2]),
        "loss": np.zeros((3, 2), np.float32),
        "grad_norm": np.zeros((3, 2), np.float32),
        "lr": np.zeros(3),
        "assignment": np.zeros((3, 2), np.int64),
        "task_names": ["a", "b"],
    }
    with pytest.raises(ValueError, match="strictly increasing"):
        store.encode_history(**kw)
    with pytest.raises(ValueError, match="task_names must be unique"):
        store.encode_history(**{**kw, "step": np.arange(3), "task_names": ["a", "a"]})


def test_every_file_opens_with_plain_xarray_in_a_fresh_process(tmp_path):
    encode_all(tmp_path, np.random.default_rng(8))
    script = textwrap.dedent("""
        import json, sys
        import xarray as xr
        out = {}
        for path in sys.argv[1:]:
            with xr.open_dataset(path) as ds:
                out[path] = {"dims": sorted(ds.sizes), "version": int(ds.attrs["schema_version"]),
                             "attrs": {n: sorted(v.attrs) for n, v in ds.data_vars.items()},
                             "dtypes": {n: str(v.dtype) for n, v in ds.variables.items()}}
        out["imported"] = sorted(m for m in sys.modules if m.startswith("selective_sharing"))
        print(json.dumps(out))
    """)
    paths = [str(p) for p in sorted(tmp_path.rglob("*.nc"))]
    assert len(paths) == 4
    proc = subprocess.run(
        [sys.executable, "-c", script, *paths],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out.pop("imported") == []
    for info in out.values():
        assert info["version"] == SCHEMA_VERSION
        assert info["attrs"] and all("description" in a for a in info["attrs"].values())
        for name, attrs in info["attrs"].items():  # categorical, index, flag: no units (CF)
            assert ("units" in attrs) == (name not in CATEGORICAL), name
    event = out[str(store.list_events(tmp_path)[0])]
    assert set(event["dims"]) == EVENT_DIMS
    assert event["dtypes"]["degenerate"] == "bool" and event["dtypes"]["summed"] == "float32"
    assert set(out[str(tmp_path / "history.nc")]["dims"]) == {"step", "task"}


# ----------------------------------------------------------------------------- atomic writes


def test_writes_leave_no_temp_files(tmp_path):
    encode_all(tmp_path, np.random.default_rng(9))
    store.write_manifest(tmp_path, {"status": "running"})
    assert not [f for f in files_in(tmp_path) if ".tmp" in f or Path(f).name.startswith(".")]


def test_interrupted_dataset_write_keeps_the_old_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    old = metrics_dataset(rng, ["a", "b"])
    store.write_metrics(tmp_path, old)

    def crash(self, path, *args, **kwargs):  # writes part of a file, then dies
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        store.write_metrics(tmp_path, metrics_dataset(rng, ["a", "b"]))
    monkeypatch.undo()
    xr.testing.assert_identical(store.read_metrics(tmp_path), old)
    assert files_in(tmp_path) == ["metrics.nc"]


@pytest.mark.parametrize("victim", ["fsync", "replace"])
def test_interrupted_bytes_write_keeps_the_old_file(tmp_path, monkeypatch, victim):
    store.write_manifest(tmp_path, {"status": "running", "seed": 1})

    def boom(*args):
        raise OSError("interrupted")

    monkeypatch.setattr(os, victim, boom)
    with pytest.raises(store.StoreError, match=r"manifest\.json: could not be written \(OSError: "
                       r"interrupted; \d+ bytes free on that disk\)"):
        store.update_manifest(tmp_path, status="complete")
    monkeypatch.undo()
    assert store.read_manifest(tmp_path)["status"] == "running"
    assert files_in(tmp_path) == ["manifest.json"]


# ----------------------------------------------------------------------------- bad files


def test_truncated_event_is_a_store_error_naming_the_file(tmp_path):
    result, meta = make_event(np.random.default_rng(11))
    path = store.write_event(tmp_path, encode(result, meta))
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 1, 100, 0):
        path.write_bytes(data[:size])
        with pytest.raises(StoreError, match="truncated") as err:
            store.read_event(path)
        assert str(path) in str(err.value) and err.value.path == path


def test_not_netcdf_and_missing_files(tmp_path):
    text = tmp_path / "history.nc"
    text.write_text("step,loss\n1,0.5\n")
    with pytest.raises(StoreError, match="not a NetCDF file") as err:
        store.read_history(tmp_path)
    assert str(text) in str(err.value)
    with pytest.raises(StoreError, match="no such file"):
        store.read_metrics(tmp_path)


def test_other_schema_version_names_both_versions_and_other_files_still_load(tmp_path):
    rng = np.random.default_rng(12)
    encode_all(tmp_path, rng)
    future = metrics_dataset(rng, ["a"]).assign_attrs(schema_version=SCHEMA_VERSION + 1)
    future.to_netcdf(tmp_path / "metrics.nc", engine="netcdf4")
    with pytest.raises(StoreError) as err:
        store.read_metrics(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "metrics.nc") in msg
    assert f"schema_version {SCHEMA_VERSION + 1} found, expected {SCHEMA_VERSION}" in msg
    assert store.read_history(tmp_path).attrs["schema_version"] == SCHEMA_VERSION
    with pytest.raises(StoreError, match="store_kind 'history' found, expected 'event'"):
        store.read_event(tmp_path / "history.nc")


def test_read_closes_the_file(tmp_path):
    encode_all(tmp_path, np.random.default_rng(13))
    path = store.list_events(tmp_path)[0]
    store.read_event(path)
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("no /proc on this platform")
    targets = {os.path.realpath(p) for p in fd_dir.iterdir() if p.exists()}
    assert os.path.realpath(path) not in targets


# ----------------------------------------------------------------------------- manifest


def test_manifest_round_trip_update_and_errors(tmp_path):
    store.write_manifest(tmp_path, {"status": "running", "seed": np.int64(3), "out": tmp_path})
    m = store.read_manifest(tmp_path)
    assert m == {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "seed": 3,
        "out": str(tmp_path),
    }
    assert store.update_manifest(tmp_path, status="complete", note=["e"])["status"] == "complete"
    assert store.read_manifest(tmp_path)["note"] == ["e"]
    with pytest.raises(StoreError, match="status='done' is invalid"):
        store.update_manifest(tmp_path, status="done")
    with pytest.raises(StoreError, match="not a run directory") as err:
        store.read_manifest(tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere" / "manifest.json") in str(err.value)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(StoreError, match="invalid JSON"):
        store.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(StoreError, match=f"schema_version 99 found, expected {SCHEMA_VERSION}"):
        store.read_manifest(tmp_path)


def test_run_paths_and_store_error_pickle(tmp_path):
    paths = store.RunPaths(tmp_path)
    assert paths.manifest == tmp_path / "manifest.json" and paths.lock == tmp_path / "run.lock"
    assert paths.checkpoint.name == "checkpoint.pt" and paths.event(7).name == "event_000007.nc"
    err = pickle.loads(pickle.dumps(StoreError(tmp_path / "x.nc", "broken")))
    assert (err.path, err.problem, str(err)) == (
        tmp_path / "x.nc",
        "broken",
        f"{tmp_path}/x.nc: broken",
    )


@given(
    shape=st.lists(st.integers(1, 300), min_size=1, max_size=4), itemsize=st.sampled_from([1, 4, 8])
)
def test_chunks_fit_the_shape_and_the_byte_budget(shape, itemsize):
    chunks = store_io._chunks(tuple(shape), itemsize)
    assert all(1 <= c <= s for c, s in zip(chunks, shape))
    assert int(np.prod(chunks)) * itemsize <= max(store_schema.CHUNK_BYTES, itemsize)
    if int(np.prod(shape)) * itemsize <= store_schema.CHUNK_BYTES:
        assert chunks == tuple(shape)


# ----------------------------------------------------------------------------- coordinates, units


def test_event_coordinates_label_entities_and_positions():
    result, meta = make_event(np.random.default_rng(15), E=4, R=3, C=5, T=6, r=2, K=3)
    ds = encode(result, meta)
    assert set(ds.coords) == EVENT_DIMS | {"entity_tasks", "entity_other_tasks"}
    positions = {"entity": 4, "entity_other": 4, "row": 3, "col": 5, "factor": 2, "cluster": 3,
                 "bin": 4, "sketch": 8}
    for dim, n in positions.items():
        coord = ds[dim]
        assert coord.dtype == np.int64 and coord.values.tolist() == list(range(n)), dim
        assert coord.attrs["description"] and "units" not in coord.attrs, dim
    names = meta["task_names"]
    members = [
        "/".join(t for t, a in zip(names, result.assignment_before) if a == e) for e in range(4)
    ]
    assert ds["entity_tasks"].values.tolist() == members
    assert ds["entity_other_tasks"].values.tolist() == members
    assert ds["entity_tasks"].dims == ("entity",)
    # the entity coordinate is the value assignment_before holds: a task's entity by label
    entity = int(ds["assignment_before"].sel(task="task_2"))
    assert "task_2" in str(ds["entity_tasks"].sel(entity=entity).values).split("/")
    assert bit_equal(ds["membership"].sel(entity=entity).values, result.membership[entity])
    assert ds["distances"].sel(distance="cosine", entity=1, entity_other=2) == \
        result.distances["cosine"][1, 2]


def test_activation_coordinates_label_entities_and_regions():
    ds = activations_dataset(np.random.default_rng(16), ["a", "b", "c"])
    a = ds["assignment"].values
    assert ds["entity"].values.tolist() == [0, 1, 2] and ds["region"].values.tolist() == [0, 1]
    assert ds["entity_tasks"].values.tolist() == [
        "/".join(t for t, g in zip("abc", a) if g == e) for e in range(3)
    ]
    assert "units" not in ds["entity"].attrs and ds["region"].attrs["description"]
    bare = activations_dataset(np.random.default_rng(16), ["a", "b"], full=False)
    assert "entity" not in bare.coords and "region" not in bare.coords


def test_spec_units_marker_and_categorical_variables(tmp_path):
    assert store_schema._table("x (a) int64 [-]\n    d")["x"].units is None
    assert store_schema._table("x (a) int64 [%]\n    d")["x"].units == "%"
    tables = (
        store.EVENT_VARS,
        store.HISTORY_VARS,
        store.METRICS_VARS,
        store.ACTIVATION_VARS,
        store_schema.AFFINITY_VARS,
    )
    assert {n for t in tables for n, spec in t.items() if spec.units is None} == CATEGORICAL
    encode_all(tmp_path, np.random.default_rng(17))
    read = [
        store.read_event(store.list_events(tmp_path)[0]),
        store.read_history(tmp_path),
        store.read_metrics(tmp_path),
        store.read_activations(store.list_activations(tmp_path)[0]),
    ]
    for ds in read:
        for name, var in ds.data_vars.items():
            assert ("units" in var.attrs) == (name not in CATEGORICAL), name
        for name, coord in ds.coords.items():  # only the step coordinate is a quantity
            assert ("units" in coord.attrs) == (name == "step"), name


def test_metric_units_percent_for_explained_variance_and_main_follows_the_main_metric():
    from selective_sharing.core.metrics import METRIC_UNITS, metric_units, task_metrics

    rng = np.random.default_rng(18)
    y = rng.normal(size=40)
    pred = (y + 0.3 * rng.normal(size=40))[:, None]
    t_idx = np.repeat([0, 1], 20)
    school_like = task_metrics(pred, y, t_idx, ["regression"] * 2, [1, 1])
    assert set(school_like) == {"rmse", "explained_variance"}
    ds = store.encode_metrics(**{
        **_metrics_kwargs(),
        "task_metrics": school_like,
        "main_metric": "explained_variance",
        "metric_units": metric_units(school_like),
    })
    assert ds["explained_variance"].attrs["units"] == "%" == ds["main"].attrs["units"]
    assert ds["rmse"].attrs["units"] == "1"
    assert METRIC_UNITS["explained_variance"] == "%" and set(METRIC_UNITS) == {
        "rmse", "explained_variance", "accuracy", "ndcg", "spearman",
        "pooled_explained_variance", "nmse", "pooled_rmse",
    }
    acc = store.encode_metrics(**{**_metrics_kwargs(), "metric_units": {"accuracy": "1"}})
    assert acc["main"].attrs["units"] == "1" and "units" not in acc["partition"].attrs


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["binary", "multiclass"], ("accuracy",)),
        (["regression"], ("rmse", "explained_variance")),
        (["rank"], ("rmse", "ndcg", "spearman")),
        (["regression", "binary"], ("rmse", "explained_variance", "accuracy")),
    ],
)
def test_task_metrics_hold_only_the_metrics_of_the_task_types(types, expected):
    from selective_sharing.core.metrics import applicable_metrics, task_metrics

    assert applicable_metrics(types) == expected
    rng = np.random.default_rng(19)
    t_idx = np.repeat(np.arange(len(types)), 10)
    y = np.where(np.isin(t_idx, [i for i, t in enumerate(types) if t in ("binary", "multiclass")]),
                 rng.integers(0, 2, t_idx.size), rng.normal(size=t_idx.size))
    pred = rng.normal(size=(t_idx.size, 2))
    out = task_metrics(pred, y, t_idx, types, [2 if t == "multiclass" else 1 for t in types])
    assert tuple(out) == expected
    assert all(np.isfinite(v).any() for v in out.values())  # none is all-NaN


def test_metrics_record_method_seed_and_dataset(tmp_path):
    ds = store.encode_metrics(
        **_metrics_kwargs(), method="ss_similarity", seed=np.int64(3), dataset="school"
    )
    store.write_metrics(tmp_path, ds)
    back = store.read_metrics(tmp_path)
    assert (back.attrs["method"], int(back.attrs["seed"]), back.attrs["dataset"]) == (
        "ss_similarity",
        3,
        "school",
    )
    assert back.attrs["variant"] == "real"
    assert not {"method", "seed", "dataset"} & set(store.encode_metrics(**_metrics_kwargs()).attrs)
    with pytest.raises(ValueError, match="seed must be an integer"):
        store.encode_metrics(**_metrics_kwargs(), seed=1.5)


_NEW_COORDS = store_schema.OPTIONAL_COORDS


def old_format(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as the code before coordinates and unit-less categories wrote it: no entity or
    position coordinates, ``units="1"`` on every data variable."""
    old = ds.copy(deep=True).drop_vars([c for c in ds.coords if c in _NEW_COORDS])
    for var in old.data_vars.values():
        var.attrs.setdefault("units", "1")
    return old


def test_old_format_files_without_coordinates_still_read_and_decode(tmp_path):
    rng = np.random.default_rng(20)
    result, meta = make_event(rng)
    new = encode(result, meta)
    old = old_format(new)
    assert not _NEW_COORDS & set(old.coords) and "entity" in old.dims
    path = store.atomic_write_dataset(store.RunPaths(tmp_path).event(meta["index"]), old)
    back = store.read_event(path)  # checksums (of the old content) verify
    xr.testing.assert_identical(back, old)
    decoded, decoded_meta = decode(back)
    assert_same_event(decoded, result)
    assert_same_meta(decoded_meta, meta)
    xr.testing.assert_identical(encode(decoded, decoded_meta), new)
    acts = old_format(activations_dataset(rng, meta["task_names"]))
    acts_path = store.atomic_write_dataset(tmp_path / "activations" / "final.nc", acts)
    xr.testing.assert_identical(store.read_activations(acts_path), acts)


def test_checksums_cover_the_coordinates(tmp_path):
    import netCDF4

    result, meta = make_event(np.random.default_rng(21))
    path = store.write_event(tmp_path, encode(result, meta))
    with netCDF4.Dataset(path, "a") as nc:
        nc["row"][0] = 99
    with pytest.raises(StoreError, match="checksum mismatch in variable 'row'"):
        store.read_event(path)


def test_resumed_run_accepts_its_older_event_files_without_coordinates(tmp_path):
    """A run started before the coordinates existed and resumed now re-creates the events after
    its checkpoint: an older file holding the same event is kept, a different one still raises."""
    result, meta = make_event(np.random.default_rng(22))
    new = encode(result, meta)
    path = store.atomic_write_dataset(store.RunPaths(tmp_path).event(meta["index"]),
                                      old_format(new))
    before = path.stat()
    assert store.write_event(tmp_path, new) == path
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    changed = EventResult(**{**result.__dict__, "threshold": 0.5})
    with pytest.raises(StoreError, match="differs"):
        store.write_event(tmp_path, encode(changed, meta))
    with pytest.raises(StoreError, match="attr step"):
        store.write_event(tmp_path, encode(result, dict(meta, step=1)))


# ----------------------------------------------------------------------------- the kinds table


def _records(rng) -> dict[str, store.Record]:
    """One record of every file kind, with NaN, infinities and -0.0 where floats are stored."""
    result, meta = make_event(rng)
    names = ("a", "b", "c")
    ds_metrics = metrics_dataset(rng, list(names))
    metrics = store.decode(ds_metrics)
    return {
        "event": store.Event(**decision(result), **dict(meta, task_names=tuple(meta["task_names"]))),
        "history": store.History(
            step=np.arange(1, 5) * 10, loss=_spiky(rng, (4, 3), "float32"),
            grad_norm=rng.random((4, 3)).astype(np.float32), lr=np.full(4, 1e-3),
            assignment=rng.integers(0, 3, (4, 3)), task_names=names,
        ),
        "metrics": metrics,
        "activations": store.decode(activations_dataset(rng, list(names))),
        "affinity": store.Affinity(
            task_names=names, affinity=_spiky(rng, (3, 3), "float64"),
            partition=np.array([0, 0, 1]), method="tag", recorded_steps=40,
            counters={"backward_passes": 12.0, "forward_passes": 10.0, "wall_time_s": 1.5},
        ),
    }


@pytest.mark.parametrize("kind", sorted(store.KINDS))
def test_every_kind_decodes_what_it_encodes_exactly(kind, tmp_path):
    """xarray's coder contract for every row of the table: ``decode(encode(x)) == x`` (bit for
    bit), in memory and through the file the generic write puts where the kind says."""
    record = _records(np.random.default_rng(30))[kind]
    row = store.KINDS[kind]
    ds = row.encode(record)
    assert ds.attrs["store_kind"] == kind and isinstance(record, row.record)
    assert set(ds.data_vars) <= set(row.variables) | set(getattr(record, "task_metrics", {}))
    assert row.decode(ds) == record and store.decode(ds) == record
    path = store.write(tmp_path, record)
    assert path == row.path(store.RunPaths(tmp_path), ds)
    back = store.open_store_dataset(path, kind)
    xr.testing.assert_identical(back, ds)
    assert store.decode(back) == record
    xr.testing.assert_identical(store.encode(store.decode(back)), back)
    lazy = store.open_store_dataset(path, kind, lazy=True)
    assert store.decode(lazy.load()) == record


def test_the_table_has_a_row_per_record_type_and_records_compare_bits():
    assert {row.record for row in store.KINDS.values()} == {
        store.Event, store.History, store.Metrics, store.Activations, store.Affinity
    }
    records = _records(np.random.default_rng(31))
    flipped = np.array(records["history"].lr)
    flipped[0] = -flipped[0]
    assert records["history"] != dataclasses.replace(records["history"], lr=flipped)
    assert records["history"] == dataclasses.replace(records["history"])
    with pytest.raises(ValueError, match="store_kind"):
        store.write_metrics(Path("unused"), store.encode(records["history"]))


def test_the_store_event_is_the_grouping_rules_event_result_plus_its_context():
    """The core side and analysis convert by field name: the names must stay the same."""
    assert [f.name for f in dataclasses.fields(EventResult)] == list(store.DECISION_FIELDS)
    assert {f.name for f in dataclasses.fields(store.Event)} == set(
        store.DECISION_FIELDS + store.CONTEXT_FIELDS
    )
    _, meta = make_event(np.random.default_rng(32))
    assert set(meta) == set(store.CONTEXT_FIELDS)


def test_the_manifest_event_list_is_derived_from_the_directory(tmp_path):
    """A run manifest's ``events`` is the directory's list on every write and read; the writer
    no longer rewrites the manifest after each event to keep it."""
    def on_disk() -> list:
        return json.loads((tmp_path / "manifest.json").read_text())["events"]

    store.write_manifest(tmp_path, {"status": "running", "events": ["stale.nc"]})
    assert on_disk() == [] and store.read_manifest(tmp_path)["events"] == []
    rng = np.random.default_rng(33)
    for index in (0, 1):
        result, meta = make_event(rng)
        store.write_event(tmp_path, encode(result, dict(meta, index=index)))
    names = ["event_000000.nc", "event_000001.nc"]
    assert store.read_manifest(tmp_path)["events"] == names and on_disk() == []
    assert store.update_manifest(tmp_path, status="complete")["events"] == names == on_disk()
    store.write_manifest(tmp_path, {"status": "complete"})  # not a run manifest: no list added
    assert "events" not in store.read_manifest(tmp_path)
    # a manifest written by an earlier version keeps its list: it loads, and is checked
    old = {"schema_version": SCHEMA_VERSION, "status": "complete", "events": names}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    assert store.read_manifest(tmp_path)["events"] == names
    store.list_events(tmp_path)[1].unlink()
    with pytest.raises(StoreError, match="listed in manifest.json but missing") as err:
        store.read_manifest(tmp_path)
    assert err.value.path == tmp_path / "events" / "event_000001.nc"


# ----------------------------------------------------------------------------- a few variables


def test_read_store_arrays_equals_open_store_dataset_on_every_kind(tmp_path):
    """The replay path's reader returns what the dataset reader returns: the same attributes
    (checksums removed) and, variable by variable, the same dtype and bits."""
    encode_all(tmp_path, np.random.default_rng(31))
    paths = store.RunPaths(tmp_path)
    files = {"event": store.list_events(tmp_path)[0], "history": paths.history,
             "metrics": paths.metrics, "activations": tmp_path / "activations" / "final.nc"}
    for kind, path in files.items():
        ds = store.open_store_dataset(path, kind)
        attrs, arrays = store_io.read_store_arrays(path, kind, list(ds.variables))
        assert attrs == ds.attrs and store.CHECKSUM_ATTR not in attrs, kind
        assert arrays.keys() == set(ds.variables), kind
        for name, var in ds.variables.items():
            assert bit_equal(arrays[name], var.values), (kind, name)


def test_read_store_arrays_reads_and_verifies_only_the_names_given(tmp_path):
    import netCDF4

    result, meta = make_event(np.random.default_rng(32))
    path = store.write_event(tmp_path, encode(result, meta))
    with netCDF4.Dataset(path, "a") as nc:
        nc["row"][0] = 99  # damage a coordinate that decoding never reads
    names = decoded_variables(bins=False)
    attrs, arrays = store_io.read_store_arrays(path, "event", [*names, "not_in_the_file"])
    assert set(arrays) == set(names) and attrs["store_kind"] == "event"
    assert bit_equal(arrays["summed"], result.summed)
    with pytest.raises(StoreError, match=f"{path}: content checksum mismatch in variable 'row'"):
        store_io.read_store_arrays(path, "event", ["summed", "row"])


def test_read_store_arrays_fails_as_open_store_dataset_does(tmp_path):
    """Same checks, same messages: missing, not NetCDF, truncated, another kind or version,
    a damaged checksum attribute."""
    rng = np.random.default_rng(33)
    encode_all(tmp_path, rng)
    event = store.list_events(tmp_path)[0]
    data = event.read_bytes()
    (tmp_path / "text.nc").write_text("step,loss\n")
    (tmp_path / "empty.nc").write_bytes(b"")
    (tmp_path / "half.nc").write_bytes(data[: len(data) // 2])
    future = metrics_dataset(rng, ["a"]).assign_attrs(schema_version=SCHEMA_VERSION + 1)
    future.to_netcdf(tmp_path / "future.nc", engine="netcdf4")
    damaged = store.open_store_dataset(event).assign_attrs({store.CHECKSUM_ATTR: "{not json"})
    damaged.to_netcdf(tmp_path / "damaged.nc", engine="netcdf4")
    cases = [("missing.nc", "event"), ("text.nc", "event"), ("empty.nc", "event"),
             ("half.nc", "event"), ("future.nc", "metrics"), ("history.nc", "event"),
             ("damaged.nc", "event")]
    for name, kind in cases:
        path = tmp_path / name
        with pytest.raises(StoreError) as expected:
            store.open_store_dataset(path, kind)
        with pytest.raises(StoreError) as err:
            store_io.read_store_arrays(path, kind, ["summed", "task"])
        assert str(err.value) == str(expected.value) and err.value.path == path, name


def test_decode_event_arrays_equals_decode_event(tmp_path):
    result, meta = make_event(np.random.default_rng(34))
    path = store.write_event(tmp_path, encode(result, meta))
    for bins in (True, False):
        names = decoded_variables(bins=bins)
        attrs, arrays = store_io.read_store_arrays(path, "event", names)
        lean = decode_event_arrays(attrs, arrays, source=str(path), bins=bins)
        full = store.decode_event(store.read_event(path), bins=bins)
        assert lean == full and (lean.bins is None) == (not bins)
    attrs, arrays = store_io.read_store_arrays(path, "event", ["summed", "task", "distance"])
    with pytest.raises(StoreError, match=rf"{path}: not a complete event dataset .*'threshold'"):
        decode_event_arrays(attrs, arrays, source=str(path), bins=False)


def test_an_event_file_without_a_decision_rule_was_decided_by_rule_1(tmp_path) -> None:
    """Files written before the decision rule was versioned lack the attribute: replay must
    recompute them with rule 1, the rule that decided them."""
    result, meta = make_event(np.random.default_rng(3))
    ds = encode(result, meta)
    assert ds.attrs["decision_rule"] == 2
    older = ds.copy()
    del older.attrs["decision_rule"]
    assert store.decode_event(older).decision_rule == 1
