"""What every store file holds: the schema tables (the single source of truth), pure data.

Each table lists a file kind's variables, one spec line ``name (dims) dtype [units]`` per
variable followed by indented description lines. The units marker follows the CF conventions:

- ``[1]``: a dimensionless quantity (losses, gradients, distances, shares);
- ``[count]``, ``[step]`` (optimizer steps), ``[s]`` (seconds), ``[%]`` (percent);
- ``[-]``: no units at all. The variable is written *without* a ``units`` attribute: categorical
  values and indices (entity, group, cluster and region ids, task and probe indices) and boolean
  flags or masks, which CF says carry none.

Task metrics (``metrics.nc``) get their units from the writer (training passes
:data:`selective_sharing.core.metrics.METRIC_UNITS`).

Every dim has a coordinate where one is meaningful: ``task``/``task_other`` (task names),
``distance`` (distance names), ``step`` and ``probe`` (their own values), ``entity``/
``entity_other`` (the entity index, which assignment-like variables hold, plus the non-index
coordinate ``entity_tasks``/``entity_other_tasks`` naming each entity's member tasks) and
``row, col, factor, cluster, bin, sketch, region`` (integer positions 0..n-1, see
:data:`INDEX_COORDS`). Pure array axes (``unit``, ``hidden``, ``height``, ``width``) have none.
Files written before these coordinates existed are read as they are: no reader requires them.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

SCHEMA_VERSION = 1
"""Stored as the global attribute ``schema_version`` of every file and in ``manifest.json``.

Only a change that readers of this version cannot read bumps it. Additions did not: the entity
and position coordinates, ``[-]`` (no units) on categorical variables, metric units, the
``method``/``seed``/``dataset`` attributes of ``metrics.nc`` and leaving out metrics that do not
apply to a run's task types; files written without them read, decode and verify unchanged."""

STATUSES = ("running", "complete", "failed")
"""Allowed values of ``manifest["status"]``."""

COMPLEVEL = 4
CHUNK_BYTES = 1 << 20
"""Arrays larger than this are stored in chunks of at most about this size."""


@dataclasses.dataclass(frozen=True)
class VarSpec:
    """One variable of a store file: its named dims, dtype, units and description."""

    dims: tuple[str, ...]
    dtype: np.dtype
    units: str | None
    """CF units; None (``[-]`` in the tables): categorical or index, no ``units`` attribute."""
    description: str


NO_UNITS = "-"
"""The units marker of the spec tables meaning "no units" (categorical values, indices, flags)."""


_SPEC_LINE = re.compile(r"^(\w+) \(([\w, ]*)\) (\w+) \[(.*)\]$")


def _table(text: str) -> dict[str, VarSpec]:
    """Parse ``name (dims) dtype [units]`` lines, each followed by indented description lines."""
    specs: dict[str, list] = {}
    name = ""
    for line in text.strip().splitlines():
        if line.startswith(" "):
            specs[name][3].append(line.strip())
        else:
            name, dims, dtype, units = _SPEC_LINE.match(line).groups()
            specs[name] = [
                tuple(d for d in dims.split(", ") if d),
                np.dtype(dtype),
                None if units == NO_UNITS else units,
                [],
            ]
    return {n: VarSpec(d, t, u, " ".join(desc)) for n, (d, t, u, desc) in specs.items()}


EVENT_VARS = _table("""
summed (entity, row, col) float32 [1]
    input: the window's summed gradient signal of each entity
bins (entity, bin, sketch) float32 [1]
    input: the window's steps summed into consecutive bins, randomly projected to sketch dims
assignment_before (task) int64 [-]
    input: entity of each task before the event
streak_before (task, task_other) int64 [count]
    input: consecutive events in which each task pair was proposed together (hysteresis)
singular_values (entity, factor) float64 [1]
    top-r singular values of each entity's summed gradient (0 where the rank is lower)
factors (entity, factor, col) float64 [1]
    top-r right singular vectors (gradient factors) of each entity, sign-canonical
degenerate (entity) bool [-]
    entity whose summed gradient is numerically zero (never merged)
distances (distance, entity, entity_other) float64 [1]
    distance between entities, one matrix per distance
silhouettes (distance) float64 [1]
    silhouette score of the best average-linkage cut per distance (-1: no cut exists)
kmeans_labels (entity, factor) int64 [-]
    pooled k-means cluster of each factor (-1: zero singular value)
membership (entity, cluster) float64 [1]
    share of each entity's factor weight (sigma^2) per k-means cluster
proposed (entity) int64 [-]
    strategy's group of each entity (after guards, before hysteresis)
condition (entity, entity_other) float64 [1]
    value the strategy's condition compared for each entity pair
threshold () float64 [1]
    cut or threshold the condition was compared with (NaN: none applies)
streak_after (task, task_other) int64 [count]
    hysteresis state after the event
assignment_after (task) int64 [-]
    entity of each task after the event
parent (entity) int64 [-]
    entity after the event that each entity before it went into
""")

HISTORY_VARS = _table("""
step (step) int64 [step]
    optimizer step
loss (step, task) float32 [1]
    training loss of the task on the step's mini-batch (NaN where the batch had no labelled
    sample)
grad_norm (step, task) float32 [1]
    L2 norm of the gradient of the task's estimator on the step
lr (step) float64 [1]
    learning rate of the step
assignment (step, task) int64 [-]
    entity (group) of each task at the step
""")

METRICS_VARS = _table("""
n_parameters () int64 [count]
    trainable parameters of the final model
n_parameters_estimators () int64 [count]
    trainable parameters of the final estimators
n_groups () int64 [count]
    number of estimators (groups) at the end
partition (task) int64 [-]
    final group of each task
wall_time_s () float64 [s]
    wall-clock training time
backward_passes () int64 [count]
    backward passes run during training
forward_passes () int64 [count]
    forward passes run during training
steps () int64 [step]
    optimizer steps run
adjusted_rand_index () float64 [1]
    adjusted Rand index of the final partition against the true groups
main () float64 [1]
    mean over tasks of the main metric (NaN ignored); units: those of the main metric
""")

ACTIVATION_VARS = _table("""
probe (probe) int64 [-]
    index of the probe sample in the test split
representation (probe, unit) float32 [1]
    shared representation h of each probe sample
labels (probe, task) float32 [1]
    target of each task on each probe sample
label_mask (probe, task) bool [-]
    whether the task is labelled on the probe sample
assignment (task) int64 [-]
    entity (group) of each task at the snapshot
estimator_output (probe, entity, hidden) float32 [1]
    output of each entity's estimator on each probe sample
saliency (task, probe, height, width) float32 [1]
    saliency of the input for each task's output, at reduced resolution
region_masks (region, height, width) bool [-]
    input regions a task may need (e.g. image halves)
task_region (task) int64 [-]
    region each task needs (-1: none)
object_masks (probe, height, width) bool [-]
    pixels covered by the objects of each probe sample
""")

AFFINITY_VARS = _table("""
affinity (task, task_other) float64 [1]
    mean task affinity recorded during the joint training phase of a grouping baseline
    (cosine_groups: gradient cosine similarity on the shared trunk; tag: lookahead affinity
    of the row task's step on the column task's loss)
partition (task) int64 [-]
    groups formed from the affinity, which the grouped model was then trained with
""")

COORD_DESCRIPTIONS = {
    "task": "task name",
    "task_other": "task name (second axis of task-pair matrices)",
    "distance": "name of the distance between entities",
    "entity": "entity (estimator) index: the value assignment-like variables hold for its tasks",
    "entity_other": "entity (estimator) index (second axis of entity-pair matrices)",
    "entity_tasks": "names of the entity's member tasks, joined by '/' (empty: none)",
    "entity_other_tasks": "names of the entity's member tasks, joined by '/' (empty: none)",
}

INDEX_COORDS = {
    "row": "row of each entity's gradient signal (first_layer: a unit of the estimator's first "
    "hidden layer; all_params: the single row)",
    "col": "column of each entity's gradient signal (first_layer: a unit of the shared "
    "representation; all_params: a flattened estimator parameter)",
    "factor": "rank of the gradient factor (0: largest singular value)",
    "cluster": "pooled k-means cluster id (the values of kmeans_labels)",
    "bin": "bin of the event's window, in step order (0: earliest steps)",
    "sketch": "dimension of the random projection (sketch) of each bin",
    "region": "input region id (the values of task_region)",
}
"""Dims whose coordinate is the position ``0..n-1`` (int64, no units), with its description."""

OPTIONAL_COORDS = frozenset(
    {"entity", "entity_other", "entity_tasks", "entity_other_tasks", *INDEX_COORDS}
)
"""Coordinates that files written before they existed lack: no reader may require them."""
EVENT_ATTRS = (
    "index",
    "step",
    "window_start",
    "sketch_seed",
    "sketch_kind",
    "kmeans_k",
    "n_params_before",
    "n_params_after",
    "merge_mode",
    "grouping_config",
    "chosen_distance",
)
"""Global attributes every event file has (decoding refuses a file without one of them)."""

OPTIONAL_EVENT_ATTRS = ("decision_rule", "null_test")
"""Global attributes an event file may lack: ``decision_rule`` (files written before rules
were numbered: rule 1) and ``null_test``, the JSON record of the edge-permutation test of the
best cut (``p_value``, ``statistic``, ``samples``, ``alpha``, ``key``, ``silhouettes``; exact:
JSON writes floats as their shortest round-tripping repr), written only by events decided with
the grouping config ``null="permutation"``. Without it the event ran no test."""
