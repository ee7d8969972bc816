"""The plain-words story of one pair at one grouping event, for :func:`.explain.explain`.

One paragraph-writer per question (what was compared, where the cut lies, the pair, what
would have changed it, stability), and one story per strategy (:data:`STORIES`). Each writer
returns text and records every number it prints in ``facts``, which becomes the fields of
:class:`~.explain.Explanation`, so the text and the fields cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from ..core.grouping import EventResult, GroupingConfig
from ..core.grouping.null import null_quantiles
from ..core.grouping.silhouette import cut_scores

__all__ = ["STORIES", "distance_choice", "stability"]


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


def null_verdict(null: dict) -> str:
    """The edge-permutation null's verdict on an event's best cut, in words: ``merged because
    p = 0.01 <= 0.05 (best-cut silhouette 0.21 against a null of 200 shuffles, 95% quantile
    0.16)`` or ``left apart because p = ... > ...``. The null keeps the run's own distance
    distribution and destroys only block structure.

    Parameters
    ----------
    null : dict
        ``EventResult.null_test``.

    Returns
    -------
    str
    """
    return verdict_text(
        float(null["p_value"]), float(null["alpha"]), float(null["statistic"]),
        int(null["samples"]), null_quantiles(null, (0.95,))[0.95],
    )  # fmt: skip


def verdict_text(p: float, alpha: float, statistic: float, samples: int, q95: float) -> str:
    """:func:`null_verdict` from its numbers: p-value, level, best-cut silhouette, number of
    shuffles and the null's 95% quantile.

    Parameters
    ----------
    p, alpha, statistic : float
    samples : int
    q95 : float

    Returns
    -------
    str
    """
    verdict = (f"merged because p = {p:.3g} <= {alpha:g}" if p <= alpha
               else f"left apart because p = {p:.3g} > {alpha:g}")
    return (
        f"{verdict} (best-cut silhouette {statistic:.3f} against a null of {int(samples)} "
        f"shuffles, 95% quantile {q95:.3f})"
    )


def distance_choice(r: EventResult, cfg: GroupingConfig, facts: dict) -> str:
    chosen, sil = r.chosen_distance, r.silhouettes
    facts.update(chosen_distance=chosen, silhouettes={k: float(v) for k, v in sil.items()})
    null = r.null_test
    uses_floor = cfg.strategy == "similarity" and cfg.threshold is None and null is None
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
    elif cfg.strategy == "similarity" and null is not None:
        text += (
            " No silhouette floor applies: the best cut is tested against an edge-permutation "
            "null (the distance matrix's off-diagonal values shuffled: the run's own distance "
            f"distribution without its block structure): {null_verdict(null)}."
        )
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
    d = r.distances[r.chosen_distance]
    facts.update(pair_distance=float(row["distance"]), join_height=float(row["condition"]))
    return [
        _where_the_cut_lies(r, cfg, d, facts),
        _the_pair(r, d, row, names, facts),
        *_what_would_change_it(r, cfg, row, names, merged, facts),
    ]


def _where_the_cut_lies(r, cfg, d: np.ndarray, facts: dict) -> str:
    """Where the similarity cut lies at this event, and why there."""
    n, cut, dist = d.shape[0], float(r.threshold), r.chosen_distance
    if math.isnan(cut):
        if n <= 2:
            return ("Where the cut lies: nowhere. With two entities no cut has a silhouette, and "
                    "without a fixed threshold nothing merges.")
        if r.null_test is not None:
            return ("Where the cut lies: nowhere. The best cut was "
                    f"{null_verdict(r.null_test)}: the distances show no more group structure "
                    "than shuffles of themselves, so nothing merged.")
        return (f"Where the cut lies: nowhere. The best cut's silhouette "
                f"{r.silhouettes[dist]:.3f} is below the floor {cfg.min_silhouette}: the "
                "distances show no group structure worth acting on, so nothing merged.")
    facts["cut"] = cut
    if cfg.threshold is not None:
        return (f"Where the cut lies: at the fixed threshold {cut:.4f} given in the configuration "
                "(not the silhouette-best cut): pairs whose clusters join at or below it are "
                "grouped.")
    tree = _tree(d)
    sizes = np.bincount(r.assignment_before, minlength=n)
    groups, scores, _ = cut_scores(
        d, tree, min_groups=cfg.min_groups, max_group_size=cfg.max_group_size, sizes=sizes
    )
    if not groups.size:  # not reached: a finite silhouette-best cut has a candidate
        return f"Where the cut lies: at {cut:.4f}, the silhouette-best cut."
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
    return text + "."


def _the_pair(r, d: np.ndarray, row: dict, names, facts: dict) -> str:
    """The pair's own distance and the average-linkage height at which their clusters join."""
    a_before, n, dist = r.assignment_before, d.shape[0], r.chosen_distance
    ea, eb, own = row["entity_a"], row["entity_b"], row["distance"]
    cut, h = float(r.threshold), float(row["condition"])
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
    return text + "."


def _what_would_change_it(r, cfg, row, names, merged, facts) -> list[str]:
    """The margin to the nearest other group, and what would have changed the decision."""
    a_before, ea, dist = r.assignment_before, row["entity_a"], r.chosen_distance
    n, cut, h = r.condition.shape[0], float(r.threshold), float(row["condition"])
    if merged and not math.isnan(cut):
        out = []
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
        if cfg.threshold is None and r.null_test is not None:
            change += (
                f"; and with null_alpha below p = {r.null_test['p_value']:.3g} no cut would "
                "have been made at all"
            )
        elif cfg.threshold is None:
            change += (
                f"; and with a floor min_silhouette above {r.silhouettes[dist]:.3f} no cut would "
                "have been made at all"
            )
        return [*out, change + "."]
    if not merged and not math.isnan(cut) and h <= cut:
        return [(
            "What would have changed it: the cut already grouped them; only the stability "
            "rule below kept them apart (a lower patience, or the same proposal at more "
            "consecutive events, would have merged them)."
        )]
    if not merged:
        facts["merge_at"] = h
        return [(
            f"What would have changed it: a cut at or above {h:.4f} at this event (e.g. a "
            f"fixed threshold of {h:.4f}) would have put them in one proposed group."
        )]
    return []


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


def stability(rows: list[dict], merged: bool, patience: int, facts: dict) -> str:
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


STORIES = {"similarity": _similarity_story, "variance": _variance_story, "kmeans": _kmeans_story}
