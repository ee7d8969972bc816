"""The typed records the store's decoders return and its encoders take, one per file kind.

Each is a frozen dataclass of plain arrays and scalars (the store imports neither torch nor the
grouping rule), whose fields are the keyword arguments of that kind's encoder, so that
``decode(encode(record)) == record`` exactly (:class:`~.coding.Record` compares bits) and
``encode(decode(ds))`` is identical to ``ds``. Shapes use E entities, T tasks, S steps,
r factors, K k-means clusters, P probe samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .coding import Record

__all__ = ["Activations", "Affinity", "Event", "History", "Metrics"]


@dataclass(frozen=True, eq=False)
class Event(Record):
    """One grouping event (``events/event_NNNNNN.nc``): the decision, then its context.

    The fields up to ``parent`` are, by name, those of the grouping rule's ``EventResult``
    (:data:`DECISION_FIELDS`): ``summed`` (E, R, C) float32, ``assignment_before`` (T,),
    ``streak_before`` (T, T), ``singular_values`` (E, r), ``factors`` (E, r, C),
    ``degenerate`` (E,) bool, ``distances`` name -> (E, E), ``silhouettes`` name -> float,
    ``chosen_distance``, ``kmeans_k``, ``kmeans_labels`` (E, r), ``membership`` (E, K),
    ``proposed`` (E,), ``condition`` (E, E), ``threshold``, ``streak_after`` (T, T),
    ``assignment_after`` (T,), ``parent`` (E,) and ``null_test`` (keyword-only, default None);
    see the event table of :mod:`.schema`. The rest (:data:`CONTEXT_FIELDS`) is what
    replaying needs besides them.

    Attributes
    ----------
    null_test : mapping or None
        The edge-permutation test of the event's best cut (grouping config
        ``null="permutation"``): ``p_value``, ``statistic``, ``alpha`` (float), ``samples``,
        ``key`` (int) and ``silhouettes`` ((B,) float64). Stored as the JSON global attribute
        ``null_test`` (:data:`~.schema.OPTIONAL_EVENT_ATTRS`); None, and no attribute, where
        no test ran, as in every file written before the option existed.
    index, step, window_start : int
        Event number, the step it ran at, and the first step of its window.
    bins : (E, n_bins, sketch) float32 or None
        The window's steps summed into bins and projected; None when read without them.
    sketch_seed, sketch_kind : int, str
        How the projection is rebuilt.
    task_names : tuple of str, (T,)
    n_params_before, n_params_after : int
        Parameter counts of the model before and after the merge.
    merge_mode : str
        How merged estimators were initialised (``"average"``, ``"best"``, ``"first"``).
    grouping_config : mapping
        The resolved grouping configuration; a dataclass is accepted when encoding and comes
        back as the dict of its fields (stored as a JSON string attribute).
    decision_rule : int
        The version of the decision rule that decided the event (the grouping rule's
        ``DECISION_RULE_VERSION``; the global attribute ``decision_rule``). Files written before
        it existed lack the attribute: they were decided by rule 1. Replay recomputes an event
        with the rule that decided it.
    """

    summed: np.ndarray
    assignment_before: np.ndarray
    streak_before: np.ndarray
    singular_values: np.ndarray
    factors: np.ndarray
    degenerate: np.ndarray
    distances: Mapping[str, np.ndarray]
    silhouettes: Mapping[str, float]
    chosen_distance: str
    kmeans_k: int
    kmeans_labels: np.ndarray
    membership: np.ndarray
    proposed: np.ndarray
    condition: np.ndarray
    threshold: float
    streak_after: np.ndarray
    assignment_after: np.ndarray
    parent: np.ndarray
    null_test: Mapping[str, object] | None = field(default=None, kw_only=True)
    index: int
    step: int
    window_start: int
    bins: np.ndarray | None
    sketch_seed: int
    sketch_kind: str
    task_names: tuple[str, ...]
    n_params_before: int
    n_params_after: int
    merge_mode: str
    grouping_config: object
    decision_rule: int = 1

    @property
    def n_entities_before(self) -> int:
        """E, the number of entities the event decided about."""
        return int(np.shape(self.summed)[0])

    @property
    def n_entities_after(self) -> int:
        """Entities after the event (0 for a run without tasks)."""
        after = np.asarray(self.assignment_after)
        return int(after.max()) + 1 if after.size else 0


_EVENT_FIELDS = tuple(Event.__dataclass_fields__)
DECISION_FIELDS = _EVENT_FIELDS[: _EVENT_FIELDS.index("index")]
"""Fields of :class:`Event` that the grouping rule's ``EventResult`` has under the same names
(``summed`` .. ``null_test``); a test keeps the two lists equal."""
CONTEXT_FIELDS = _EVENT_FIELDS[len(DECISION_FIELDS) :]
"""The other fields of :class:`Event` (``index`` .. ``grouping_config``): where and how the
event ran, what replaying needs besides the decision."""


@dataclass(frozen=True, eq=False)
class History(Record):
    """Per-step training history (``history.nc``).

    ``step`` (S,) int64, strictly increasing; ``loss`` and ``grad_norm`` (S, T) float32 (NaN
    loss where the batch had no labelled sample); ``lr`` (S,) float64; ``assignment`` (S, T)
    int64, each task's entity at the step.
    """

    step: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    assignment: np.ndarray
    task_names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Metrics(Record):
    """Final test metrics of a run (``metrics.nc``).

    ``task_metrics`` maps each metric that applies to the run's task types to its (T,) values
    (NaN where undefined for a task), in file order; ``metric_units`` gives their units
    (missing: ``"1"``). ``assignment`` (T,) is the final partition. ``adjusted_rand_index``
    is None where the run has no true groups; ``method``, ``seed`` and ``dataset`` are None
    where the writer did not give them. ``run_metrics`` maps each metric computed over the whole
    test set (pooled over tasks, e.g. School's pooled explained variance) to its value; None or
    empty where the run has none (files written before they existed). The stored ``main`` is
    derived, so it is not a field: the run metric named ``main_metric`` when there is one, else
    the NaN-ignoring mean of the task metric over tasks.
    """

    task_names: tuple[str, ...]
    task_metrics: Mapping[str, np.ndarray]
    main_metric: str
    n_parameters: int
    n_parameters_estimators: int
    n_groups: int
    assignment: np.ndarray
    wall_time_s: float
    backward_passes: int
    forward_passes: int
    steps: int
    adjusted_rand_index: float | None
    variant: str
    metric_units: Mapping[str, str] | None = None
    method: str | None = None
    seed: int | None = None
    dataset: str | None = None
    run_metrics: Mapping[str, float] | None = None


@dataclass(frozen=True, eq=False)
class Activations(Record):
    """A snapshot of the shared representation on a fixed probe set (``activations/NAME.nc``,
    the Figure 6 study).

    ``probe_index`` (P,) int64; ``representation`` (P, units) float32; ``labels`` (P, T)
    float32 and ``label_mask`` (P, T) bool; ``assignment`` (T,). The optional arrays (None:
    not recorded) are ``estimator_output`` (P, E, hidden) float32, ``saliency`` (T, P, H, W)
    float32, ``region_masks`` (regions, H, W) bool, ``task_region`` (T,) int64 and
    ``object_masks`` (P, H, W) bool. ``name`` names the file; ``method`` is the run's method.
    """

    name: str
    step: int
    task_names: tuple[str, ...]
    probe_index: np.ndarray
    representation: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    assignment: np.ndarray
    estimator_output: np.ndarray | None
    saliency: np.ndarray | None
    region_masks: np.ndarray | None
    task_region: np.ndarray | None
    object_masks: np.ndarray | None
    method: str


@dataclass(frozen=True, eq=False)
class Affinity(Record):
    """The affinity phase of a grouping baseline (``affinity.nc``): the (T, T) ``affinity``,
    the (T,) ``partition`` formed from it, and what the phase cost (``counters``:
    backward_passes, forward_passes, wall_time_s), so a resumed run need not repeat it."""

    task_names: tuple[str, ...]
    affinity: np.ndarray
    partition: np.ndarray
    method: str
    recorded_steps: int
    counters: Mapping[str, float]
