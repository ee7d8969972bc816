"""One validation vocabulary for every config and every grouping check (STYLE: scikit-learn).

A config declares what each field accepts, in the spirit of scikit-learn's
``_parameter_constraints``::

    CONSTRAINTS = {"steps": POSITIVE_INT, "batch_size": Nullable(POSITIVE_INT),
                   "merge": Options(("average", "best", "first"))}

and :func:`check_fields` checks them in the dict's order (so the first bad field is the one
reported). Every failure has one wording, ``invalid {name}={value!r}: {name} must be {what}``,
where ``what`` is the constraint's description: the message names the field, the value and
what is allowed, and ``selective-sharing config`` reads the same words back as "allowed values".
A constraint is a small frozen object whose :meth:`~Constraint.problem` returns None when a value
is accepted, else the description of what the value must be.

Pure: imports the standard library and numpy only, so core.grouping (numpy/scipy/scikit-learn
only, as tests/test_layers.py checks) and core.config can both use it.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field, the value and the fix."""


def is_int(value: object) -> bool:
    """Python or numpy integers (values read back from NetCDF attributes are numpy), not bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    """Python or numpy real numbers (integers included), not bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def invalid(
    name: str, value: object, allowed: str, error: type[ValueError] = ConfigError
) -> ValueError:
    """The one error wording: ``invalid name=value: name must be allowed`` (returned, to raise).

    Cross-field checks that no single constraint can express (``warmup_steps`` smaller than
    ``train.steps``) raise this too, so every message has the same shape.
    """
    return error(f"invalid {name}={value!r}: {name} must be {allowed}")


class Constraint(ABC):
    """What one field accepts. Subclasses say why a value fails in :meth:`problem`."""

    @abstractmethod
    def problem(self, value: Any) -> str | None:
        """None if ``value`` is accepted, else what it must be (the message's ``must be ...``)."""

    @property
    @abstractmethod
    def description(self) -> str:
        """What the field accepts, in the words of the error message."""


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Interval(Constraint):
    """An integer (``kind=int``) or real number (``kind=float``) between ``low`` and ``high``.

    ``None`` for a bound means unbounded; ``closed`` is ``"both"``, ``"left"``, ``"right"`` or
    ``"neither"``. NaN is never accepted (it fails every comparison). ``text`` replaces the
    generated description where a field's message says more (``"a learning rate in (0, 10)"``).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    text: str | None = None

    def problem(self, value: Any) -> str | None:
        ok = is_int(value) if self.kind is int else is_real(value)
        if ok and self.low is not None:
            ok = value >= self.low if self.closed in ("both", "left") else value > self.low
        if ok and self.high is not None:
            ok = value <= self.high if self.closed in ("both", "right") else value < self.high
        return None if ok else self.description

    @property
    def description(self) -> str:
        if self.text is not None:
            return self.text
        noun = "integer" if self.kind is int else "float"
        if self.high is None and self.low is not None and self.closed in ("both", "left"):
            if self.low == 0:
                return f"a non-negative {noun}"
            if self.low == 1 and self.kind is int:
                return "a positive integer"
            return f"{'an' if self.kind is int else 'a'} {noun} >= {_bound(self.low)}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else _bound(self.low)
        high = "inf" if self.high is None else _bound(self.high)
        return f"in {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options(Constraint):
    """One of a set of values, listed in the message as ``one of [...]``.

    ``allowed`` is a tuple, or a function returning the current list where the set is a live
    registry (user-registered strategies and distances join it after import).
    """

    allowed: tuple[Any, ...] | Callable[[], Iterable[Any]]

    def choices(self) -> list[Any]:
        """The accepted values now, in the order the message lists them."""
        return list(self.allowed() if callable(self.allowed) else self.allowed)

    def problem(self, value: Any) -> str | None:
        return None if value in self.choices() else self.description

    @property
    def description(self) -> str:
        return f"one of {self.choices()}"


@dataclass(frozen=True)
class Names(Constraint):
    """A collection of names, each one of ``allowed`` (a function, for live registries).

    Like the check it replaced, it iterates the value as given: a value that is not iterable
    raises TypeError rather than failing the constraint.
    """

    allowed: Callable[[], Iterable[str]]

    def problem(self, value: Any) -> str | None:
        names = list(self.allowed())
        return None if all(name in names for name in value) else self.description

    @property
    def description(self) -> str:
        return f"a tuple of names from {list(self.allowed())}"


@dataclass(frozen=True)
class PositiveInts(Constraint):
    """A tuple of positive integers, such as layer widths (the empty tuple is accepted).

    ``falsy_ok``: any false value (``None``, ``[]``) passes too, meaning "no layers" (the MLP
    trunk's hidden widths, where ``[]`` given from Python has always worked).
    """

    falsy_ok: bool = False

    def problem(self, value: Any) -> str | None:
        if self.falsy_ok and not value:
            return None
        ok = isinstance(value, tuple) and all(is_int(v) and v >= 1 for v in value)
        return None if ok else self.description

    @property
    def description(self) -> str:
        return "a tuple of positive integers, e.g. (64, 32)"


@dataclass(frozen=True)
class Satisfies(Constraint):
    """A value ``test`` accepts; ``text`` says what that is (``"a path to a weights file"``).

    For the checks that are one predicate (a string matching a pattern, a non-empty tuple).
    """

    test: Callable[[Any], bool]
    text: str

    def problem(self, value: Any) -> str | None:
        return None if self.test(value) else self.text

    @property
    def description(self) -> str:
        return self.text


@dataclass(frozen=True)
class Nullable(Constraint):
    """None, or a value ``inner`` accepts.

    ``named=True`` says so in the message (``"None or a positive integer"``: the grouping fields,
    where None is a documented choice). Without it the message names ``inner`` only (the run
    sections' fields, where None means "not set"; ``selective-sharing config`` adds ``, or null``
    for them, the ``--set`` spelling).
    """

    inner: Constraint
    named: bool = False

    def problem(self, value: Any) -> str | None:
        found = None if value is None else self.inner.problem(value)
        return f"None or {found}" if found is not None and self.named else found

    @property
    def description(self) -> str:
        return f"None or {self.inner.description}" if self.named else self.inner.description


@dataclass(frozen=True)
class AllOf(Constraint):
    """Every one of ``parts``, checked in order; a failure names the first that fails."""

    parts: tuple[Constraint, ...]

    def problem(self, value: Any) -> str | None:
        for part in self.parts:
            found = part.problem(value)
            if found is not None:
                return found
        return None

    @property
    def description(self) -> str:
        return self.parts[0].description


POSITIVE_INT = Interval(int, 1)
NON_NEGATIVE_INT = Interval(int, 0)
NON_NEGATIVE_FLOAT = Interval(float, 0)


def check(
    name: str, value: Any, constraint: Constraint, *, error: type[ValueError] = ConfigError
) -> None:
    """Raise ``error`` (:class:`ConfigError` unless a plain function argument asks for
    ValueError) with the one wording if ``constraint`` rejects ``value``."""
    found = constraint.problem(value)
    if found is not None:
        raise invalid(name, value, found, error)


def check_fields(obj: object, constraints: Mapping[str, Constraint]) -> None:
    """Check every field of ``obj`` named in ``constraints``, in the mapping's order."""
    for name, constraint in constraints.items():
        check(name, getattr(obj, name), constraint)


__all__ = [
    "NON_NEGATIVE_FLOAT",
    "NON_NEGATIVE_INT",
    "POSITIVE_INT",
    "AllOf",
    "ConfigError",
    "Constraint",
    "Interval",
    "Names",
    "Nullable",
    "Options",
    "PositiveInts",
    "Satisfies",
    "check",
    "check_fields",
    "invalid",
    "is_int",
    "is_real",
]
