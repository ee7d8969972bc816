"""What each training method means: one :class:`MethodSpec` per name, in one registry.

A method is four independent choices, and every part of the code that behaves differently per
method reads them here instead of comparing names:

- ``trunks``: one shared trunk (``"shared"``), or one whole network per task (``"per_task"``,
  ``stl``), which the model builder turns into ``n_tasks`` trunk copies;
- ``initial_partition``: which estimator each task starts on, ``"per_task"`` (one each) or
  ``"shared"`` (``mtl_full``: one estimator for all tasks);
- ``strategy``: the grouping strategy of :mod:`~selective_sharing.core.grouping` that regroups
  tasks during training (the ``ss_*`` methods), or None;
- ``partition``: how a grouping baseline fixes its partition before training (``random_sizes``,
  ``cosine_affinity``, ``lookahead_affinity``, ``true_groups``), or None; ``needs`` says what
  that decision reads: a Selective Sharing reference run (its group sizes) or the dataset's true
  groups.

The resolved spec of a run's method is written to its manifest (``manifest["method_spec"]``,
:meth:`MethodSpec.to_dict`), so analysis/ reads what the run did without importing this module.
Pure (stdlib and numpy): :mod:`~selective_sharing.core.config` builds ``METHODS`` from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .grouping import ConfigError

TRUNKS = ("shared", "per_task")
INITIAL_PARTITIONS = ("per_task", "shared")
PARTITIONS = ("random_sizes", "cosine_affinity", "lookahead_affinity", "true_groups")
NEEDS = ("reference_run", "true_groups")


@dataclass(frozen=True)
class MethodSpec:
    """The meaning of one training method (see the module docstring for each field).

    ``summary`` is one line for help texts; it is not part of what a run records.
    """

    name: str
    summary: str = field(compare=False)
    trunks: str = "shared"
    initial_partition: str = "per_task"
    strategy: str | None = None
    partition: str | None = None
    needs: str | None = None

    def __post_init__(self) -> None:
        for key, value, allowed in (("trunks", self.trunks, TRUNKS),
                                    ("initial_partition", self.initial_partition,
                                     INITIAL_PARTITIONS),
                                    ("partition", self.partition, (None, *PARTITIONS)),
                                    ("needs", self.needs, (None, *NEEDS))):
            if value not in allowed:
                raise ValueError(f"invalid MethodSpec({self.name!r}).{key}={value!r}: {key} "
                                 f"must be one of {list(allowed)}")
        if self.strategy is not None and self.partition is not None:
            raise ValueError(f"invalid MethodSpec({self.name!r}): a method either regroups "
                             f"during training (strategy={self.strategy!r}) or fixes a "
                             f"partition before it (partition={self.partition!r}), not both")

    @property
    def is_selective(self) -> bool:
        """Regroups tasks during training from their gradients (fires grouping events)."""
        return self.strategy is not None

    @property
    def records_affinity(self) -> bool:
        """Decides its partition from task affinities recorded in a joint training phase."""
        return self.partition in ("cosine_affinity", "lookahead_affinity")

    def trunk_copies(self, n_tasks: int) -> int:
        """Trunks the built-in model holds: one shared, or one per task."""
        return n_tasks if self.trunks == "per_task" else 1

    def initial_assignment(self, n_tasks: int) -> np.ndarray:
        """(n_tasks,) int64: the estimator of each task when training starts (before a
        baseline's fixed partition, which replaces it)."""
        if self.initial_partition == "shared":
            return np.zeros(n_tasks, dtype=np.int64)
        return np.arange(n_tasks, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a run records it (``manifest["method_spec"]``): every field but
        ``summary``, JSON-ready."""
        out = asdict(self)
        del out["summary"]
        return out


_SPECS = (
    MethodSpec("stl", "single-task learning: one whole network per task", trunks="per_task"),
    MethodSpec("mtl", "one shared trunk, one estimator per task, never regrouped"),
    MethodSpec("mtl_full", "one shared trunk and one estimator shared by every task",
               initial_partition="shared"),
    MethodSpec("ss_similarity", "Selective Sharing, merging by gradient similarity",
               strategy="similarity"),
    MethodSpec("ss_variance", "Selective Sharing, merging by gradient variance",
               strategy="variance"),
    MethodSpec("ss_kmeans", "Selective Sharing, k-means on the tasks' gradients",
               strategy="kmeans"),
    MethodSpec("random_groups", "random groups with the sizes a Selective Sharing run found",
               partition="random_sizes", needs="reference_run"),
    MethodSpec("cosine_groups", "groups from mean pairwise gradient cosine (TAG's CS)",
               partition="cosine_affinity", needs="reference_run"),
    MethodSpec("tag", "groups from lookahead inter-task affinity (Fifty et al. 2021)",
               partition="lookahead_affinity", needs="reference_run"),
    MethodSpec("oracle", "the dataset's true groups", partition="true_groups",
               needs="true_groups"),
)
METHOD_SPECS: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}
"""Every registered method, by name, in the order tables list them."""

METHODS: tuple[str, ...] = tuple(METHOD_SPECS)


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``; a ConfigError that lists the methods for an unknown one."""
    try:
        return METHOD_SPECS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"invalid method={name!r}: method must be one of {list(METHODS)}"
                          ) from None


def methods_where(**fields: Any) -> tuple[str, ...]:
    """Names of the methods whose spec has every given field value, in registry order, e.g.
    ``methods_where(needs="reference_run")``; a property name (``is_selective=True``) works too."""
    return tuple(name for name, spec in METHOD_SPECS.items()
                 if all(getattr(spec, key) == value for key, value in fields.items()))


__all__ = ["METHODS", "METHOD_SPECS", "MethodSpec", "method_spec", "methods_where"]
