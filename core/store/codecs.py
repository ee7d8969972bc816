"""Codecs of the files other than events: history, metrics, activations, affinity.

Each ``encode_*`` takes its record (:mod:`.records`) and checks it against the kind's table in
:mod:`.schema`; each ``decode_*`` inverts it exactly: ``decode(encode(record)) == record``.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import xarray as xr

from .coding import as_int, as_str, build_variables, entity_coords, make_dataset, names_coord
from .coding import read_array as _array
from .records import Activations, Affinity, History, Metrics
from .schema import ACTIVATION_VARS, AFFINITY_VARS, HISTORY_VARS, METRICS_VARS, VarSpec


def _task_names(ds: xr.Dataset) -> tuple[str, ...]:
    return tuple(str(t) for t in ds["task"].values)


# ----------------------------------------------------------------------------- history


def encode_history(history: History) -> xr.Dataset:
    """Per-step training history (dims ``step``, ``task``); ``step`` becomes the coordinate."""
    coords = {"task": names_coord("task_names", history.task_names, "task")}
    values = {n: getattr(history, n) for n in HISTORY_VARS}
    variables = build_variables(HISTORY_VARS, values, {"task": coords["task"].size})
    coords["step"] = variables.pop("step")
    if np.any(np.diff(coords["step"].values) <= 0):
        raise ValueError(f"step must be strictly increasing; got {coords['step'].values}")
    return make_dataset("history", variables, coords, {})


def decode_history(ds: xr.Dataset) -> History:
    """Invert :func:`encode_history`."""
    arrays = {n: _array(ds, n, spec) for n, spec in HISTORY_VARS.items()}
    return History(**arrays, task_names=_task_names(ds))


# ----------------------------------------------------------------------------- metrics


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():  # all-NaN gives NaN, which is the answer, not a problem
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if values.size else float("nan")


def _metric_specs(metrics: Metrics) -> dict[str, VarSpec]:
    """:data:`METRICS_VARS` plus one float64 ``(task,)`` spec per task metric, one float64
    scalar spec per run metric, and ``main`` in the main metric's units."""
    specs = dict(METRICS_VARS)
    kinds = [(n, ("task",), "per task") for n in metrics.task_metrics]
    kinds += [(n, (), "over the whole test set") for n in (metrics.run_metrics or {})
              if not n.startswith("val_")]
    kinds += [(n, (), "on the validation split (task metrics: mean over tasks)")
              for n in (metrics.run_metrics or {}) if n.startswith("val_")]
    for name, dims, what in kinds:
        if not isinstance(name, str) or not name or "/" in name or name in [*specs, "task"]:
            raise ValueError(
                f"metric name {name!r} must be a non-empty str without '/' (a NetCDF "
                f"variable name), not one of {sorted(specs) + ['task']} and not both a task "
                "and a run metric"
            )
        units = (metrics.metric_units or {}).get(name, "1")
        split = "validation" if name.startswith("val_") else "test-set"
        specs[name] = VarSpec(dims, np.dtype("float64"), units, f"{split} {name} {what}")
    specs["main"] = dataclasses.replace(
        specs["main"], units=specs[metrics.main_metric].units,
        description=(f"test-set {metrics.main_metric} over the whole test set"
                     if metrics.main_metric in (metrics.run_metrics or {})
                     else specs["main"].description))
    return specs


# scalar variables in the order the file has always stored them
_SCALARS = ("n_parameters_estimators", "n_groups", "wall_time_s", "backward_passes",
            "forward_passes", "steps")


def encode_metrics(metrics: Metrics) -> xr.Dataset:
    """Final test metrics of a run.

    Each task metric becomes a float64 variable on ``task`` with attribute
    ``role="task_metric"``, each run metric a float64 scalar with ``role="run_metric"``; the
    partition is stored as ``partition``; ``main`` is the run metric named ``main_metric`` when
    there is one, else the NaN-ignoring mean over tasks of that task metric;
    ``adjusted_rand_index`` is omitted when None. Global attributes: ``main_metric``, ``variant`` and, when given, ``method``, ``seed``
    and ``dataset`` (the dataset's name).
    """
    m = metrics
    coords = {"task": names_coord("task_names", m.task_names, "task")}
    run = dict(m.run_metrics or {})
    if m.main_metric not in m.task_metrics and m.main_metric not in run:
        raise ValueError(
            f"main_metric={m.main_metric!r} must be one of {sorted([*m.task_metrics, *run])}")
    specs = _metric_specs(m)
    values = dict(m.task_metrics, n_parameters=m.n_parameters, partition=m.assignment)
    values.update({n: float(v) for n, v in run.items()})
    values.update({n: getattr(m, n) for n in _SCALARS})
    if m.adjusted_rand_index is not None:
        values["adjusted_rand_index"] = m.adjusted_rand_index
    values["main"] = (run[m.main_metric] if m.main_metric in run else
                      _nanmean(np.asarray(m.task_metrics[m.main_metric], dtype=np.float64)))
    variables = build_variables(specs, values, {"task": coords["task"].size})
    for name in m.task_metrics:
        variables[name].attrs["role"] = "task_metric"
    for name in run:
        variables[name].attrs["role"] = "run_metric"
    attrs: dict[str, object] = {"main_metric": m.main_metric, "variant": as_str("variant", m.variant)}
    for name, check in (("method", as_str), ("seed", as_int), ("dataset", as_str)):
        if getattr(m, name) is not None:
            attrs[name] = check(name, getattr(m, name))
    return make_dataset("metrics", variables, coords, attrs)


def decode_metrics(ds: xr.Dataset) -> Metrics:
    """Invert :func:`encode_metrics` (``metric_units`` as stored; ``"1"`` where a file written
    before units existed has none)."""
    task = [str(n) for n, v in ds.data_vars.items() if v.attrs.get("role") == "task_metric"]
    run = [str(n) for n, v in ds.data_vars.items() if v.attrs.get("role") == "run_metric"]
    a = ds.attrs
    return Metrics(
        task_names=_task_names(ds),
        task_metrics={n: np.array(ds[n].values, dtype=np.float64, copy=True) for n in task},
        metric_units={n: str(ds[n].attrs.get("units", "1")) for n in [*task, *run]},
        run_metrics={n: float(ds[n]) for n in run} or None,
        main_metric=str(a["main_metric"]),
        assignment=_array(ds, "partition", METRICS_VARS["partition"]),
        wall_time_s=float(ds["wall_time_s"]),
        adjusted_rand_index=(
            float(ds["adjusted_rand_index"]) if "adjusted_rand_index" in ds else None
        ),
        variant=str(a["variant"]),
        method=str(a["method"]) if "method" in a else None,
        seed=int(a["seed"]) if "seed" in a else None,
        dataset=str(a["dataset"]) if "dataset" in a else None,
        **{n: int(ds[n]) for n in ("n_parameters", "n_parameters_estimators", "n_groups")},
        **{n: int(ds[n]) for n in ("backward_passes", "forward_passes", "steps")},
    )


# ----------------------------------------------------------------------------- activations

_OPTIONAL = ("estimator_output", "saliency", "region_masks", "task_region", "object_masks")


def encode_activations(snapshot: Activations) -> xr.Dataset:
    """A snapshot of the shared representation on a fixed probe set (the Figure 6 study).

    ``probe_index`` becomes the ``probe`` coordinate; optional arrays that are None are left
    out; with ``estimator_output`` the ``entity`` coordinate names each entity's tasks.
    """
    s = snapshot
    coords = {"task": names_coord("task_names", s.task_names, "task")}
    values = {"probe": s.probe_index}
    for name in ("representation", "labels", "label_mask", "assignment", *_OPTIONAL):
        if getattr(s, name) is not None:
            values[name] = getattr(s, name)
    sizes = {"task": coords["task"].size}
    variables = build_variables(ACTIVATION_VARS, values, sizes)
    coords["probe"] = variables.pop("probe")
    if "entity" in sizes:
        entities = entity_coords(s.assignment, list(s.task_names), sizes["entity"])
        coords.update(entity=entities["entity"], entity_tasks=entities["entity_tasks"])
    attrs = {
        "name": as_str("name", s.name),
        "step": as_int("step", s.step),
        "method": as_str("method", s.method),
    }
    return make_dataset("activations", variables, coords, attrs)


def decode_activations(ds: xr.Dataset) -> Activations:
    """Invert :func:`encode_activations` (absent optional arrays are None)."""
    arrays = {
        n: _array(ds, n, spec) if n in ds.variables else None
        for n, spec in ACTIVATION_VARS.items()
    }
    return Activations(
        name=str(ds.attrs["name"]),
        step=int(ds.attrs["step"]),
        task_names=_task_names(ds),
        probe_index=arrays.pop("probe"),
        method=str(ds.attrs["method"]),
        **arrays,
    )


# ----------------------------------------------------------------------------- affinity


def encode_affinity(affinity: Affinity) -> xr.Dataset:
    """The affinity phase of a grouping baseline (``affinity.nc``); each counter becomes the
    float global attribute ``phase_NAME``."""
    names = names_coord("task_names", affinity.task_names, "task")
    coords = {"task": names, "task_other": names_coord("task_names", names.values, "task_other")}
    values = {"affinity": affinity.affinity, "partition": affinity.partition}
    sizes = {"task": names.size, "task_other": names.size}
    variables = build_variables(AFFINITY_VARS, values, sizes)
    attrs: dict[str, object] = {
        "method": as_str("method", affinity.method),
        "recorded_steps": int(affinity.recorded_steps),
    }
    attrs.update({f"phase_{k}": float(v) for k, v in affinity.counters.items()})
    return make_dataset("affinity", variables, coords, attrs)


def decode_affinity(ds: xr.Dataset) -> Affinity:
    """Invert :func:`encode_affinity`."""
    counters = {k[6:]: float(v) for k, v in ds.attrs.items() if k.startswith("phase_")}
    return Affinity(
        task_names=_task_names(ds),
        affinity=_array(ds, "affinity", AFFINITY_VARS["affinity"]),
        partition=_array(ds, "partition", AFFINITY_VARS["partition"]),
        method=str(ds.attrs["method"]),
        recorded_steps=int(ds.attrs["recorded_steps"]),
        counters=counters,
    )
