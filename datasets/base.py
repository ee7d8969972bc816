"""The one in-memory data model every dataset returns (DESIGN section 3, "Data model").

Targets carry a mask: "multi-output" data (every task labelled on every sample) and
"one dataset per task" data (School: each school its own students) are the same thing with
different masks. A task's loss and gradient come only from its labelled samples.

This module imports numpy only: no torch, no core, no analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

TaskType = Literal["regression", "binary", "multiclass", "rank"]
TASK_TYPES: tuple[str, ...] = ("regression", "binary", "multiclass", "rank")
VARIANTS: tuple[str, ...] = ("real", "substitute", "synthetic")


class DatasetError(ValueError):
    """Bad or missing data: the message names the offending file/value and the fix."""


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    Attributes
    ----------
    name : str
        Unique task name.
    type : {"regression", "binary", "multiclass", "rank"}
        Decides the loss and the metrics. ``rank`` tasks use a pairwise ranking loss among the
        task's labelled samples (its items); the target is the rating.
    n_classes : int
        Number of classes for ``multiclass`` (targets are class indices stored as floats);
        1 for every other type.
    """

    name: str
    type: TaskType
    n_classes: int = 1

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.type == "multiclass" else 1


@dataclass
class MTLData:
    """A multi-task dataset, split into train and test.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"synthetic"``.
    x_train, x_test : ndarray, float32
        Inputs, shape ``(n, n_features)`` for vector data or ``(n, channels, height, width)``
        for images.
    y_train, y_test : ndarray, float32, shape ``(n, n_tasks)``
        Targets; entries where the mask is False are ignored (set them to 0, never NaN).
    m_train, m_test : ndarray, bool, shape ``(n, n_tasks)``
        True where the task is labelled on the sample.
    tasks : list of TaskSpec, length ``n_tasks``
    groups : ndarray of int, shape ``(n_tasks,)``, or None
        The true (planted) groups where the dataset has them; used for the adjusted Rand index.
    provenance : dict
        ``{"name", "variant": "real"|"substitute"|"synthetic", "sha256" or "seed", ...}``;
        recorded in every run's manifest.
    main_metric : str
        Name of the metric Table 2 reports, e.g. ``"rmse"``, ``"explained_variance"``,
        ``"accuracy"``, ``"ndcg"``.
    extras : dict
        Optional extras, e.g. ``"region_masks"``: ``(n_regions, height, width)`` bool and
        ``"task_region"``: ``(n_tasks,)`` int for the activation study; ``"probe_index"``:
        indices into the test split used as the fixed probe set.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    m_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    m_test: np.ndarray
    tasks: list[TaskSpec]
    groups: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    main_metric: str = "rmse"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def input_kind(self) -> Literal["vector", "image"]:
        return "image" if self.x_train.ndim == 4 else "vector"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def validate(self) -> MTLData:
        """Check shapes, dtypes, masks and finiteness; raise :class:`DatasetError` naming the
        offending array and value. Returns ``self`` so loaders can ``return data.validate()``."""
        from .validation import validate_mtl_data

        validate_mtl_data(self)
        return self
