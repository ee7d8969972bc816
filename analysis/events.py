"""Reading grouping events from a store and comparing them (shared by replay, explain, plots).

Pure numpy/scipy on decoded events; no torch. See :mod:`.replay` for the semantics of the
counterfactual windows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from ..core import store
from ..core.grouping import EventResult, GroupingConfig, canonical
from ..core.store.event_codec import decode_event_arrays, decoded_variables
from ..core.store.io import read_store_arrays

__all__ = [
    "as_result",
    "chain_problems",
    "compare_events",
    "counterfactual_inputs",
    "entity_names",
    "event_result",
    "grouping_config",
    "join_partitions",
    "merges_of",
    "read_event_file",
    "read_events",
]

#: EventResult fields compared one to one (distances and silhouettes are compared per name).
FIELDS = (
    *("summed", "assignment_before", "streak_before", "singular_values", "factors"),
    *("degenerate", "kmeans_k", "kmeans_labels", "membership", "proposed", "condition"),
    *("threshold", "streak_after", "assignment_after", "parent", "chosen_distance"),
)

RunLike = str | os.PathLike | xr.DataTree


def grouping_config(stored: dict) -> GroupingConfig:
    """The :class:`GroupingConfig` stored in an event (JSON lists back to tuples).

    Raises ValueError when the stored config has fields this version does not know: the event
    was decided by another version of the rule and cannot be replayed exactly.
    """
    names = {f.name for f in dataclasses.fields(GroupingConfig)}
    unknown = sorted(set(stored) - names)
    if unknown:
        raise ValueError(
            f"the stored grouping_config has fields {unknown} unknown to this GroupingConfig "
            f"(fields {sorted(names)}): replay it with the selective_sharing version that wrote it"
        )
    return GroupingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})


def as_result(event: store.Event) -> tuple[EventResult, dict]:
    """A decoded store event as the grouping rule's ``EventResult`` and its context ``meta``
    (index, step, window_start, bins, sketch_seed, sketch_kind, task_names as a list,
    n_params_before, n_params_after, merge_mode, grouping_config as a dict).

    The conversion lives here, not in the store: the store may not import the grouping rule.
    """
    result = EventResult(**{name: getattr(event, name) for name in store.DECISION_FIELDS})
    meta = {name: getattr(event, name) for name in store.CONTEXT_FIELDS}
    meta["task_names"] = list(event.task_names)
    return result, meta


def event_result(ds: xr.Dataset, *, bins: bool = True) -> tuple[EventResult, dict]:
    """Decode a stored event dataset (:func:`store.read_event`, or a :func:`load_run` node)
    into ``(EventResult, meta)`` (see :func:`as_result`); ``bins=False`` for one read
    without its bins (``meta["bins"]`` is then None)."""
    return as_result(store.decode_event(ds, bins=bins))


def read_events(
    run: str | os.PathLike | xr.DataTree, *, bins: bool = True
) -> tuple[dict, list[tuple[EventResult, dict]]]:
    """``(manifest, [(EventResult, meta), ...])`` of a run directory or a :func:`load_run` tree.

    ``bins=False`` does not read the binned gradient windows (about two thirds of an event
    file's bytes); decisions and replays never use them, and ``meta["bins"]`` is then None.
    From a directory, each file is read by :func:`read_event_file` (only the variables
    decoding uses, checksums verified).
    Raises StoreError naming the file when an event is truncated or corrupted.
    """
    drop = [] if bins else ["bins"]
    if isinstance(run, xr.DataTree):
        manifest = dict(run.attrs)
        nodes = run["events"].children.values() if "events" in run.children else []
        return manifest, [
            event_result(n.to_dataset().drop_vars(drop, errors="ignore").load(), bins=bins)
            for n in nodes
        ]
    manifest = store.read_manifest(run)
    return manifest, [read_event_file(p, bins=bins) for p in store.list_events(run)]


def read_event_file(path: str | os.PathLike, *, bins: bool = True) -> tuple[EventResult, dict]:
    """One event file as ``(EventResult, meta)``: what ``event_result(store.read_event(path))``
    returns, with the same checks and errors, but reading only the variables decoding uses
    and without an ``xarray.Dataset`` in between (its cost per file dominated reading a run's
    events)."""
    attrs, arrays = read_store_arrays(path, "event", decoded_variables(bins=bins))
    return as_result(decode_event_arrays(attrs, arrays, source=str(path), bins=bins))


# ----------------------------------------------------------------------------- comparison


def _same(a: object, b: object) -> bool:
    if isinstance(a, (str, int)) and not isinstance(a, bool):
        return type(a) is type(b) and a == b
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return False
    if x.dtype.kind == "f" and y.dtype.kind == "f":
        # np.array_equal(x, y, equal_nan=True), without its copies of the non-NaN values
        equal = x == y
        return bool(equal.all() or (equal | (np.isnan(x) & np.isnan(y))).all())
    return bool(np.array_equal(x, y))


def compare_events(new: EventResult, old: EventResult) -> list[str]:
    """Names of the EventResult fields in which ``new`` and ``old`` differ (exact comparison).

    ``null_test`` (the permutation null's record) is compared key by key, e.g.
    ``"null_test[p_value]"``; ``"null_test"`` when only one of them ran the test.
    """
    bad = [n for n in FIELDS if not _same(getattr(new, n), getattr(old, n))]
    a, b = new.null_test, old.null_test
    if (a is None) != (b is None):
        bad.append("null_test")
    elif a is not None:
        bad += [f"null_test[{k}]" for k in sorted(set(a) | set(b))
                if k not in a or k not in b or not _same(a[k], b[k])]
    for kind in ("distances", "silhouettes"):
        a, b = getattr(new, kind), getattr(old, kind)
        bad += [
            f"{kind}[{k}]"
            for k in sorted(set(a) | set(b))
            if k not in a or k not in b or not _same(a[k], b[k])
        ]
    return bad


def merges_of(result: EventResult, names: Sequence[str]) -> tuple:
    """Task names of the parts of each new group formed from several entities (see
    ``EventReplay.merges``)."""
    a_before, parent = result.assignment_before, result.parent
    out = []
    for g in range(result.n_entities_after):
        parts = np.flatnonzero(parent == g)
        if parts.size > 1:
            out.append(tuple(tuple(names[t] for t in np.flatnonzero(a_before == e)) for e in parts))
    return tuple(out)


# ----------------------------------------------------------------------------- counterfactual


def join_partitions(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Finest partition coarser than both ``a`` and ``b`` (T,): tasks linked by either."""
    n, na, nb = a.size, a.max() + 1, b.max() + 1
    # bipartite graph: task i -- group a[i] of the first partition and group b[i] of the second
    rows, cols = np.r_[np.arange(n), np.arange(n)], np.r_[n + a, n + na + b]
    size = n + na + nb
    graph = csr_matrix((np.ones(2 * n), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    return canonical(labels[:n])


def counterfactual_inputs(
    rec: EventResult, state: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """Window ``(E', R, C)``, assignment ``(T,)`` and window kind (``"recorded"``, ``"summed"``,
    ``"forced"``) for the counterfactual partition ``state`` ``(T,)`` at a recorded event."""
    recorded = rec.assignment_before
    if np.array_equal(canonical(state), recorded):
        return rec.summed, recorded, "recorded"
    joined = join_partitions(state, recorded)
    kind = "summed" if np.array_equal(joined, canonical(state)) else "forced"
    # recorded entity -> joined entity (every recorded entity lies inside one joined entity)
    owner = np.zeros(rec.n_entities_before, dtype=np.int64)
    owner[recorded] = joined
    summed = np.zeros((joined.max() + 1,) + rec.summed.shape[1:], dtype=np.float64)
    np.add.at(summed, owner, rec.summed.astype(np.float64))
    return summed, joined, kind


def chain_problems(rec: EventResult, prev: EventResult | None) -> list[str]:
    """Recorded inputs that do not follow from the previous event (first: singletons, zeros)."""
    n = rec.assignment_before.size
    want_a = np.arange(n) if prev is None else prev.assignment_after
    want_s = np.zeros((n, n), np.int64) if prev is None else prev.streak_after
    bad = []
    starts_grouped = prev is None and rec.n_entities_before < n  # a run may start grouped
    if not starts_grouped and not np.array_equal(rec.assignment_before, want_a):
        bad.append("assignment_before (chain)")
    if not np.array_equal(rec.streak_before, want_s):
        bad.append("streak_before (chain)")
    return bad


def entity_names(assignment: np.ndarray, names: Sequence[str], width: int = 3) -> list[str]:
    """Readable label of each entity ``(E,)``: its first tasks joined by ``+`` (``...`` beyond
    ``width``)."""
    out = []
    for e in range(int(np.max(assignment)) + 1):
        tasks = [names[t] for t in np.flatnonzero(assignment == e)]
        out.append("+".join(tasks[:width]) + ("+..." if len(tasks) > width else ""))
    return out
