"""Explicit name -> function registries of distances and strategies (README, "What a run
does", steps 2-3).

A distance turns the factorized window into an ``(E, E)`` matrix; a strategy turns the distances
(and whatever else of the event it reads) into a proposed partition of the entities. Both take
one typed input and their protocols are in :mod:`.protocols`. Users add their own with
:func:`register_distance` and :func:`register_strategy` (usable as decorators); the built-in
ones register themselves when their modules are imported at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocols import DistanceFn, StrategyFn

DISTANCES: dict[str, DistanceFn] = {}
STRATEGIES: dict[str, StrategyFn] = {}

# "auto" is the config value that compares distances; no function may take that name.
RESERVED_NAMES = frozenset({"auto"})


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # Re-importing (or reloading) a module re-registers the same function: not a conflict.
    def origin(fn: Callable[..., Any]) -> tuple:
        code = getattr(fn, "__code__", None)
        where = (code.co_filename, code.co_firstlineno) if code is not None else (id(fn),)
        return (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None), *where)

    return a is b or origin(a) == origin(b)


def _register(table: dict, kind: str, name: str, fn: Callable | None) -> Callable:
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid {kind} name {name!r}: name must be a non-empty string")
    if name in RESERVED_NAMES:
        raise ValueError(
            f"invalid {kind} name {name!r}: {sorted(RESERVED_NAMES)} are reserved; choose another"
        )

    def decorate(func: Callable) -> Callable:
        if not callable(func):
            raise TypeError(f"{kind} {name!r} must be callable, got {type(func).__name__}")
        existing = table.get(name)
        if existing is not None and not _same_function(existing, func):
            table_name = "DISTANCES" if kind == "distance" else "STRATEGIES"
            raise ValueError(
                f"{kind} {name!r} is already registered (to "
                f"{existing.__module__}.{existing.__qualname__}); choose another name or "
                f"remove the old entry first with {table_name}.pop({name!r})"
            )
        table[name] = func
        return func

    return decorate if fn is None else decorate(fn)


def register_distance(name: str, fn: DistanceFn | None = None) -> Callable:
    """Register a distance under ``name``: ``register_distance("x", f)`` or ``@register_distance("x")``.

    Raises
    ------
    ValueError
        If ``name`` is empty, reserved (``"auto"``) or already taken by another function.
    """
    return _register(DISTANCES, "distance", name, fn)


def register_strategy(name: str, fn: StrategyFn | None = None) -> Callable:
    """Register a strategy under ``name``: ``register_strategy("x", f)`` or ``@register_strategy("x")``.

    Raises
    ------
    ValueError
        If ``name`` is empty, reserved (``"auto"``) or already taken by another function.
    """
    return _register(STRATEGIES, "strategy", name, fn)


# ----------------------------------------------------------------------------- config use
# Which GroupingConfig fields can change an event's partition, declared once per built-in
# strategy and distance (analysis/ uses it to refuse silently ignored counterfactuals; a test
# checks every declaration by replay). Declarations only: nothing here changes a decision.

#: Fields every grouping event reads whatever the strategy: the strategy's name, the guards
#: (``max_group_size``, ``min_groups``: also bound the silhouette-best cuts that choose the
#: distance) and hysteresis (``patience``).
EVENT_FIELDS = frozenset({"strategy", "max_group_size", "min_groups", "patience"})

#: Fields that decide the pooled k-means ``membership`` (factors kept, K bound, seed).
MEMBERSHIP_FIELDS = frozenset({"rank", "kmeans_max_k", "seed"})


@dataclass(frozen=True)
class StrategyUse:
    """Which :class:`GroupingConfig` fields reach the partition through one strategy.

    Attributes
    ----------
    fields : frozenset of str
        Fields the strategy function reads itself (besides :data:`EVENT_FIELDS`).
    inputs : frozenset of str
        Computed inputs it reads: ``"distances"`` (then ``distance``, ``auto_candidates`` and
        the fields of the distances computed count), ``"membership"``
        (:data:`MEMBERSHIP_FIELDS`), ``"factors"`` (``rank``). The guards read the distances
        too, but only when a guard can act (``max_group_size`` set or ``min_groups > 1``).
    ignored_when : callable or None
        ``config -> iterable of field names`` among ``fields`` that this config makes moot.
    """

    fields: frozenset[str] = frozenset()
    inputs: frozenset[str] = frozenset()
    ignored_when: Callable[[Any], Any] | None = None


def _similarity_ignores(config: Any) -> tuple[str, ...]:
    # min_silhouette and the null gate the silhouette-best cut only; a fixed threshold bypasses
    # both. The permutation null replaces min_silhouette; null="none" reads no null_* field.
    null = ("null", "null_samples", "null_alpha")
    if config.threshold is not None:
        return ("min_silhouette", *null)
    if config.null == "permutation":
        return ("min_silhouette",)
    return null[1:]


#: Declaration per built-in strategy (user strategies may add theirs; an undeclared strategy
#: is assumed to read every field).
STRATEGY_USES: dict[str, StrategyUse] = {
    "similarity": StrategyUse(
        frozenset({"threshold", "min_silhouette", "null", "null_samples", "null_alpha"}),
        frozenset({"distances"}), _similarity_ignores,
    ),
    "variance": StrategyUse(frozenset({"threshold"}), frozenset({"distances"})),
    "kmeans": StrategyUse(frozenset(), frozenset({"membership"})),
}

#: Fields each built-in distance depends on (``subspace`` compares the top-``rank`` factors).
DISTANCE_USES: dict[str, frozenset[str]] = {
    "cosine": frozenset(),
    "subspace": frozenset({"rank"}),
}


def config_fields_used(config: Any) -> frozenset[str] | None:
    """The :class:`GroupingConfig` fields that can change the partition of an event run with
    ``config``; every other field is ignored under it. None when the strategy or a distance it
    reads has no declaration (:data:`STRATEGY_USES`, :data:`DISTANCE_USES`).

    E.g. ``kmeans`` ignores ``threshold``, ``min_silhouette`` (and, without an active guard,
    ``distance``); ``similarity`` with a fixed ``threshold`` ignores ``min_silhouette``.
    """
    use = STRATEGY_USES.get(config.strategy)
    if use is None:
        return None
    ignored = set(use.ignored_when(config)) if use.ignored_when is not None else set()
    out = set(EVENT_FIELDS) | (set(use.fields) - ignored)
    guards_act = config.max_group_size is not None or config.min_groups > 1
    if "distances" in use.inputs or guards_act:
        auto = config.distance == "auto"
        out |= {"distance", "auto_candidates"} if auto else {"distance"}
        for name in config.auto_candidates if auto else (config.distance,):
            if name not in DISTANCE_USES:
                return None
            out |= DISTANCE_USES[name]
    if "membership" in use.inputs:
        out |= MEMBERSHIP_FIELDS
    if "factors" in use.inputs:
        out.add("rank")
    return frozenset(out)


# Built-ins register themselves on import. Imported last: they import the functions above from
# this (by then initialized) module, so the cycle is harmless.
from . import distances as _distances  # noqa: F401
from .strategies import kmeans as _kmeans  # noqa: F401
from .strategies import similarity as _similarity  # noqa: F401
from .strategies import variance as _variance  # noqa: F401
