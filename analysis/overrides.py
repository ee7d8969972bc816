"""Counterfactual overrides: applying them to a run's :class:`GroupingConfig`, and warning
(:class:`IgnoredOverrideWarning`) about the ones the strategy does not use, so that a replay or
a sweep that cannot change anything says so instead of printing a flat line."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable

from ..core.grouping import GroupingConfig
from ..core.grouping.registry import config_fields_used
from .events import grouping_config

__all__ = ["IgnoredOverrideWarning", "config_with", "ignored_overrides", "warn_ignored"]


class IgnoredOverrideWarning(UserWarning):
    """A counterfactual override names a :class:`GroupingConfig` field that the run's (or the
    counterfactual) strategy does not use, so it cannot change any partition. The message
    names the strategy, the ignored fields and the fields the strategy does use."""


def config_with(base: GroupingConfig, changes: dict) -> GroupingConfig:
    names = {f.name for f in dataclasses.fields(GroupingConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"replay() got unknown override(s) {unknown}; allowed: {sorted(names)}")
    return dataclasses.replace(base, **changes)


def ignored_overrides(configs: Iterable[GroupingConfig], changes: dict) -> dict[str, tuple]:
    """``{strategy: (ignored fields, used fields)}`` for the overridden fields that the given
    (already overridden) configs' strategies do not use; empty when every override counts.
    Strategies without a declaration are assumed to use every field."""
    out: dict[str, tuple] = {}
    for config in configs:
        used = config_fields_used(config)
        if used is None:
            continue
        ignored = sorted(set(changes) - used)
        if ignored:
            old = out.get(config.strategy, ((), ()))
            out[config.strategy] = (
                tuple(sorted(set(old[0]) | set(ignored))),
                tuple(sorted(set(old[1]) | used)),
            )
    return out


def warn_ignored(
    decoded: list, changes: dict, caller: str, stacklevel: int, what: str = ""
) -> tuple[str, ...]:
    """Warn (once per strategy) about overrides the strategy ignores; return their names.
    ``what`` replaces the values in the message (a sweep has many)."""
    if not changes:
        return ()
    configs = [config_with(grouping_config(m["grouping_config"]), changes) for _, m in decoded]
    found = ignored_overrides(configs, changes)
    names: set[str] = set()
    for strategy, (ignored, used) in found.items():
        names |= set(ignored)
        given = what or "override " + ", ".join(f"{k}={changes[k]!r}" for k in ignored)
        warnings.warn(
            f"{caller}: strategy {strategy!r}, as configured here, does not use "
            f"{', '.join(ignored)}: the {given} cannot change any partition. {strategy!r} "
            f"uses only {', '.join(used)} (declared in "
            "selective_sharing.core.grouping.registry.STRATEGY_USES)",
            IgnoredOverrideWarning,
            stacklevel=stacklevel,
        )
    return tuple(sorted(names))
