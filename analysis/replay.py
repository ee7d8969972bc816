"""Replay a run's grouping events from its store, exactly, or under another rule.

**Exact replay** (no overrides): every event is recomputed by
:func:`~selective_sharing.core.grouping.grouping_event`, the same pure function training called,
from the event's stored inputs (the summed window, ``assignment_before``, ``streak_before``) and
its stored grouping config. Every output (factors, singular values, both distance matrices,
silhouettes, k-means labels, memberships, condition, threshold, partitions) is compared with the
recorded one *exactly* (``np.array_equal``, NaN equal to NaN). The recorded inputs must also
chain: event k's ``assignment_before``/``streak_before`` equal event k-1's outputs (the first
event starts from singletons and zero streaks).

**Counterfactual replay** (``strategy``, ``distance``, ``threshold`` or other
:class:`~selective_sharing.core.grouping.GroupingConfig` fields overridden): the groups another
rule would have formed from the same gradient history, without retraining. The windows were
summed per *recorded* entity, so once the counterfactual partition differs from the recorded
one, its entities have no stored window of their own. With ``chain=True`` (default) the
counterfactual partition is fed forward and each event's window is rebuilt from the recorded
one as follows (``EventReplay.window``):

- ``"recorded"``: the counterfactual entities are the recorded ones: the stored window, exact.
- ``"summed"``: the counterfactual is coarser (it merged more): each counterfactual entity's
  window is the sum of its recorded entities' windows. An approximation: a merged estimator's
  gradient is the sum of its tasks' gradients taken at one shared weight, not at several.
- ``"forced"``: the counterfactual kept apart tasks the recorded run had merged; their separate
  gradients were never recorded, so the recorded merge is adopted (the partition becomes the
  join of both) and the event says so.

With ``chain=False`` every event is replayed from its recorded inputs with the new rule: the
partition each event would have produced given the recorded history up to it. Only recorded
events can be replayed: a run that stopped grouping (one group left) has no later windows.

**Ignored overrides**: an override of a field that the (counterfactual) strategy does not use
(e.g. ``threshold`` for ``kmeans``, ``min_silhouette`` next to a fixed ``threshold``) cannot
change any partition. :func:`replay`, :func:`sweep_thresholds` and ``explain`` then warn with
:class:`IgnoredOverrideWarning`, naming the strategy and the fields it does use; the fields
come from the declaration next to the strategies
(:func:`selective_sharing.core.grouping.registry.config_fields_used`). A warning, not an
error: the replay is still correct (it equals the run without the override), and sweeping
every run of a results folder should not stop at the first ``kmeans`` run. Make it an error
with ``warnings.simplefilter("error", IgnoredOverrideWarning)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..core.grouping import UNVERSIONED_RULE, EventResult, GroupingConfig, grouping_event
from .events import (
    RunLike,
    chain_problems,
    compare_events,
    counterfactual_inputs,
    grouping_config,
    merges_of,
    read_events,
)
from .methods import initial_assignment
from .overrides import IgnoredOverrideWarning, config_with, warn_ignored

__all__ = ["EventReplay", "IgnoredOverrideWarning", "ReplayReport", "replay", "sweep_thresholds"]

_KEEP = object()


@dataclass(frozen=True)
class EventReplay:
    """One replayed event.

    Attributes
    ----------
    index, step : int
        Event number and the step it ran at.
    matched : bool
        Every field equals the recorded one exactly (for a counterfactual: the new rule
        reproduced the recorded event).
    mismatched : tuple of str
        Fields that differ, e.g. ``("distances[cosine]", "assignment_after")``; inputs that do
        not chain with the previous event read ``"assignment_before (chain)"``.
    merges : tuple of tuple of tuple of str
        One entry per new group formed from several entities: the task names of each part,
        e.g. ``((("t0",), ("t3", "t4")),)``.
    window : str
        ``"recorded"``, ``"summed"`` or ``"forced"`` (see the module docstring).
    result : EventResult
        The replayed event (inputs, intermediates, outcome).
    recorded : EventResult
        The event as stored.
    rule : int
        The decision rule version the event was decided and replayed by (its file's
        ``decision_rule``; 1 for files written before versions were recorded).
    """

    index: int
    step: int
    matched: bool
    mismatched: tuple[str, ...]
    merges: tuple[tuple[tuple[str, ...], ...], ...]
    window: str
    result: EventResult
    recorded: EventResult
    rule: int = UNVERSIONED_RULE

    @property
    def condition(self) -> np.ndarray:
        """(E, E) float64: the value the strategy's condition compared for each entity pair."""
        return self.result.condition

    @property
    def threshold(self) -> float:
        return self.result.threshold


@dataclass(frozen=True)
class ReplayReport:
    """Outcome of :func:`replay`. ``matched`` is True only when every event matched.

    ``written_by`` holds the manifest's ``git_revision`` and package ``versions``: an exact
    replay needs the decision-rule code that wrote the run, so mismatches in the outputs of
    every event (not in one field of one event) usually mean that code has changed since.
    """

    run: str
    task_names: tuple[str, ...]
    config: GroupingConfig | None
    overrides: dict
    chain: bool
    events: tuple[EventReplay, ...]
    initial_assignment: np.ndarray
    seconds: float = field(default=0.0, compare=False)
    written_by: dict = field(default_factory=dict, compare=False)
    ignored: tuple[str, ...] = ()
    """Overridden fields that the strategy does not use (they changed nothing; a warning said
    so)."""

    @property
    def counterfactual(self) -> bool:
        return bool(self.overrides)

    @property
    def matched(self) -> bool:
        return all(e.matched for e in self.events)

    @property
    def assignment(self) -> np.ndarray:
        """(T,) int64: the final partition of tasks (after the last replayed event)."""
        return self.events[-1].result.assignment_after if self.events else self.initial_assignment

    @property
    def n_groups(self) -> int:
        return int(self.assignment.max()) + 1

    def groups(self) -> list[tuple[str, ...]]:
        """Task names of each final group, in canonical order."""
        a = self.assignment
        return [
            tuple(self.task_names[i] for i in np.flatnonzero(a == g)) for g in range(a.max() + 1)
        ]

    def to_frame(self) -> pd.DataFrame:
        """One row per event: step, matched, mismatched fields, sizes, distance, threshold."""
        return pd.DataFrame([_row(e) for e in self.events])

    def __repr__(self) -> str:
        """One line (the dataclass repr would print every event's gradient arrays)."""
        kind = f"counterfactual={self.overrides!r}" if self.counterfactual else "exact"
        return (f"ReplayReport(run={self.run!r}, {kind}, events={len(self.events)}, "
                f"matched={self.matched}, n_groups={self.n_groups})")

    def __str__(self) -> str:
        kind = f"counterfactual {self.overrides}" if self.counterfactual else "exact replay"
        head = (
            f"{kind} of {self.run}: {len(self.events)} event(s), "
            f"{sum(e.matched for e in self.events)} matched, {self.seconds:.3f} s"
        )
        lines = [head]
        for e in self.events:
            bad = "" if e.matched else f"  differs in: {', '.join(e.mismatched)}"
            lines.append(
                f"  event {e.index} (step {e.step}): {e.result.n_entities_before} -> "
                f"{e.result.n_entities_after} entities [{e.window}, decision rule "
                f"{e.rule}]{bad}"
            )
        lines.append(f"final groups: {self.groups()}")
        if not self.matched and not self.counterfactual:
            lines.append(
                f"note: the run was written at git revision {self.written_by.get('git_revision')}"
                f" with {self.written_by.get('versions')}; replay with that code if the "
                "decision rule has changed since"
            )
        return "\n".join(lines)


def _row(e: EventReplay) -> dict:
    r = e.result
    row = {"event": e.index, "step": e.step, "matched": e.matched}
    row.update(
        mismatched=", ".join(e.mismatched), window=e.window, n_entities_before=r.n_entities_before
    )
    row.update(n_groups_after=r.n_entities_after, chosen_distance=r.chosen_distance,
               decision_rule=e.rule)
    row.update({f"silhouette_{k}": v for k, v in r.silhouettes.items()}, threshold=r.threshold)
    row["merges"] = "; ".join(" + ".join("/".join(p) for p in m) for m in e.merges)
    return row


# ----------------------------------------------------------------------------- replay


def _changes(strategy: object, distance: object, threshold: object, overrides: dict) -> dict:
    out = dict(overrides)
    for name, value in (("strategy", strategy), ("distance", distance), ("threshold", threshold)):
        if value is not _KEEP and not (value is None and name != "threshold"):
            out[name] = value
    if "auto_candidates" in out:
        out["auto_candidates"] = tuple(out["auto_candidates"])
    return out


def replay(
    run: RunLike,
    strategy: str | None = None,
    distance: str | None = None,
    threshold: float | None | object = _KEEP,
    *,
    chain: bool = True,
    **overrides: object,
) -> ReplayReport:
    """Recompute every grouping event of a run from its store (module docstring for details).

    Parameters
    ----------
    run : path-like or DataTree
        A run directory or a tree from :func:`~selective_sharing.analysis.load_run`.
    strategy, distance : str, optional
        Counterfactual strategy / distance (names in ``STRATEGIES`` / ``DISTANCES`` or
        ``"auto"``); None keeps the stored one.
    threshold : float or None, optional
        Counterfactual threshold; leave it out to keep the stored one, pass None to use the
        strategy's default (silhouette-best cut for ``similarity``).
    chain : bool
        Counterfactuals only: feed the counterfactual partition forward (True) or replay each
        event from its recorded inputs (False).
    **overrides
        Other :class:`GroupingConfig` fields, e.g. ``patience=2``, ``min_silhouette=0.0``.

    Returns
    -------
    ReplayReport
        ``report.matched`` is True only when every event matched exactly.

    Raises
    ------
    StoreError
        An event file is truncated or corrupted (the message names it).

    Warns
    -----
    IgnoredOverrideWarning
        An override that the strategy does not use (e.g. ``threshold`` on a ``kmeans`` run);
        ``report.ignored`` lists them.
    """
    return replay_with(run, _changes(strategy, distance, threshold, overrides), chain, "replay", 3)


def replay_with(
    run: RunLike, changes: dict, chain: bool, caller: str, stacklevel: int
) -> ReplayReport:
    """:func:`replay` with the overrides as one dict (``caller`` and ``stacklevel`` place the
    :class:`IgnoredOverrideWarning`: 2 points at the caller of this function)."""
    start = time.perf_counter()
    manifest, decoded = read_events(run, bins=False)
    ignored = warn_ignored(decoded, changes, caller, stacklevel + 1)
    report = _replay_decoded(_run_name(run), manifest, decoded, changes, chain, start)
    return dataclasses.replace(report, ignored=ignored) if ignored else report


def _replay_decoded(
    name: str, manifest: dict, decoded: list, changes: dict, chain: bool, start: float
) -> ReplayReport:
    names = tuple(manifest.get("task_names") or (decoded[0][1]["task_names"] if decoded else ()))
    replayed, config, prev, state, streak = [], None, None, None, None
    for rec, meta in decoded:
        config = config_with(grouping_config(meta["grouping_config"]), changes)
        if changes and chain and state is not None:
            summed, assign, window = counterfactual_inputs(rec, state)
        else:
            summed, assign, window, streak = rec.summed, rec.assignment_before, "recorded", None
        new = grouping_event(  # with the rule that decided the event (its file says which)
            summed, assign, rec.streak_before if streak is None else streak, config,
            rule=meta.get("decision_rule", UNVERSIONED_RULE),
        )
        bad = compare_events(new, rec) + ([] if changes else chain_problems(rec, prev))
        merges = merges_of(new, names)
        event = EventReplay(
            meta["index"], meta["step"], not bad, tuple(bad), merges, window, new, rec,
            meta.get("decision_rule", UNVERSIONED_RULE),
        )
        replayed.append(event)
        prev, state, streak = rec, new.assignment_after, new.streak_after
    initial = (decoded[0][0].assignment_before if decoded
               else initial_assignment(manifest, len(names)))
    written = {k: manifest.get(k) for k in ("git_revision", "versions")}
    seconds = time.perf_counter() - start
    return ReplayReport(
        name, names, config, changes, chain, tuple(replayed), initial, seconds, written
    )


def _run_name(run: object) -> str:
    if isinstance(run, xr.DataTree):
        return str(run.attrs.get("run_dir", run.name))
    return str(Path(run))


def sweep_thresholds(
    run: RunLike,
    thresholds: Iterable[float] | None = None,
    *,
    strategy: str | None = None,
    distance: str | None = None,
    chain: bool = False,
) -> pd.DataFrame:
    """Number of groups against the threshold, by counterfactual replay.

    Parameters
    ----------
    run : path-like or DataTree
    thresholds : iterable of float, optional
        Values in [0, 2]; default 21 points from 0 to the largest recorded distance.
    strategy, distance : str, optional
        Default: the stored ones. A strategy that does not use the threshold (``kmeans``)
        gives a flat line: :class:`IgnoredOverrideWarning` says so (once per sweep).
    chain : bool
        As in :func:`replay`. Default False: each event is replayed from its recorded inputs,
        so every row is exact (no rebuilt windows); row ``event=0`` is the whole
        counterfactual of a single-event run. With True the counterfactual partition is fed
        forward and ``forced`` counts the events that had to adopt a recorded merge.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per (threshold, event): ``threshold, event, step, n_groups``
        (entities after the event), ``window``, ``forced`` (forced events so far) and
        ``final`` (True on each threshold's last event).
    """
    manifest, decoded = read_events(run, bins=False)
    warn_ignored(
        decoded, _changes(strategy, distance, 0.0, {}), "sweep_thresholds", 3,
        "threshold (the sweep is a flat line)",
    )  # fmt: skip
    if thresholds is None:
        top = max((float(np.max(d)) for r, _ in decoded for d in r.distances.values()), default=1.0)
        thresholds = np.linspace(0.0, min(top, 2.0), 21)
    rows = []
    for thr in thresholds:
        changes = _changes(strategy, distance, float(thr), {})
        rep = _replay_decoded(_run_name(run), manifest, decoded, changes, chain, 0.0)
        forced = np.cumsum([e.window == "forced" for e in rep.events])
        last = len(rep.events) - 1
        rows += [
            (float(thr), e.index, e.step, e.result.n_entities_after, e.window, int(f), i == last)
            for i, (e, f) in enumerate(zip(rep.events, forced))
        ]
    columns = ["threshold", "event", "step", "n_groups", "window", "forced", "final"]
    return pd.DataFrame(rows, columns=columns)
