"""Explicit name -> function registries of distances and strategies (DESIGN section 3, steps 6-7).

A distance turns the factorized window into an ``(E, E)`` matrix; a strategy turns a distance
matrix into a partition of the entities. Users add their own with :func:`register_distance` and
:func:`register_strategy` (usable as decorators); the built-in ones register themselves when
their modules are imported at the bottom of this file.

Protocols
---------
``DistanceFn(summed, factors, singular_values, degenerate, config) -> distances``
    ``summed`` (E, R, C) float64 (degenerate entities zeroed), ``factors`` (E, r, C),
    ``singular_values`` (E, r), ``degenerate`` (E,) bool, ``config`` a ``GroupingConfig``.
    Returns (E, E) float64: symmetric, zero diagonal, finite, values in [0, 2].
    :func:`~selective_sharing.core.grouping.event.grouping_event` checks this and sets the
    rows of degenerate entities to 1.0 whatever the function returned.
``StrategyFn(distances, factors, membership, config, *, degenerate[, sizes]) -> result``
    ``distances`` (E, E), ``factors`` (E, r, C), ``membership`` (E, K), ``degenerate`` (E,)
    bool; optional keyword ``sizes`` (E,) int64, the number of tasks of each entity (passed only
    when the function accepts it, because ``max_group_size`` counts tasks).
    Returns ``(labels (E,) int canonical, condition (E, E) float64, threshold float)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

DistanceFn = Callable[..., np.ndarray]
StrategyFn = Callable[..., tuple[np.ndarray, np.ndarray, float]]

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


# Built-ins register themselves on import. Imported last: they import the functions above from
# this (by then initialized) module, so the cycle is harmless.
from . import distances as _distances  # noqa: F401
from .strategies import kmeans as _kmeans  # noqa: F401
from .strategies import similarity as _similarity  # noqa: F401
from .strategies import variance as _variance  # noqa: F401
