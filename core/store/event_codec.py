"""The event codec: :class:`~.records.Event` <-> the dataset of ``events/event_NNNNNN.nc``.

The distance and silhouette dicts become one ``distances (distance, entity, entity_other)``
array and one ``silhouettes (distance,)`` array with a ``distance`` name coordinate; scalars
and the JSON grouping config become global attributes, as does the record of the
edge-permutation null (``null_test``) where the event ran one. ``decode_event(encode_event(e))
== e``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import xarray as xr

from .coding import (
    as_int,
    as_str,
    build_variables,
    entity_coords,
    json_default,
    make_dataset,
    names_coord,
)
from .errors import StoreError, check_version
from .records import Event
from .schema import EVENT_ATTRS, EVENT_VARS

# Event fields stored one-to-one as event variables of the same name (EVENT_VARS order, which
# is also the order encoding checks them in, so errors name the first bad field).
_ARRAY_FIELDS = tuple(n for n in EVENT_VARS if n not in ("bins", "distances", "silhouettes"))
_INT_ATTRS = ("index", "step", "window_start", "sketch_seed", "kmeans_k")
_INT_ATTRS_AFTER = ("n_params_before", "n_params_after")


_NULL_FLOATS = ("p_value", "statistic", "alpha")
_NULL_INTS = ("samples", "key")


def _encode_null(null: object) -> str:
    """The ``null_test`` attribute: JSON of the mapping (floats round-trip exactly)."""
    if not isinstance(null, Mapping) or set(null) != {*_NULL_FLOATS, *_NULL_INTS, "silhouettes"}:
        got = sorted(null) if isinstance(null, Mapping) else type(null).__name__
        raise ValueError(
            f"result.null_test must be None or a mapping with keys "
            f"{sorted({*_NULL_FLOATS, *_NULL_INTS, 'silhouettes'})}; got {got}"
        )
    values = np.asarray(null["silhouettes"])
    if values.ndim != 1 or not np.can_cast(values.dtype, np.float64, casting="safe"):
        raise ValueError(f"result.null_test['silhouettes'] must be 1-D float; got {values.dtype} "
                         f"{values.shape}")
    out: dict[str, object] = {k: float(null[k]) for k in _NULL_FLOATS}
    out.update({k: as_int(f"result.null_test[{k!r}]", null[k]) for k in _NULL_INTS})
    out["silhouettes"] = [float(v) for v in values.astype(np.float64)]
    return json.dumps(out, sort_keys=True)


def _decode_null(text: object) -> dict | None:
    """Invert :func:`_encode_null`; None for a file without the attribute."""
    if text is None:
        return None
    raw = json.loads(str(text))
    out: dict[str, object] = {k: float(raw[k]) for k in _NULL_FLOATS}
    out.update({k: int(raw[k]) for k in _NULL_INTS})
    out["silhouettes"] = np.array(raw["silhouettes"], dtype=np.float64).reshape(-1)
    return out


def decoded_variables(*, bins: bool = True) -> tuple[str, ...]:
    """The variables :func:`decode_event` reads: the event variables (``bins`` only when asked
    for) and the ``task`` and ``distance`` name coordinates; nothing decoded depends on the
    file's other coordinates (entity and index coordinates)."""
    return (*(n for n in EVENT_VARS if bins or n != "bins"), "task", "distance")


def _variables(event: Event) -> tuple[dict[str, xr.Variable], dict[str, xr.Variable]]:
    """Variables and coordinates of an event; the distance dicts become one array each."""
    names = list(event.distances)
    if sorted(event.silhouettes) != sorted(names):
        raise ValueError(
            f"result.silhouettes keys {sorted(event.silhouettes)} must equal "
            f"result.distances keys {sorted(names)}"
        )
    n_e = event.n_entities_before
    values = {name: getattr(event, name) for name in _ARRAY_FIELDS}
    values["bins"] = event.bins
    values["distances"] = np.zeros((0, n_e, n_e))
    if names:
        shapes = {n: np.shape(event.distances[n]) for n in names}
        if set(shapes.values()) != {(n_e, n_e)}:
            raise ValueError(f"result.distances must all have shape {(n_e, n_e)}; got {shapes}")
        values["distances"] = np.stack([event.distances[n] for n in names])
    values["silhouettes"] = np.array([event.silhouettes[n] for n in names], dtype=np.float64)
    coords = {
        "task": names_coord("task_names", event.task_names, "task"),
        "task_other": names_coord("task_names", event.task_names, "task_other"),
        "distance": names_coord("result.distances", names, "distance"),
    }
    variables = build_variables(EVENT_VARS, values, {d: v.size for d, v in coords.items()})
    coords.update(entity_coords(event.assignment_before, list(event.task_names), n_e))
    return variables, coords


def encode_event(event: Event) -> xr.Dataset:
    """Encode one grouping event as a store dataset, exactly inverted by :func:`decode_event`.

    Raises ValueError (TypeError for a non-str name) naming the first field of a wrong dtype,
    number of dims or size.
    """
    variables, coords = _variables(event)
    ints = _INT_ATTRS + _INT_ATTRS_AFTER
    attrs: dict[str, object] = {name: as_int(name, getattr(event, name)) for name in ints}
    attrs.update(
        sketch_kind=as_str("sketch_kind", event.sketch_kind),
        merge_mode=as_str("merge_mode", event.merge_mode),
        chosen_distance=as_str("result.chosen_distance", event.chosen_distance),
        grouping_config=json.dumps(event.grouping_config, sort_keys=True, default=json_default),
        decision_rule=as_int("decision_rule", event.decision_rule),
        n_entities_before=event.n_entities_before,
        n_entities_after=event.n_entities_after,
    )
    if event.null_test is not None:
        attrs["null_test"] = _encode_null(event.null_test)
    return make_dataset("event", variables, coords, attrs)


def decode_event(ds: xr.Dataset, *, bins: bool = True) -> Event:
    """Invert :func:`encode_event`.

    ``bins=False``: ``ds`` may lack ``bins`` (read with ``read_event(path, bins=False)``, which
    skips most of the file's bytes; deciding and replaying never use them) and the record's
    ``bins`` is None. Raises StoreError naming the file for another schema version, another
    kind, or a missing variable or attribute.
    """
    source = str(ds.encoding.get("source", "<in-memory dataset>"))
    return decode_event_arrays(ds.attrs, ds.variables, source=source, bins=bins)


def decode_event_arrays(
    attrs: Mapping[str, object], arrays: Mapping[str, object], *, source: str, bins: bool = True
) -> Event:
    """:func:`decode_event` from an event file's global attributes and its variables (arrays,
    or xarray variables) by name, as :func:`~.io.read_store_arrays` returns them for
    :func:`decoded_variables`: replaying a run reads its events so, without building an
    ``xarray.Dataset`` per file. ``source`` names the file in errors. The record owns its
    arrays (copies)."""
    check_version(source, attrs.get("schema_version"))
    wanted = {n: spec for n, spec in EVENT_VARS.items() if bins or n != "bins"}
    missing = sorted((set(wanted) - set(arrays)) | (set(EVENT_ATTRS) - set(attrs)))
    if attrs.get("store_kind") != "event" or missing:
        raise StoreError(
            source,
            f"not a complete event dataset (store_kind "
            f"{attrs.get('store_kind')!r}, missing {missing})",
        )
    arr = {name: np.array(arrays[name], dtype=spec.dtype, copy=True)
           for name, spec in wanted.items()}
    a = attrs
    names = [str(n) for n in np.asarray(arrays["distance"]).tolist()]
    return Event(
        **{name: arr[name] for name in _ARRAY_FIELDS if name != "threshold"},
        distances={n: arr["distances"][i].copy() for i, n in enumerate(names)},
        silhouettes={n: float(arr["silhouettes"][i]) for i, n in enumerate(names)},
        chosen_distance=str(a["chosen_distance"]),
        threshold=float(arr["threshold"]),
        **{k: int(a[k]) for k in _INT_ATTRS + _INT_ATTRS_AFTER},
        bins=arr.get("bins"),
        sketch_kind=str(a["sketch_kind"]),
        task_names=tuple(str(t) for t in np.asarray(arrays["task"]).tolist()),
        merge_mode=str(a["merge_mode"]),
        grouping_config=json.loads(a["grouping_config"]),
        decision_rule=int(a.get("decision_rule", 1)),  # files before it existed: rule 1
        null_test=_decode_null(a.get("null_test")),  # no test ran (or the file predates it)
    )
