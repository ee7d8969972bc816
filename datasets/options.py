"""Loader option checks, declared: each option names a rule, :func:`check_options` applies them.

A bad option fails before any data is read, naming the dataset, the option, the value and what
is allowed::

    sizes = check_options("mnist_context", n_train=(n_train, Int(1)), n_test=(n_test, Int(1)))

The same idea as ``core.grouping.constraints`` (the configs' vocabulary), written again here on
purpose: datasets/ may not import core (tests/test_layers.py: core depends on datasets, never the
reverse, and datasets must be usable without the training code), and its messages have their own
pinned wording (``invalid n=0; n must be an int >= 1``, with ``;`` and the dataset's name).
Imports numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import DatasetError


@dataclass(frozen=True)
class Int:
    """An integer (Python or numpy, not bool) in ``[minimum, maximum]``; None: unbounded."""

    minimum: int | None = None
    maximum: int | None = None

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` passes (returned as ``int(value)``)."""
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        ok = ok and (self.minimum is None or value >= self.minimum)
        return ok and (self.maximum is None or value <= self.maximum)

    def convert(self, value: Any) -> int:
        return int(value)

    def explain(self, option: str) -> str:
        lower = "" if self.minimum is None else f" >= {self.minimum}"
        upper = "" if self.maximum is None else f" and <= {self.maximum}"
        return f"{option} must be an int{lower}{upper}"


@dataclass(frozen=True)
class Real:
    """A finite number (int, float or numpy, not bool) in ``[minimum, maximum]``; ``hint``, when
    given, ends the message (what the option means, how to fix it)."""

    minimum: float
    maximum: float | None = None
    hint: str = ""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` passes (returned as ``float(value)``)."""
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        ok = ok and np.isfinite(value) and value >= self.minimum
        return ok and (self.maximum is None or value <= self.maximum)

    def convert(self, value: Any) -> float:
        return float(value)

    def explain(self, option: str) -> str:
        upper = "" if self.maximum is None else f" and <= {self.maximum}"
        hint = f" ({self.hint})" if self.hint else ""
        return f"{option} must be a finite number >= {self.minimum}{upper}{hint}"


@dataclass(frozen=True)
class OneOf:
    """One of ``allowed`` (returned unchanged).

    ``wording`` formats the message's tail from ``option`` and ``allowed``; the default is the
    loaders' ``allowed values: (...)``, and the registry's profile and the split arguments keep
    the wording their callers and tests already rely on.
    """

    allowed: tuple[Any, ...]
    wording: str = "allowed values: {allowed}"

    def accepts(self, value: Any) -> bool:
        return value in self.allowed

    def convert(self, value: Any) -> Any:
        return value

    def explain(self, option: str) -> str:
        return self.wording.format(option=option, allowed=tuple(self.allowed))


Rule = Int | Real | OneOf
#: A split argument: the data's two splits.
SPLIT = OneOf(("train", "test"), "allowed: {allowed}")
#: A split argument that may also name the validation split (data loaded with val_fraction > 0).
SPLIT_OR_VAL = OneOf(("train", "val", "test"), "allowed: {allowed}")
#: ``val_fraction``, every loader's option: the share of the training part held out as the
#: validation split.
VAL_FRACTION = Real(0.0, 0.5, "the share of the training part held out for validation; "
                    "0 for no validation split, e.g. val_fraction=0.2")


def check_option(option: str, value: Any, rule: Rule, dataset: str | None = None) -> Any:
    """``value`` converted by ``rule`` (``int``/``float``), or raise :class:`DatasetError`:
    ``[dataset 'name': ]invalid option=value; <what the rule allows>``."""
    if not rule.accepts(value):
        where = "" if dataset is None else f"dataset {dataset!r}: "
        raise DatasetError(f"{where}invalid {option}={value!r}; {rule.explain(option)}")
    return rule.convert(value)


def check_options(dataset: str, **options: tuple[Any, Rule]) -> dict[str, Any]:
    """Check ``option=(value, rule)`` pairs in the order given (the first bad one is reported);
    return ``{option: converted value}`` in the same order, e.g. for provenance."""
    return {name: check_option(name, value, rule, dataset) for name, (value, rule) in options.items()}


def by_profile(value: Any, profile: str, quick: Any, full: Any) -> Any:
    """``value`` if given, else the profile's default (options whose default is None)."""
    if value is not None:
        return value
    return quick if profile == "quick" else full
