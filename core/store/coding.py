"""Shared pieces of every kind's encoder and decoder: checked, attributed variables,
coordinates and the dataset frame (``schema_version``, ``store_kind``, ``title``).

Encoders check what they are given and fail with a ValueError or TypeError naming the field;
decoders copy what they read into arrays of the spec's dtype, so a decoded record owns its data.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np
import xarray as xr

from .schema import COORD_DESCRIPTIONS, INDEX_COORDS, SCHEMA_VERSION, VarSpec


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


def read_array(ds: xr.Dataset, name: str, spec: VarSpec) -> np.ndarray:
    """A copy of variable ``name`` as an array of the spec's dtype (a record owns its data:
    no view into a dataset a caller may still change)."""
    return np.array(ds[name].values, dtype=spec.dtype, copy=True)


def as_int(name: str, value: object) -> int:
    """``value`` as a Python int in the int64 range (NetCDF's widest integer attribute); a
    float, even an integral one, is refused: it would hide a units or type mix-up."""
    try:
        return int(np.int64(value.__index__()))  # type: ignore[attr-defined]
    except (AttributeError, TypeError, OverflowError):
        raise ValueError(f"{name} must be an integer in the int64 range; got {value!r}") from None


def as_str(name: str, value: object) -> str:
    """``value`` itself when it is a str; a TypeError naming ``name`` otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str; got {value!r}")
    return value


def names_coord(param: str, names: object, dim: str) -> xr.Variable:
    """String coordinate of unique non-empty names (``param`` names the argument in errors)."""
    values = list(names)  # type: ignore[call-overload]
    if not all(isinstance(v, str) and v for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{param} must be unique non-empty strings; got {values!r}")
    return xr.Variable(
        (dim,), np.array(values, dtype=str), {"description": COORD_DESCRIPTIONS[dim]}
    )


def entity_coords(assignment: object, task_names: list[str], n: int) -> dict[str, xr.Variable]:
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


def make_dataset(kind: str, variables: dict, coords: dict, attrs: dict) -> xr.Dataset:
    """A store dataset of ``kind``: the variables, their coordinates (position coordinates
    added) and the global attributes every file carries, then ``attrs``."""
    base = {
        "schema_version": SCHEMA_VERSION,
        "store_kind": kind,
        "title": f"selective_sharing run store: {kind}",
    }
    return xr.Dataset(variables, coords=_index_coords(variables, coords), attrs=base | attrs)


def same_value(a: object, b: object) -> bool:
    """Exact equality of record fields: arrays by dtype, shape and bytes (so NaN equals the same
    NaN and -0.0 differs from 0.0), mappings key by key (in any order, as ``dict`` does; the
    order a file stores them in is checked by comparing datasets), sequences item by item."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        x, y = np.asarray(a), np.asarray(b)
        return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return type(a) is type(b) and a == b


class Record:
    """Base of the typed records the decoders return (frozen dataclasses of arrays and scalars).

    ``==`` is exact, field by field (:func:`same_value`): the coder contract
    ``decode(encode(record)) == record`` is a statement about bits, not about closeness.
    Records are not hashable (they hold arrays).
    """

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            same_value(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        )

    def fields(self) -> dict[str, object]:
        """The record's fields by name (shallow: the arrays are shared, not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore
