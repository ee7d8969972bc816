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
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from ..core.grouping import EventResult, GroupingConfig
from ..core.grouping.silhouette import cut_scores
from .events import RunLike, grouping_config, read_events

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
        ``streak``, ``patience``, ``merged``.
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


# ----------------------------------------------------------------------------- the story


def _tasks(assignment: np.ndarray, entities, names: Sequence[str]) -> tuple[str, ...]:
    mask = np.isin(assignment, np.asarray(list(entities), dtype=np.int64))
    return tuple(names[t] for t in np.flatnonzero(mask))


def _label(tasks: Sequence[str], width: int = 4) -> str:
    if len(tasks) == 1:
        return tasks[0]
    shown = ", ".join(tasks[:width])
    more = f" and {len(tasks) - width} more" if len(tasks) > width else ""
    return "{" + shown + more + "}"


def _join_children(tree: np.ndarray, n: int, ea: int, eb: int) -> tuple[list[int], list[int]]:
    """Entities of the two clusters whose merge first holds both ``ea`` and ``eb``."""
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    for m in range(n - 1):
        left, right = members[int(tree[m, 0])], members[int(tree[m, 1])]
        joined = left + right
        if ea in joined and eb in joined:
            return (left, right) if ea in left else (right, left)
        members[n + m] = joined
    return [ea], [eb]  # unreachable for a full tree


def _tree(d: np.ndarray) -> np.ndarray:
    return linkage(squareform(d, checks=False), method="average")


def _distance_choice(r: EventResult, cfg: GroupingConfig, facts: dict) -> str:
    chosen, sil = r.chosen_distance, r.silhouettes
    facts.update(chosen_distance=chosen, silhouettes={k: float(v) for k, v in sil.items()})
    uses_floor = cfg.strategy == "similarity" and cfg.threshold is None
    facts["min_silhouette"] = float(cfg.min_silhouette) if uses_floor else None

    def s(name: str) -> str:
        v = sil[name]
        return f"{v:.3f}" if v > -1.0 else "none: fewer than 3 entities, no cut to score"

    if len(sil) > 1:
        others = ", ".join(f"{k} ({s(k)})" for k in sil if k != chosen)
        tie = (
            " (a tie keeps the first candidate)"
            if any(sil[k] == sil[chosen] for k in sil if k != chosen)
            else ""
        )
        text = (
            f"What was compared: the run computes {len(sil)} distances between the tasks' "
            f"summed gradients and uses the one whose silhouette-best cut scores higher: "
            f"{chosen} (best-cut silhouette {s(chosen)}) rather than {others}{tie}."
        )
    else:
        text = (
            f"What was compared: the {chosen} distance between the tasks' summed gradients, "
            f"fixed by the run's configuration (best-cut silhouette {s(chosen)})."
        )
    if uses_floor:
        floor = cfg.min_silhouette
        text += (
            f" A cut is made only when that silhouette reaches the floor min_silhouette = {floor}: "
        )
        if sil[chosen] >= floor:
            text += f"{chosen}'s {sil[chosen]:.3f} does"
            below = [k for k in sil if k != chosen and not sil[k] >= floor and sil[k] > -1.0]
            if below:
                text += " (" + ", ".join(f"{k}'s {sil[k]:.3f}" for k in below) + " would not)"
            text += "."
        else:
            text += f"{chosen}'s {s(chosen)} does not, so no cut was made and nothing merged."
    elif cfg.strategy == "similarity":
        text += (
            f" No silhouette floor applies: the tree is cut at the fixed threshold "
            f"{cfg.threshold} (min_silhouette is not used then)."
        )
    elif cfg.strategy == "kmeans":
        text = (
            f"What was compared: not distances (the {chosen} distance, chosen by best-cut "
            f"silhouette {s(chosen)}, is used only by the group-size guards, when they apply), "
            "but which factor cluster each task's gradient energy falls into."
        )
    return text


def _similarity_story(r, cfg, row, names, merged, facts) -> list[str]:
    a_before = r.assignment_before
    ea, eb = row["entity_a"], row["entity_b"]
    d = r.distances[r.chosen_distance]
    n, cut, h, own = d.shape[0], float(r.threshold), float(row["condition"]), row["distance"]
    dist = r.chosen_distance
    facts.update(pair_distance=float(own), join_height=h)
    out = []
    # where the cut lies, and why
    if math.isnan(cut):
        if n <= 2:
            out.append(
                "Where the cut lies: nowhere. With two entities no cut has a silhouette, and "
                "without a fixed threshold nothing merges."
            )
        else:
            out.append(
                f"Where the cut lies: nowhere. The best cut's silhouette "
                f"{r.silhouettes[dist]:.3f} is below the floor {cfg.min_silhouette}: the "
                "distances show no group structure worth acting on, so nothing merged."
            )
    elif cfg.threshold is not None:
        facts["cut"] = cut
        out.append(
            f"Where the cut lies: at the fixed threshold {cut:.4f} given in the configuration "
            "(not the silhouette-best cut): pairs whose clusters join at or below it are grouped."
        )
    else:
        facts["cut"] = cut
        tree = _tree(d)
        sizes = np.bincount(a_before, minlength=n)
        groups, scores, _ = cut_scores(
            d, tree, min_groups=cfg.min_groups, max_group_size=cfg.max_group_size, sizes=sizes
        )
        if not groups.size:  # not reached: a finite silhouette-best cut has a candidate
            out.append(f"Where the cut lies: at {cut:.4f}, the silhouette-best cut.")
        else:
            j = int(np.argmax(scores))
            facts.update(cut_groups=int(groups[j]), candidate_cuts=int(groups.size))
            merges = n - int(groups[j])
            lo, hi = float(tree[merges - 1, 2]), float(tree[merges, 2])
            text = (
                f"Where the cut lies: the average-linkage tree of the {dist} distances is cut at "
                f"{cut:.4f}, midway between the merge heights {lo:.4f} and {hi:.4f}. Of the "
                f"{groups.size} candidate cuts (from {groups.max()} down to {groups.min()} "
                f"groups), this one, into {groups[j]} groups, has the highest silhouette "
                f"({scores[j]:.3f})"
            )
            if groups.size > 1:
                k = int(np.argsort(-scores, kind="stable")[1])
                text += f"; the next best, into {groups[k]} groups, scores {scores[k]:.3f}"
            out.append(text + ".")
    # the pair and its linkage height
    left, right = _join_children(_tree(d), n, ea, eb)
    ta, tb = _tasks(a_before, [ea], names), _tasks(a_before, [eb], names)
    lt, rt = _tasks(a_before, left, names), _tasks(a_before, right, names)
    text = f"The pair: the {dist} distance between {_label(ta)} and {_label(tb)} is {own:.4f}. "
    text += (
        "Average linkage joins two clusters at the average distance over all pairs of their "
        "members, so what decides is the height at which the pair's clusters join: "
    )
    if len(lt) == len(ta) and len(rt) == len(tb):
        text += f"here the two join each other directly at {h:.4f}"
    else:
        text += f"{_label(lt)} and {_label(rt)} join at {h:.4f}"
    if not math.isnan(cut):
        side = "at or below" if h <= cut else "above"
        text += f", {side} the cut {cut:.4f}"
        if own > cut >= h:
            text += " (their own distance is above the cut, but their clusters' average is not)"
        if own <= cut < h:
            text += " (their own distance is below the cut, but their clusters' average is not)"
        if not row["merged"]:
            facts["margin"] = h - cut
            if h > cut:
                text += f": {h - cut:.4f} short of being grouped"
    out.append(text + ".")
    # margin to the nearest other group, and what would have changed the decision
    if merged and not math.isnan(cut):
        group = np.flatnonzero(r.condition[ea] <= cut)
        outside = np.setdiff1d(np.arange(n), group)
        change = f"What would have changed it: any cut below {h:.4f} would have kept them apart"
        facts["split_at"] = h
        if outside.size:
            o = int(outside[np.argmin(r.condition[ea, outside])])
            nh = float(r.condition[ea, o])
            other = _tasks(a_before, np.flatnonzero(r.condition[o] <= cut), names)
            facts.update(nearest_group=other, nearest_height=nh, margin=nh - cut)
            out.append(
                f"Margin: their group, {_label(_tasks(a_before, group, names))}, joins the "
                f"nearest other group, {_label(other)}, only at height {nh:.4f}, "
                f"{nh - cut:.4f} above the cut."
            )
            change += f"; a cut at or above {nh:.4f} would also have taken in {_label(other)}"
        else:
            out.append("Margin: their group holds every task; there is no other group.")
        if cfg.threshold is None:
            change += (
                f"; and with a floor min_silhouette above {r.silhouettes[dist]:.3f} no cut would "
                "have been made at all"
            )
        out.append(change + ".")
    elif not merged and not math.isnan(cut) and h <= cut:
        out.append(
            "What would have changed it: the cut already grouped them; only the stability "
            "rule below kept them apart (a lower patience, or the same proposal at more "
            "consecutive events, would have merged them)."
        )
    elif not merged:
        facts["merge_at"] = h
        out.append(
            f"What would have changed it: a cut at or above {h:.4f} at this event (e.g. a "
            f"fixed threshold of {h:.4f}) would have put them in one proposed group."
        )
    return out


def _variance_story(r, cfg, row, names, merged, facts) -> list[str]:
    ea, eb = row["entity_a"], row["entity_b"]
    t, c, dist = float(r.threshold), float(row["condition"]), r.chosen_distance
    limit = 2 if cfg.max_group_size is None else cfg.max_group_size
    ta, tb = _tasks(r.assignment_before, [ea], names), _tasks(r.assignment_before, [eb], names)
    facts.update(pair_distance=float(row["distance"]))
    if math.isnan(t):
        return ["Where the threshold lies: nowhere (fewer than two entities can be joined)."]
    facts["cut"] = t
    src = "the mean distance between entities" if cfg.threshold is None else "fixed"
    out = [
        (
            "The rule: the variance strategy joins tasks whose gradients are far apart (so one "
            "estimator learns complementary signals). It greedily joins the farthest pair of "
            f"groups whose average {dist} distance is above the threshold {t:.4f} ({src}), up "
            f"to {limit} tasks per group."
        )
    ]
    side = "above" if c > t else "at or below"
    out.append(
        f"The pair: the {dist} distance between {_label(ta)} and {_label(tb)} is {c:.4f}, "
        f"{side} the threshold."
    )
    if merged:
        facts.update(split_at=c, margin=c - t)
        out.append(
            f"Margin: {c - t:.4f} above the threshold. What would have changed it: a "
            f"threshold at or above {c:.4f} would have kept them apart."
        )
    else:
        facts.update(merge_at=c, margin=t - c)
        if c > t:
            out.append(
                "They were far enough apart, but the greedy pairing joined one or both with a "
                f"farther partner first (at most {limit} tasks per group)."
            )
        else:
            out.append(
                f"What would have changed it: a threshold below {c:.4f} would have made them "
                "joinable (they were then still subject to the greedy order)."
            )
    return out


def _kmeans_story(r, cfg, row, names, merged, facts) -> list[str]:
    ea, eb = row["entity_a"], row["entity_b"]
    m = r.membership
    ta, tb = _tasks(r.assignment_before, [ea], names), _tasks(r.assignment_before, [eb], names)
    if not m.shape[1] or not (m[ea].sum() > 0 and m[eb].sum() > 0):
        return [
            (
                "The rule: tasks whose dominant factor cluster is the same are grouped; here "
                "the pooled k-means had no clusters for them (too few or zero factors), so "
                "nothing merges."
            )
        ]
    ka, kb = int(np.argmax(m[ea])), int(np.argmax(m[eb]))
    out = [
        (
            "The rule: the kmeans strategy pools every task's gradient factors, clusters them "
            f"with k-means (K = {r.kmeans_k}, chosen by silhouette up to kmeans_max_k = "
            f"{cfg.kmeans_max_k}), and groups tasks whose dominant factor cluster (largest "
            "share of gradient energy) is the same. Threshold and silhouette floor play no part."
        ),
        (
            f"The pair: {_label(ta)}'s dominant cluster is {ka} ({m[ea, ka]:.2f} of its "
            f"energy), {_label(tb)}'s is {kb} ({m[eb, kb]:.2f}); their membership mismatch "
            f"1 - m_a.m_b is {row['condition']:.4f}."
        ),
    ]
    if not merged:
        out.append(
            "What would have changed it: the same dominant cluster for both "
            f"({_label(tb)} puts {m[eb, ka]:.2f} of its energy into cluster {ka})."
        )
    return out


def _stability(rows: list[dict], merged: bool, patience: int, facts: dict) -> str:
    streak = rows[-1]["streak"] if merged else 0
    held = tuple(int(r["step"]) for r in rows[len(rows) - streak :]) if streak else ()
    facts.update(patience=patience, held_steps=held)
    if merged and patience == 1:
        return (
            "Stability: the run's patience is 1, so one grouping event proposing them "
            "together is enough; the merge took effect at once."
        )
    rule = (
        f"Stability: a merge takes effect only once the two tasks were proposed together at "
        f"{patience} consecutive grouping events while still apart (patience {patience})"
    )
    if merged:
        return rule + f"; they were, at steps {list(held)}."
    together = [int(r["step"]) for r in rows if r["proposed_together"]]
    if together:
        return rule + f"; they were proposed together at steps {together}, never enough in a row."
    if patience > 1:
        return rule + "; they were never proposed together at all."
    return ""


_STORIES = {"similarity": _similarity_story, "variance": _variance_story, "kmeans": _kmeans_story}


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
    parts = [head, _distance_choice(r, cfg, facts)]
    story = _STORIES.get(cfg.strategy)
    if story is not None:
        parts += story(r, cfg, row, names, merged, facts)
    else:
        parts.append(f"At that event: {_rule(row)}.")
    stab = _stability(rows if merged else rows[: k + 1], merged, cfg.patience, facts)
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
