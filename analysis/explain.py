"""Explain, from the store alone, when and why two tasks were merged, or why they never were.

Every event file stores what the decision was made from and what it computed: the distances
between entities (both candidates of ``distance="auto"``), each distance's best-cut
silhouette and the choice, the value the strategy compared for each pair (for ``similarity``:
the average-linkage height at which the pair joins), the cut or threshold it was compared
with, the proposal and the hysteresis streaks. :func:`explain` reads them (or replays them
under a counterfactual rule) and tells the story of one pair in plain words: which distance
was compared and why, where the cut lies and why, the pair's own distance and the height at
which their clusters join, the margin to the nearest other group, what would have changed the
decision, and what the stability rule (``patience``) required. For a pair that never merged it
tells the nearest miss. Every number in the text is also a field of :class:`Explanation` (and
a column of ``Explanation.data``), read from the event files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.grouping import EventResult, GroupingConfig
from ..core.grouping.null import null_quantiles
from .events import RunLike, grouping_config, read_events
from .stories import STORIES, distance_choice, stability, verdict_text

__all__ = ["Explanation", "explain"]


@dataclass(frozen=True)
class Explanation:
    """Why two tasks were (or were not) merged.

    The numbers describe the *deciding event*: the merge for a pair that merged, the nearest
    miss for a pair that never did (None where they do not apply to the strategy, or when there
    is no such event).

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
        ``distance_<name>`` for every stored distance, ``silhouette`` (the chosen one's),
        ``silhouette_<name>`` for every candidate, ``condition`` (``similarity``: the linkage
        height at which they join), ``threshold`` (the cut), ``gap`` (how far the pair missed
        the rule: ``condition - threshold`` for ``similarity``, ``threshold - condition`` for
        ``variance``; <= 0 means the rule put them together), ``proposed_together``,
        ``streak``, ``patience``, ``merged``; at events that ran the permutation null
        (``null="permutation"``) also ``null_p``, ``null_alpha``, ``null_statistic``,
        ``null_samples`` and ``null_q95`` (the null's 95% quantile).
    strategy : str or None
    deciding_event, deciding_step : int or None
        The merge event, or the nearest miss of a pair that never merged.
    nearest_miss : int or None
        Never-merged pairs: the event where they came closest (smallest ``gap``; an event
        that proposed them together counts first).
    chosen_distance : str or None
    silhouettes : dict of str to float
        Best-cut silhouette of every candidate distance at the deciding event.
    min_silhouette : float or None
        The silhouette floor, where one applies (``similarity`` with the silhouette-best cut).
    pair_distance : float or None
        The chosen distance between the pair's entities.
    join_height : float or None
        ``similarity``: the average-linkage height at which their clusters join.
    cut : float or None
        The cut (``similarity``) or threshold (``variance``) the pair was compared with.
    cut_groups, candidate_cuts : int or None
        Silhouette-best cut: its number of groups, and how many cuts it was chosen among.
    nearest_group : tuple of str or None
        Merged pairs (``similarity``): the tasks of the nearest other group at the cut.
    nearest_height : float or None
        The linkage height at which the pair's group joins ``nearest_group``.
    margin : float or None
        Merged: ``nearest_height - cut`` (``similarity``) or ``pair_distance - cut``
        (``variance``), how far the decision was from taking in more / from not being made.
        Never merged: ``gap`` at the nearest miss, how far they were from merging.
    split_at : float or None
        Merged pairs: ``similarity``: any cut below it keeps them apart (their join height);
        ``variance``: any threshold at or above it does (their distance).
    merge_at : float or None
        Never-merged pairs, at the nearest miss: ``similarity``: a cut at or above it puts them
        in one proposed group; ``variance``: a threshold below it makes them joinable.
    patience : int or None
    held_steps : tuple of int
        Steps of the consecutive events that proposed them together (ending at the merge).
    """

    task_a: str
    task_b: str
    merged: bool
    event: int | None
    step: int | None
    text: str
    data: pd.DataFrame
    strategy: str | None = None
    deciding_event: int | None = None
    deciding_step: int | None = None
    nearest_miss: int | None = None
    chosen_distance: str | None = None
    silhouettes: dict = field(default_factory=dict)
    min_silhouette: float | None = None
    pair_distance: float | None = None
    join_height: float | None = None
    cut: float | None = None
    cut_groups: int | None = None
    candidate_cuts: int | None = None
    nearest_group: tuple[str, ...] | None = None
    nearest_height: float | None = None
    margin: float | None = None
    split_at: float | None = None
    merge_at: float | None = None
    patience: int | None = None
    held_steps: tuple[int, ...] = ()

    def __str__(self) -> str:
        return self.text


def _task_index(names: Sequence[str], task: str | int, param: str) -> int:
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= task < len(names):
            return int(task)
    elif task in names:
        return list(names).index(task)
    raise ValueError(f"{param}={task!r} is not a task of this run; tasks: {list(names)}")


def _gap(strategy: str, condition: float, threshold: float) -> float:
    if math.isnan(threshold):
        return math.nan
    if strategy == "similarity":
        return condition - threshold
    if strategy == "variance":
        return threshold - condition
    return math.nan


def _row(index: int, step: int, r: EventResult, cfg: GroupingConfig, a: int, b: int) -> dict:
    ea, eb = int(r.assignment_before[a]), int(r.assignment_before[b])
    d = r.distances[r.chosen_distance]
    row = {"event": index, "step": step, "entity_a": ea, "entity_b": eb}
    row.update(strategy=cfg.strategy, chosen_distance=r.chosen_distance, distance=d[ea, eb])
    row.update({f"distance_{k}": float(v[ea, eb]) for k, v in r.distances.items()})
    row.update(silhouette=r.silhouettes[r.chosen_distance], condition=r.condition[ea, eb])
    row.update({f"silhouette_{k}": float(v) for k, v in r.silhouettes.items()})
    row.update(threshold=r.threshold, gap=_gap(cfg.strategy, r.condition[ea, eb], r.threshold))
    row.update(proposed_together=bool(r.proposed[ea] == r.proposed[eb]))
    row.update(streak=int(r.streak_after[a, b]), patience=cfg.patience)
    row.update(merged=bool(r.assignment_after[a] == r.assignment_after[b]))
    row.update(n_entities=r.n_entities_before, min_silhouette=cfg.min_silhouette)
    null = r.null_test
    if null is not None:
        row.update(null_p=null["p_value"], null_alpha=null["alpha"],
                   null_statistic=null["statistic"], null_samples=null["samples"],
                   null_q95=null_quantiles(null)[0.95])
    if cfg.strategy == "kmeans" and r.membership.shape[1]:
        row.update(cluster_a=int(np.argmax(r.membership[ea])))
        row.update(cluster_b=int(np.argmax(r.membership[eb])))
    return row


# ----------------------------------------------------------------------------- per-event lines


def _rule(row: dict) -> str:
    """How the pair's value stood against the strategy's rule at one event (one line)."""
    c, t, dist = row["condition"], row["threshold"], row["chosen_distance"]
    text = f"{dist} distance {row['distance']:.4f}"
    if row["strategy"] == "similarity":
        if math.isnan(t):
            if row["n_entities"] <= 2:
                return text + "; two entities and no fixed threshold: no cut exists, none merge"
            if not math.isnan(row.get("null_p", math.nan)):
                return text + "; no cut was made: " + _null_sentence(row)
            return (
                text + f"; no cut was made: best silhouette {row['silhouette']:.3f} < "
                f"min_silhouette {row['min_silhouette']}"
            )
        op = "<=" if c <= t else ">"
        text += f"; they join the average-linkage tree at height {c:.4f} {op} cut {t:.4f}"
        if not math.isnan(row.get("null_p", math.nan)):
            text += "; the cut was made: " + _null_sentence(row)
        return text
    if row["strategy"] == "variance":
        if math.isnan(t):
            return text + "; no threshold applies (fewer than two live entities)"
        return text + f" {'>' if c > t else '<='} threshold {t:.4f} (variance joins far pairs)"
    if row["strategy"] == "kmeans":
        ka, kb = row.get("cluster_a"), row.get("cluster_b")
        return f"dominant factor clusters {ka} and {kb} (membership condition {c:.4f})"
    return text + f"; condition {c:.4f} vs threshold {t:.4f}"


def _null_sentence(row: dict) -> str:
    """The permutation null's verdict at one event (:func:`.stories.verdict_text`), from the
    ``null_*`` values of its row: ``merged because p = 0.01 <= 0.05 (best-cut silhouette 0.21
    against a null of 200 shuffles, 95% quantile 0.16)``. The null keeps the run's own
    distance distribution and destroys only block structure.

    Parameters
    ----------
    row : dict
        A row of ``Explanation.data`` with ``null_p``, ``null_alpha``, ``null_statistic``,
        ``null_samples`` and ``null_q95`` (the event ran the test).

    Returns
    -------
    str
    """
    return verdict_text(row["null_p"], row["null_alpha"], row["null_statistic"],
                        row["null_samples"], row["null_q95"])


def _outcome(row: dict) -> str:
    """What the proposal, guards and hysteresis did with the pair."""
    if row["merged"]:
        return "merged"
    if row["proposed_together"]:
        return f"proposed together, streak {row['streak']} < patience {row['patience']}"
    return "not proposed together"


def _nearest_miss(rows: list[dict]) -> int:
    def key(i: int) -> tuple:
        r = rows[i]
        gap = r["gap"] if not math.isnan(r["gap"]) else math.inf
        return (not r["proposed_together"], gap, r["condition"], i)

    return min(range(len(rows)), key=key)


def _explain_rows(
    pair: tuple[str, str], names, rows: list[dict], used: list, merged: bool, n_events: int
) -> tuple[str, dict]:
    a, b = pair
    facts: dict = {}
    if n_events == 0:
        none = f"{a} and {b}: the run recorded no grouping events; its partition never changed"
        return none, facts
    if not rows:
        return f"{a} and {b} already shared one estimator before the first grouping event", facts
    k = len(rows) - 1 if merged else _nearest_miss(rows)
    row, (index, step, r, cfg) = rows[k], used[k]
    facts.update(strategy=cfg.strategy, deciding_event=index, deciding_step=step)
    if merged:
        head = f"{a} and {b} merged at event {index} (step {step}), strategy {cfg.strategy}."
    else:
        facts["nearest_miss"] = index
        head = (
            f"{a} and {b} never merged in {len(rows)} grouping event(s) (strategy "
            f"{cfg.strategy}). The nearest miss was event {index} (step {step}); what follows "
            "describes that event."
        )
    parts = [head, distance_choice(r, cfg, facts)]
    story = STORIES.get(cfg.strategy)
    if story is not None:
        parts += story(r, cfg, row, names, merged, facts)
    else:
        parts.append(f"At that event: {_rule(row)}.")
    stab = stability(rows if merged else rows[: k + 1], merged, cfg.patience, facts)
    parts.append(stab)
    lines = [p for p in parts if p]
    lines.append("Event by event (from the event files):")
    lines += [
        f"  event {r_['event']} (step {r_['step']}): {_rule(r_)}; {_outcome(r_)}" for r_ in rows
    ]
    return "\n".join(lines), facts


# ----------------------------------------------------------------------------- entry point


def _events(run: RunLike, replay_kwargs: dict) -> tuple[dict, list]:
    if replay_kwargs:
        from .replay import _KEEP, _changes, replay_with

        kw = dict(replay_kwargs)
        chain = kw.pop("chain", True)
        named = [kw.pop(k, None) for k in ("strategy", "distance")]
        threshold = kw.pop("threshold", _KEEP)
        changes = _changes(*named, threshold, kw)
        rep = replay_with(run, changes, chain, "explain", 4)
        return {"task_names": list(rep.task_names)}, [
            (e.index, e.step, e.result, rep.config) for e in rep.events
        ]
    manifest, decoded = read_events(run, bins=False)
    out = [(m["index"], m["step"], r, grouping_config(m["grouping_config"])) for r, m in decoded]
    if not manifest.get("task_names") and decoded:
        manifest = dict(manifest, task_names=decoded[0][1]["task_names"])
    return manifest, out


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
        :func:`~selective_sharing.analysis.replay` with these arguments instead of the run
        (an override the strategy does not use warns with ``IgnoredOverrideWarning``).

    Returns
    -------
    Explanation
        ``.text`` in words, ``.data`` the values per event, and the deciding numbers as fields,
        read from the store.
    """
    manifest, events = _events(run, replay_kwargs)
    names = list(manifest.get("task_names") or [])
    a, b = _task_index(names, task_a, "task_a"), _task_index(names, task_b, "task_b")
    if a == b:
        raise ValueError(f"task_a and task_b must differ; both are {names[a]!r}")
    rows, used, merged = [], [], False
    for index, step, result, cfg in events:
        if result.assignment_before[a] == result.assignment_before[b]:
            break  # already together (a run that starts grouped): nothing left to explain
        rows.append(_row(index, step, result, cfg, a, b))
        used.append((index, step, result, cfg))
        if rows[-1]["merged"]:
            merged = True
            break
    pair = (names[a], names[b])
    text, facts = _explain_rows(pair, names, rows, used, merged, len(events))
    if replay_kwargs:
        given = ", ".join(f"{k}={v!r}" for k, v in replay_kwargs.items())
        text += f"\n(This is the counterfactual replay with {given}, not the run as recorded.)"
    event, step = (rows[-1]["event"], rows[-1]["step"]) if merged else (None, None)
    return Explanation(*pair, merged, event, step, text, pd.DataFrame(rows), **facts)
