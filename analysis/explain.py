"""Explain, from the store alone, when and why two tasks were merged, or why they never were.

Every event stores the distances between entities, the chosen distance and its silhouette, the
value the strategy's condition compared for each pair and the cut/threshold it was compared
with, the proposal and the hysteresis streaks (DESIGN section 3). :func:`explain` walks the
events up to the one that put the two tasks into one estimator and says, for each, how the
pair's value stood against the rule, e.g.::

    task_03 and task_07 merged at event 2 (step 80): strategy similarity, chosen distance
    cosine (silhouette 0.412); cosine distance 0.1234; they join the average-linkage tree at
    height 0.1500 <= cut 0.3500.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.grouping import EventResult, GroupingConfig
from .events import RunLike, grouping_config, read_events

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True)
class Explanation:
    """Why two tasks were (or were not) merged.

    Attributes
    ----------
    task_a, task_b : str
    merged : bool
        Whether an event put them into one estimator.
    event, step : int or None
        The merging event and its step (None if they never merged).
    text : str
        The explanation in words.
    data : pandas.DataFrame
        One row per event considered (up to the merge): ``event, step, entity_a, entity_b,
        strategy, chosen_distance, distance`` (the chosen distance between their entities),
        ``distance_<name>`` for every stored distance, ``silhouette``, ``condition``,
        ``threshold``, ``proposed_together``, ``streak``, ``patience``, ``merged``.
    """

    task_a: str
    task_b: str
    merged: bool
    event: int | None
    step: int | None
    text: str
    data: pd.DataFrame

    def __str__(self) -> str:
        return self.text


def _task_index(names: Sequence[str], task: str | int, param: str) -> int:
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= task < len(names):
            return int(task)
    elif task in names:
        return list(names).index(task)
    raise ValueError(f"{param}={task!r} is not a task of this run; tasks: {list(names)}")


def _row(index: int, step: int, r: EventResult, cfg: GroupingConfig, a: int, b: int) -> dict:
    ea, eb = int(r.assignment_before[a]), int(r.assignment_before[b])
    d = r.distances[r.chosen_distance]
    row = {"event": index, "step": step, "entity_a": ea, "entity_b": eb}
    row.update(strategy=cfg.strategy, chosen_distance=r.chosen_distance, distance=d[ea, eb])
    row.update({f"distance_{k}": float(v[ea, eb]) for k, v in r.distances.items()})
    row.update(silhouette=r.silhouettes[r.chosen_distance], condition=r.condition[ea, eb])
    row.update(threshold=r.threshold, proposed_together=bool(r.proposed[ea] == r.proposed[eb]))
    row.update(streak=int(r.streak_after[a, b]), patience=cfg.patience)
    row.update(merged=bool(r.assignment_after[a] == r.assignment_after[b]))
    row.update(n_entities=r.n_entities_before, min_silhouette=cfg.min_silhouette)
    if cfg.strategy == "kmeans" and r.membership.shape[1]:
        row.update(cluster_a=int(np.argmax(r.membership[ea])))
        row.update(cluster_b=int(np.argmax(r.membership[eb])))
    return row


def _rule(row: dict) -> str:
    """How the pair's value stood against the strategy's rule at one event."""
    c, t, dist = row["condition"], row["threshold"], row["chosen_distance"]
    text = f"{dist} distance {row['distance']:.4f}"
    if row["strategy"] == "similarity":
        if math.isnan(t):
            if row["n_entities"] <= 2:
                return text + "; two entities and no fixed threshold: no cut exists, none merge"
            return (
                text + f"; no cut was made: best silhouette {row['silhouette']:.3f} < "
                f"min_silhouette {row['min_silhouette']}"
            )
        op = "<=" if c <= t else ">"
        return text + f"; they join the average-linkage tree at height {c:.4f} {op} cut {t:.4f}"
    if row["strategy"] == "variance":
        if math.isnan(t):
            return text + "; no threshold applies (fewer than two live entities)"
        return text + f" {'>' if c > t else '<='} threshold {t:.4f} (variance joins far pairs)"
    if row["strategy"] == "kmeans":
        ka, kb = row.get("cluster_a"), row.get("cluster_b")
        return f"dominant factor clusters {ka} and {kb} (membership condition {c:.4f})"
    return text + f"; condition {c:.4f} vs threshold {t:.4f}"


def _outcome(row: dict) -> str:
    """What the proposal, guards and hysteresis did with the pair."""
    if row["merged"]:
        return "merged"
    if row["proposed_together"]:
        return f"proposed together, streak {row['streak']} < patience {row['patience']}"
    return "not proposed together"


def _events(run: RunLike, replay_kwargs: dict) -> tuple[dict, list]:
    if replay_kwargs:
        from .replay import replay

        rep = replay(run, **replay_kwargs)
        return {"task_names": list(rep.task_names)}, [
            (e.index, e.step, e.result, rep.config) for e in rep.events
        ]
    manifest, decoded = read_events(run, bins=False)
    out = [(m["index"], m["step"], r, grouping_config(m["grouping_config"])) for r, m in decoded]
    if not manifest.get("task_names") and decoded:
        manifest = dict(manifest, task_names=decoded[0][1]["task_names"])
    return manifest, out


def _text(names: tuple[str, str], rows: list[dict], merged: bool, n_events: int) -> str:
    a, b = names
    if n_events == 0:
        return f"{a} and {b}: the run recorded no grouping events; its partition never changed"
    if not rows:
        return f"{a} and {b} already shared one estimator before the first grouping event"
    if merged:
        m = rows[-1]
        held = [r["step"] for r in rows[-m["streak"] :]] if m["streak"] else [m["step"]]
        return (
            f"{a} and {b} merged at event {m['event']} (step {m['step']}): strategy "
            f"{m['strategy']}, chosen distance {m['chosen_distance']} (silhouette "
            f"{m['silhouette']:.3f}); {_rule(m)}. The condition held at steps {held} "
            f"(patience {m['patience']})."
        )
    lines = [f"{a} and {b} never merged ({len(rows)} event(s), strategy {rows[0]['strategy']}):"]
    for r in rows:
        lines.append(f"  event {r['event']} (step {r['step']}): {_rule(r)}; {_outcome(r)}")
    return "\n".join(lines)


def explain(run: RunLike, task_a: str | int, task_b: str | int, **replay_kwargs) -> Explanation:
    """When and why ``task_a`` and ``task_b`` were merged, or why they never were.

    Parameters
    ----------
    run : path-like or DataTree
        A run directory or a :func:`~selective_sharing.analysis.load_run` tree.
    task_a, task_b : str or int
        Task names (or indices).
    **replay_kwargs
        If given (e.g. ``threshold=0.5``), explain the counterfactual of
        :func:`~selective_sharing.analysis.replay` with these arguments instead of the run.

    Returns
    -------
    Explanation
        ``.text`` in words, ``.data`` the values per event, read from the store.
    """
    manifest, events = _events(run, replay_kwargs)
    names = list(manifest.get("task_names") or [])
    a, b = _task_index(names, task_a, "task_a"), _task_index(names, task_b, "task_b")
    if a == b:
        raise ValueError(f"task_a and task_b must differ; both are {names[a]!r}")
    rows, merged = [], False
    for index, step, result, cfg in events:
        if result.assignment_before[a] == result.assignment_before[b]:
            break  # already together (a run that starts grouped): nothing left to explain
        rows.append(_row(index, step, result, cfg, a, b))
        if rows[-1]["merged"]:
            merged = True
            break
    pair = (names[a], names[b])
    text = _text(pair, rows, merged, len(events))
    event, step = (rows[-1]["event"], rows[-1]["step"]) if merged else (None, None)
    return Explanation(*pair, merged, event, step, text, pd.DataFrame(rows))
