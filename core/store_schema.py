"""The run store's schema and the pure encode/decode between in-memory results and
``xarray.Dataset`` objects; file I/O lives in :mod:`.store`, which re-exports all public names
here.

The tables below are the single source of truth of what every store file holds: each variable's
dims, dtype, units and description, one spec line ``name (dims) dtype [units]`` per variable
followed by indented description lines. The units marker follows the CF conventions:

- ``[1]``: a dimensionless quantity (losses, gradients, distances, shares);
- ``[count]``, ``[step]`` (optimizer steps), ``[s]`` (seconds), ``[%]`` (percent);
- ``[-]``: no units at all. The variable is written *without* a ``units`` attribute: categorical
  values and indices (entity, group, cluster and region ids, task and probe indices) and boolean
  flags or masks, which CF says carry none.

Task metrics (``metrics.nc``) get their units from
:data:`selective_sharing.core.metrics.METRIC_UNITS`.

Every dim has a coordinate where one is meaningful: ``task``/``task_other`` (task names),
``distance`` (distance names), ``step`` and ``probe`` (their own values), ``entity``/
``entity_other`` (the entity index, which assignment-like variables hold, plus the non-index
coordinate ``entity_tasks``/``entity_other_tasks`` naming each entity's member tasks) and
``row, col, factor, cluster, bin, sketch, region`` (integer positions 0..n-1, see
:data:`INDEX_COORDS`). Pure array axes (``unit``, ``hidden``, ``height``, ``width``) have none.
Files written before these coordinates existed are read as they are: no reader requires them.

Imports numpy, xarray, json and the pure :mod:`.grouping.types` only (never torch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from .grouping.types import EventResult

SCHEMA_VERSION = 1
"""Stored as the global attribute ``schema_version`` of every file and in ``manifest.json``.

Only a change that readers of this version cannot read bumps it. Additions did not: the entity
and position coordinates, ``[-]`` (no units) on categorical variables, metric units, the
``method``/``seed``/``dataset`` attributes of ``metrics.nc`` and leaving out metrics that do not
apply to a run's task types; files written without them read, decode and verify unchanged."""

STATUSES = ("running", "complete", "failed")
"""Allowed values of ``manifest["status"]``."""

COMPLEVEL = 4
CHUNK_BYTES = 1 << 20
"""Arrays larger than this are stored in chunks of at most about this size."""


@dataclasses.dataclass(frozen=True)
class VarSpec:
    """One variable of a store file: its named dims, dtype, units and description."""

    dims: tuple[str, ...]
    dtype: np.dtype
    units: str | None
    """CF units; None (``[-]`` in the tables): categorical or index, no ``units`` attribute."""
    description: str


NO_UNITS = "-"
"""The units marker of the spec tables meaning "no units" (categorical values, indices, flags)."""


_SPEC_LINE = re.compile(r"^(\w+) \(([\w, ]*)\) (\w+) \[(.*)\]$")


def _table(text: str) -> dict[str, VarSpec]:
    """Parse ``name (dims) dtype [units]`` lines, each followed by indented description lines."""
    specs: dict[str, list] = {}
    name = ""
    for line in text.strip().splitlines():
        if line.startswith(" "):
            specs[name][3].append(line.strip())
        else:
            name, dims, dtype, units = _SPEC_LINE.match(line).groups()
            specs[name] = [
                tuple(d for d in dims.split(", ") if d),
                np.dtype(dtype),
                None if units == NO_UNITS else units,
                [],
            ]
    return {n: VarSpec(d, t, u, " ".join(desc)) for n, (d, t, u, desc) in specs.items()}


EVENT_VARS = _table("""
summed (entity, row, col) float32 [1]
    input: the window's summed gradient signal of each entity
bins (entity, bin, sketch) float32 [1]
    input: the window's steps summed into consecutive bins, randomly projected to sketch dims
assignment_before (task) int64 [-]
    input: entity of each task before the event
streak_before (task, task_other) int64 [count]
    input: consecutive events in which each task pair was proposed together (hysteresis)
singular_values (entity, factor) float64 [1]
    top-r singular values of each entity's summed gradient (0 where the rank is lower)
factors (entity, factor, col) float64 [1]
    top-r right singular vectors (gradient factors) of each entity, sign-canonical
degenerate (entity) bool [-]
    entity whose summed gradient is numerically zero (never merged)
distances (distance, entity, entity_other) float64 [1]
    distance between entities, one matrix per distance
silhouettes (distance) float64 [1]
    silhouette score of the best average-linkage cut per distance (-1: no cut exists)
kmeans_labels (entity, factor) int64 [-]
    pooled k-means cluster of each factor (-1: zero singular value)
membership (entity, cluster) float64 [1]
    share of each entity's factor weight (sigma^2) per k-means cluster
proposed (entity) int64 [-]
    strategy's group of each entity (after guards, before hysteresis)
condition (entity, entity_other) float64 [1]
    value the strategy's condition compared for each entity pair
threshold () float64 [1]
    cut or threshold the condition was compared with (NaN: none applies)
streak_after (task, task_other) int64 [count]
    hysteresis state after the event
assignment_after (task) int64 [-]
    entity of each task after the event
parent (entity) int64 [-]
    entity after the event that each entity before it went into
""")

HISTORY_VARS = _table("""
step (step) int64 [step]
    optimizer step
loss (step, task) float32 [1]
    training loss of the task on the step's mini-batch (NaN where the batch had no labelled
    sample)
grad_norm (step, task) float32 [1]
    L2 norm of the gradient of the task's estimator on the step
lr (step) float64 [1]
    learning rate of the step
assignment (step, task) int64 [-]
    entity (group) of each task at the step
""")

METRICS_VARS = _table("""
n_parameters () int64 [count]
    trainable parameters of the final model
n_parameters_estimators () int64 [count]
    trainable parameters of the final estimators
n_groups () int64 [count]
    number of estimators (groups) at the end
partition (task) int64 [-]
    final group of each task
wall_time_s () float64 [s]
    wall-clock training time
backward_passes () int64 [count]
    backward passes run during training
forward_passes () int64 [count]
    forward passes run during training
steps () int64 [step]
    optimizer steps run
adjusted_rand_index () float64 [1]
    adjusted Rand index of the final partition against the true groups
main () float64 [1]
    mean over tasks of the main metric (NaN ignored); units: those of the main metric
""")

ACTIVATION_VARS = _table("""
probe (probe) int64 [-]
    index of the probe sample in the test split
representation (probe, unit) float32 [1]
    shared representation h of each probe sample
labels (probe, task) float32 [1]
    target of each task on each probe sample
label_mask (probe, task) bool [-]
    whether the task is labelled on the probe sample
assignment (task) int64 [-]
    entity (group) of each task at the snapshot
estimator_output (probe, entity, hidden) float32 [1]
    output of each entity's estimator on each probe sample
saliency (task, probe, height, width) float32 [1]
    saliency of the input for each task's output, at reduced resolution
region_masks (region, height, width) bool [-]
    input regions a task may need (e.g. image halves)
task_region (task) int64 [-]
    region each task needs (-1: none)
object_masks (probe, height, width) bool [-]
    pixels covered by the objects of each probe sample
""")

AFFINITY_VARS = _table("""
affinity (task, task_other) float64 [1]
    mean task affinity recorded during the joint training phase of a grouping baseline
    (cosine_groups: gradient cosine similarity on the shared trunk; tag: lookahead affinity
    of the row task's step on the column task's loss)
partition (task) int64 [-]
    groups formed from the affinity, which the grouped model was then trained with
""")

COORD_DESCRIPTIONS = {
    "task": "task name",
    "task_other": "task name (second axis of task-pair matrices)",
    "distance": "name of the distance between entities",
    "entity": "entity (estimator) index: the value assignment-like variables hold for its tasks",
    "entity_other": "entity (estimator) index (second axis of entity-pair matrices)",
    "entity_tasks": "names of the entity's member tasks, joined by '/' (empty: none)",
    "entity_other_tasks": "names of the entity's member tasks, joined by '/' (empty: none)",
}

INDEX_COORDS = {
    "row": "row of each entity's gradient signal (first_layer: a unit of the estimator's first "
    "hidden layer; all_params: the single row)",
    "col": "column of each entity's gradient signal (first_layer: a unit of the shared "
    "representation; all_params: a flattened estimator parameter)",
    "factor": "rank of the gradient factor (0: largest singular value)",
    "cluster": "pooled k-means cluster id (the values of kmeans_labels)",
    "bin": "bin of the event's window, in step order (0: earliest steps)",
    "sketch": "dimension of the random projection (sketch) of each bin",
    "region": "input region id (the values of task_region)",
}
"""Dims whose coordinate is the position ``0..n-1`` (int64, no units), with its description."""

OPTIONAL_COORDS = frozenset(
    {"entity", "entity_other", "entity_tasks", "entity_other_tasks", *INDEX_COORDS}
)
"""Coordinates that files written before they existed lack: no reader may require them."""
EVENT_ATTRS = (
    "index",
    "step",
    "window_start",
    "sketch_seed",
    "sketch_kind",
    "kmeans_k",
    "n_params_before",
    "n_params_after",
    "merge_mode",
    "grouping_config",
    "chosen_distance",
)
# EventResult fields stored one-to-one as event variables of the same name.
_EVENT_FIELDS = tuple(n for n in EVENT_VARS if n not in ("bins", "distances", "silhouettes"))


class StoreError(RuntimeError):
    """A store file is missing, truncated, corrupted, of another schema version or inconsistent.

    The message always starts with the file's path; ``path`` and ``problem`` are attributes.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # pickles across processes (Dask workers) despite the 2-arg init
        return type(self), (self.path, self.problem)


def check_version(path: str | os.PathLike, found: object) -> None:
    """Raise :class:`StoreError` naming ``path`` unless ``found`` is :data:`SCHEMA_VERSION`."""
    if found is None:
        raise StoreError(
            path,
            "has no schema_version: not a selective_sharing store file "
            f"(expected schema_version {SCHEMA_VERSION})",
        )
    if isinstance(found, np.generic):  # netCDF attributes come back as numpy scalars
        found = found.item()
    if found != SCHEMA_VERSION:
        raise StoreError(
            path,
            f"schema_version {found!r} found, expected {SCHEMA_VERSION}: "
            "written by another version of selective_sharing; read it with that "
            "version or re-run",
        )


def json_default(obj: object) -> object:
    """``json.dumps`` fallback for dataclasses (configs), numpy scalars/arrays and paths."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable: {obj!r}")


def build_variables(
    specs: Mapping[str, VarSpec], values: Mapping[str, object], sizes: dict[str, int]
) -> dict[str, xr.Variable]:
    """Check ``values`` against ``specs`` and wrap them as attributed variables.

    Dtypes must cast safely to the spec's (int32 -> int64 is fine; float64 -> float32 is
    refused: it would lose precision). ``sizes`` (dim -> size, from coordinates) is updated in
    place; a dim must have one size across the file. Raises ValueError naming the variable.
    """
    out = {}
    for name, value in values.items():
        spec = specs[name]
        arr = np.asarray(value)
        if not np.can_cast(arr.dtype, spec.dtype, casting="safe"):
            raise ValueError(
                f"{name} must have dtype {spec.dtype} (or one safely castable to "
                f"it); got {arr.dtype}"
            )
        if arr.ndim != len(spec.dims):
            raise ValueError(f"{name} must have dims {spec.dims}; got shape {arr.shape}")
        for dim, n in zip(spec.dims, arr.shape):
            if sizes.setdefault(dim, n) != n:
                raise ValueError(
                    f"{name} has {dim}={n} (shape {arr.shape}, dims {spec.dims}) "
                    f"but {dim}={sizes[dim]} elsewhere in the file"
                )
        attrs = {"description": spec.description}
        if spec.units is not None:
            attrs["units"] = spec.units
        out[name] = xr.Variable(spec.dims, arr.astype(spec.dtype, copy=True), attrs)
    return out


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape of at most about ``CHUNK_BYTES``, splitting leading dims first."""
    chunks = list(shape)
    for i in range(len(chunks)):
        if math.prod(chunks) * itemsize <= CHUNK_BYTES:
            break
        rest = math.prod(chunks[i + 1 :]) * itemsize
        chunks[i] = max(1, min(chunks[i], CHUNK_BYTES // max(rest, 1)))
    return tuple(chunks)


#: Global attribute holding ``{variable: sha256}`` of every variable's values (JSON).
CHECKSUM_ATTR = "content_sha256"


def _canonical(values: object) -> tuple[str, bytes]:
    """A dtype tag and bytes of ``values`` that survive the NetCDF round trip unchanged
    (strings as UTF-8, booleans as bytes, integers as int64/uint64, little-endian floats)."""
    a = np.asarray(values)
    if a.dtype.kind in "OUS":
        text = "\x1f".join(str(v) for v in a.ravel().tolist())
        return "str", text.encode("utf-8", "surrogatepass")
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    elif a.dtype.kind in "iu":
        a = a.astype("<i8" if a.dtype.kind == "i" else "<u8")
    else:
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return a.dtype.str, np.ascontiguousarray(a).tobytes()


def variable_digest(values: object) -> str:
    """SHA-256 (hex) of an array's shape, dtype family and values (see :func:`_canonical`)."""
    import hashlib

    tag, data = _canonical(values)
    digest = hashlib.sha256(f"{tag}|{np.shape(values)}|".encode())
    digest.update(data)
    return digest.hexdigest()


def content_checksums(ds: xr.Dataset) -> str:
    """The :data:`CHECKSUM_ATTR` value of ``ds``: JSON ``{variable: sha256}``, sorted."""
    return json.dumps({str(n): variable_digest(v.values) for n, v in sorted(ds.variables.items())})


def pop_checksums(ds: xr.Dataset, source: object = None) -> dict[str, str]:
    """Remove :data:`CHECKSUM_ATTR` from ``ds.attrs`` (in place) and return it parsed; ``{}``
    for files written before checksums existed. A damaged attribute is a StoreError."""
    raw = ds.attrs.pop(CHECKSUM_ATTR, None)
    if raw is None:
        return {}
    try:
        found = json.loads(raw)
    except ValueError as exc:
        found = exc
    if not isinstance(found, dict):
        where = source or ds.encoding.get("source", "<in-memory dataset>")
        raise StoreError(
            where,
            f"damaged {CHECKSUM_ATTR} attribute ({found!r:.80}): the file was modified or "
            "corrupted after it was written",
        )
    return {str(k): str(v) for k, v in found.items()}


def verify_variable(source: object, name: str, values: object, checksums: Mapping) -> None:
    """Raise StoreError naming ``source`` when ``values`` of ``name`` differ from the checksum
    written with the file (no check when the file carries none for ``name``)."""
    expected = checksums.get(str(name))
    if expected is not None and variable_digest(values) != expected:
        raise StoreError(
            source,
            f"content checksum mismatch in variable {name!r}: the file was modified or "
            "corrupted after it was written; restore it from a copy, or delete the run and "
            "train it again",
        )


def netcdf_encoding(ds: xr.Dataset) -> dict[str, dict]:
    """Per-variable NetCDF4 encoding: zlib level 4 for arrays, chunks where large, no fill value.

    ``_FillValue=None`` keeps xarray from masking any stored value on read: a NaN, or an
    integer that happens to equal a default fill value, comes back exactly as written.
    """
    encoding = {}
    for name, var in ds.variables.items():
        if var.dtype.kind not in "fiub":
            continue  # strings: netCDF4 variable-length strings, stored as they are
        enc: dict = {"_FillValue": None}
        if var.ndim and var.size:
            enc.update(zlib=True, complevel=COMPLEVEL, shuffle=True)
            if var.nbytes > CHUNK_BYTES:
                enc["chunksizes"] = _chunks(var.shape, var.dtype.itemsize)
        encoding[name] = enc
    return encoding


def _read(ds: xr.Dataset, name: str, spec: VarSpec) -> np.ndarray:
    return np.array(ds[name].values, dtype=spec.dtype, copy=True)


def _as_int(name: str, value: object) -> int:
    try:
        return int(np.int64(value.__index__()))  # type: ignore[attr-defined]
    except (AttributeError, TypeError, OverflowError):
        raise ValueError(f"{name} must be an integer in the int64 range; got {value!r}") from None


def _as_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str; got {value!r}")
    return value


def _names_coord(param: str, names: object, dim: str) -> xr.Variable:
    """String coordinate of unique non-empty names (``param`` names the argument in errors)."""
    values = list(names)  # type: ignore[call-overload]
    if not all(isinstance(v, str) and v for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{param} must be unique non-empty strings; got {values!r}")
    return xr.Variable(
        (dim,), np.array(values, dtype=str), {"description": COORD_DESCRIPTIONS[dim]}
    )


def _entity_coords(assignment: object, task_names: list[str], n: int) -> dict[str, xr.Variable]:
    """``entity`` (index 0..n-1) and ``entity_other`` coordinates with the non-index
    ``entity_tasks``/``entity_other_tasks``: each entity's member tasks from ``assignment``."""
    assignment = np.asarray(assignment).reshape(-1)
    members = [
        "/".join(t for t, a in zip(task_names, assignment.tolist()) if a == e) for e in range(n)
    ]
    coords = {}
    for dim in ("entity", "entity_other"):
        coords[dim] = xr.Variable(
            (dim,), np.arange(n, dtype=np.int64), {"description": COORD_DESCRIPTIONS[dim]}
        )
        coords[f"{dim}_tasks"] = xr.Variable(
            (dim,), np.array(members, dtype=str),
            {"description": COORD_DESCRIPTIONS[f"{dim}_tasks"]},
        )
    return coords


def _index_coords(variables: Mapping[str, xr.Variable], coords: dict) -> dict[str, xr.Variable]:
    """``coords`` plus the :data:`INDEX_COORDS` of every dim the variables use."""
    out = dict(coords)
    for var in variables.values():
        for dim, n in zip(var.dims, var.shape):
            if dim in INDEX_COORDS and dim not in out:
                out[dim] = xr.Variable(
                    (dim,), np.arange(n, dtype=np.int64), {"description": INDEX_COORDS[dim]}
                )
    return out


def _dataset(kind: str, variables: dict, coords: dict, attrs: dict) -> xr.Dataset:
    base = {
        "schema_version": SCHEMA_VERSION,
        "store_kind": kind,
        "title": f"selective_sharing run store: {kind}",
    }
    return xr.Dataset(variables, coords=_index_coords(variables, coords), attrs=base | attrs)


# ----------------------------------------------------------------------------- events


def _event_variables(
    result: EventResult, bins: np.ndarray, task_names: list[str]
) -> tuple[dict[str, xr.Variable], dict[str, xr.Variable]]:
    """Variables and coordinates of an event; the distance dicts become one array each."""
    names = list(result.distances)
    if sorted(result.silhouettes) != sorted(names):
        raise ValueError(
            f"result.silhouettes keys {sorted(result.silhouettes)} must equal "
            f"result.distances keys {sorted(names)}"
        )
    n_e = result.n_entities_before
    values = {name: getattr(result, name) for name in _EVENT_FIELDS}
    values["bins"] = bins
    values["distances"] = np.zeros((0, n_e, n_e))
    if names:
        shapes = {n: np.shape(result.distances[n]) for n in names}
        if set(shapes.values()) != {(n_e, n_e)}:
            raise ValueError(f"result.distances must all have shape {(n_e, n_e)}; got {shapes}")
        values["distances"] = np.stack([result.distances[n] for n in names])
    values["silhouettes"] = np.array([result.silhouettes[n] for n in names], dtype=np.float64)
    coords = {
        "task": _names_coord("task_names", task_names, "task"),
        "task_other": _names_coord("task_names", task_names, "task_other"),
        "distance": _names_coord("result.distances", names, "distance"),
    }
    variables = build_variables(EVENT_VARS, values, {d: v.size for d, v in coords.items()})
    coords.update(_entity_coords(result.assignment_before, list(task_names), n_e))
    return variables, coords


def encode_event(
    result: EventResult,
    *,
    index: int,
    step: int,
    window_start: int,
    bins: np.ndarray,
    sketch_seed: int,
    sketch_kind: str,
    task_names: list[str],
    n_params_before: int,
    n_params_after: int,
    merge_mode: str,
    grouping_config: dict,
) -> xr.Dataset:
    """Encode one grouping event as a store dataset, exactly inverted by :func:`decode_event`.

    Parameters
    ----------
    result : EventResult
        The event's inputs, intermediates and outcome (E entities, T tasks, r factors).
    index, step, window_start : int
        Event number, the step it ran at, and the first step of its window.
    bins : (E, n_bins, sketch) float32
        The window's steps summed into bins and projected to ``sketch`` dimensions.
    sketch_seed, sketch_kind : int, str
        How the projection is rebuilt.
    task_names : list of str, (T,)
    n_params_before, n_params_after : int
        Parameter counts of the model before and after the merge.
    merge_mode : str
        How merged estimators were initialised (``"average"``, ``"best"``, ``"first"``).
    grouping_config : dict
        The resolved grouping configuration (stored as a JSON string attribute).
    """
    variables, coords = _event_variables(result, bins, task_names)
    ints = {
        "index": index,
        "step": step,
        "window_start": window_start,
        "sketch_seed": sketch_seed,
        "kmeans_k": result.kmeans_k,
        "n_params_before": n_params_before,
        "n_params_after": n_params_after,
    }
    attrs = {name: _as_int(name, value) for name, value in ints.items()}
    attrs.update(
        sketch_kind=_as_str("sketch_kind", sketch_kind),
        merge_mode=_as_str("merge_mode", merge_mode),
        chosen_distance=_as_str("result.chosen_distance", result.chosen_distance),
        grouping_config=json.dumps(grouping_config, sort_keys=True, default=json_default),
        n_entities_before=result.n_entities_before,
        n_entities_after=result.n_entities_after,
    )
    return _dataset("event", variables, coords, attrs)


def decode_event(ds: xr.Dataset, *, bins: bool = True) -> tuple[EventResult, dict]:
    """Invert :func:`encode_event`: ``(EventResult, meta)``.

    ``meta`` holds index, step, window_start, bins, sketch_seed, sketch_kind, task_names,
    n_params_before, n_params_after, merge_mode and grouping_config (a dict): the keyword
    arguments of :func:`encode_event`, so ``encode_event(*decode_event(ds)[:1], **meta)``
    is identical to ``ds``. ``bins=False``: ``ds`` may lack ``bins`` (read with
    ``read_event(path, bins=False)``) and ``meta["bins"]`` is None.
    """
    source = str(ds.encoding.get("source", "<in-memory dataset>"))
    check_version(source, ds.attrs.get("schema_version"))
    wanted = {n: spec for n, spec in EVENT_VARS.items() if bins or n != "bins"}
    missing = sorted((set(wanted) - set(ds.variables)) | (set(EVENT_ATTRS) - set(ds.attrs)))
    if ds.attrs.get("store_kind") != "event" or missing:
        raise StoreError(
            source,
            f"not a complete event dataset (store_kind "
            f"{ds.attrs.get('store_kind')!r}, missing {missing})",
        )
    arr = {name: _read(ds, name, spec) for name, spec in wanted.items()}
    a = ds.attrs
    names = [str(n) for n in ds["distance"].values]
    result = EventResult(
        **{name: arr[name] for name in _EVENT_FIELDS if name != "threshold"},
        distances={n: arr["distances"][i].copy() for i, n in enumerate(names)},
        silhouettes={n: float(arr["silhouettes"][i]) for i, n in enumerate(names)},
        chosen_distance=str(a["chosen_distance"]),
        kmeans_k=int(a["kmeans_k"]),
        threshold=float(arr["threshold"]),
    )
    meta = {k: int(a[k]) for k in ("index", "step", "window_start")}
    meta.update(
        bins=arr.get("bins"),
        sketch_seed=int(a["sketch_seed"]),
        sketch_kind=str(a["sketch_kind"]),
        task_names=[str(t) for t in ds["task"].values],
        n_params_before=int(a["n_params_before"]),
        n_params_after=int(a["n_params_after"]),
        merge_mode=str(a["merge_mode"]),
        grouping_config=json.loads(a["grouping_config"]),
    )
    return result, meta


# ----------------------------------------------------------------------------- other files


def encode_history(
    *,
    step: np.ndarray,
    loss: np.ndarray,
    grad_norm: np.ndarray,
    lr: np.ndarray,
    assignment: np.ndarray,
    task_names: list[str],
) -> xr.Dataset:
    """Per-step training history (dims ``step``, ``task``).

    ``step`` (S,) int64, strictly increasing (the ``step`` coordinate); ``loss`` and
    ``grad_norm`` (S, T) float32; ``lr`` (S,) float64; ``assignment`` (S, T) int64.
    """
    coords = {"task": _names_coord("task_names", task_names, "task")}
    values = {
        "step": step,
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": lr,
        "assignment": assignment,
    }
    variables = build_variables(HISTORY_VARS, values, {"task": coords["task"].size})
    coords["step"] = variables.pop("step")
    if np.any(np.diff(coords["step"].values) <= 0):
        raise ValueError(f"step must be strictly increasing; got {coords['step'].values}")
    return _dataset("history", variables, coords, {})


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():  # all-NaN gives NaN, which is the answer, not a problem
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if values.size else float("nan")


def encode_metrics(
    *,
    task_names: list[str],
    task_metrics: dict[str, np.ndarray],
    main_metric: str,
    n_parameters: int,
    n_parameters_estimators: int,
    n_groups: int,
    assignment: np.ndarray,
    wall_time_s: float,
    backward_passes: int,
    forward_passes: int,
    steps: int,
    adjusted_rand_index: float | None,
    variant: str,
    metric_units: dict[str, str] | None = None,
    method: str | None = None,
    seed: int | None = None,
    dataset: str | None = None,
) -> xr.Dataset:
    """Final test metrics of a run.

    ``task_metrics`` maps each metric name to its (T,) values (NaN where undefined for a task);
    each becomes a float64 variable on ``task`` with attribute ``role="task_metric"`` and units
    from ``metric_units`` (default ``"1"``; training passes
    :func:`selective_sharing.core.metrics.metric_units`). Give only the metrics that apply to
    the run's task types: a metric a run does not have is absent, which readers take as "not
    applicable". ``assignment`` (T,) is stored as ``partition``; ``main`` is the NaN-ignoring
    mean over tasks of ``task_metrics[main_metric]``; ``adjusted_rand_index`` is omitted when
    None. Global attributes: ``main_metric``, ``variant`` and, when given, ``method``, ``seed``
    and ``dataset`` (the dataset's name).
    """
    coords = {"task": _names_coord("task_names", task_names, "task")}
    if main_metric not in task_metrics:
        raise ValueError(f"main_metric={main_metric!r} must be one of {sorted(task_metrics)}")
    specs = dict(METRICS_VARS)
    for name in task_metrics:
        if not isinstance(name, str) or not name or "/" in name or name in [*specs, "task"]:
            raise ValueError(
                f"task metric name {name!r} must be a non-empty str without '/' (a NetCDF "
                f"variable name) and not one of {sorted(specs) + ['task']}"
            )
        units = (metric_units or {}).get(name, "1")
        specs[name] = VarSpec(("task",), np.dtype("float64"), units, f"test-set {name} per task")
    specs["main"] = dataclasses.replace(specs["main"], units=specs[main_metric].units)
    values = dict(
        task_metrics,
        n_parameters=n_parameters,
        partition=assignment,
        n_parameters_estimators=n_parameters_estimators,
        n_groups=n_groups,
        wall_time_s=wall_time_s,
        backward_passes=backward_passes,
        forward_passes=forward_passes,
        steps=steps,
    )
    if adjusted_rand_index is not None:
        values["adjusted_rand_index"] = adjusted_rand_index
    values["main"] = _nanmean(np.asarray(task_metrics[main_metric], dtype=np.float64))
    variables = build_variables(specs, values, {"task": coords["task"].size})
    for name in task_metrics:
        variables[name].attrs["role"] = "task_metric"
    attrs: dict[str, object] = {"main_metric": main_metric, "variant": _as_str("variant", variant)}
    if method is not None:
        attrs["method"] = _as_str("method", method)
    if seed is not None:
        attrs["seed"] = _as_int("seed", seed)
    if dataset is not None:
        attrs["dataset"] = _as_str("dataset", dataset)
    return _dataset("metrics", variables, coords, attrs)


def encode_activations(
    *,
    name: str,
    step: int,
    task_names: list[str],
    probe_index: np.ndarray,
    representation: np.ndarray,
    labels: np.ndarray,
    label_mask: np.ndarray,
    assignment: np.ndarray,
    estimator_output: np.ndarray | None,
    saliency: np.ndarray | None,
    region_masks: np.ndarray | None,
    task_region: np.ndarray | None,
    object_masks: np.ndarray | None,
    method: str,
) -> xr.Dataset:
    """A snapshot of the shared representation on a fixed probe set (the Figure 6 study).

    Shapes and dtypes are those of :data:`ACTIVATION_VARS`; ``probe_index`` (probe,) int64
    becomes the ``probe`` coordinate. Optional arrays given as None are left out. ``name``
    names the file; ``method`` is the run's training method (e.g. ``"mtl"``).
    """
    coords = {"task": _names_coord("task_names", task_names, "task")}
    given = {
        "probe": probe_index,
        "representation": representation,
        "labels": labels,
        "label_mask": label_mask,
        "assignment": assignment,
        "estimator_output": estimator_output,
        "saliency": saliency,
        "region_masks": region_masks,
        "task_region": task_region,
        "object_masks": object_masks,
    }
    values = {k: v for k, v in given.items() if v is not None}
    sizes = {"task": coords["task"].size}
    variables = build_variables(ACTIVATION_VARS, values, sizes)
    coords["probe"] = variables.pop("probe")
    if "entity" in sizes:
        entities = _entity_coords(assignment, list(task_names), sizes["entity"])
        coords.update(entity=entities["entity"], entity_tasks=entities["entity_tasks"])
    attrs = {
        "name": _as_str("name", name),
        "step": _as_int("step", step),
        "method": _as_str("method", method),
    }
    return _dataset("activations", variables, coords, attrs)


# ----------------------------------------------------------------------------- affinity


def encode_affinity(
    *,
    task_names: list[str],
    affinity: np.ndarray,
    partition: np.ndarray,
    method: str,
    recorded_steps: int,
    counters: dict[str, float],
) -> xr.Dataset:
    """The affinity phase of a grouping baseline (``affinity.nc``): the (T, T) affinity, the
    partition formed from it, and what the phase cost (``counters``: backward_passes,
    forward_passes, wall_time_s), so a resumed run need not repeat it."""
    names = _names_coord("task_names", task_names, "task")
    coords = {"task": names, "task_other": names.copy()}
    coords["task_other"] = xr.Variable(("task_other",), names.values,
                                       {"description": COORD_DESCRIPTIONS["task_other"]})
    values = {"affinity": affinity, "partition": partition}
    variables = build_variables(AFFINITY_VARS, values, {"task": names.size,
                                                        "task_other": names.size})
    attrs = {"method": _as_str("method", method), "recorded_steps": int(recorded_steps)}
    attrs.update({f"phase_{k}": float(v) for k, v in counters.items()})
    return _dataset("affinity", variables, coords, attrs)
