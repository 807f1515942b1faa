"""Declared shapes of the data sermtl reads back from files, checked in one pass.

Every file a user can hand back to sermtl (a run's JSON files, SVM results, ``--paper``,
grids, checkpoints' metadata) is plain data of a fixed shape. Each shape is declared once
from these parts, and :func:`check` walks the data against it before anything uses it:
a wrong type, a missing key, a number that is not finite or out of its range, a list
longer than its cap, or lists whose lengths must agree is one :class:`SermtlError` line
naming the file and the key (``results.json: folds[2].uwa: expected a number in [0, 100],
got 1e+308``), quoting at most :data:`~featurestore.errors.QUOTE_LIMIT` characters of
the value. The walk does bounded work: it follows the shape, which is finite, and stops at
the first problem.

>>> METRIC = Record({"uwa": Number(0, 100), "labels": ListOf(Text(), max_items=3)})
>>> check({"uwa": 61.5, "labels": ["sad"]}, METRIC, "metrics.json")
{'uwa': 61.5, 'labels': ['sad']}
>>> check({"uwa": float("nan"), "labels": []}, METRIC, "metrics.json")
Traceback (most recent call last):
...
featurestore.errors.SermtlError: metrics.json: uwa: expected a finite number in [0, 100], got nan
>>> check({"labels": ["a", "b", "c", "d"], "uwa": 1}, METRIC, "metrics.json")
Traceback (most recent call last):
...
featurestore.errors.SermtlError: metrics.json: labels: expected at most 3 items, got 4
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from featurestore.errors import SermtlError, quote


class Shape:
    """A declared shape; ``optional`` shapes also take ``None`` (and a missing key)."""

    optional: bool = False

    def describe(self) -> str:
        raise NotImplementedError

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        """``(where, what is wrong)`` for the first problem of ``value``, or ``None``."""
        raise NotImplementedError


def _at(where: str, key: Any) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else str(key))


def _expected(shape: Shape, value: Any, where: str) -> tuple[str, str]:
    return where, f"expected {shape.describe()}, got {quote(value)}"


@dataclasses.dataclass(frozen=True)
class Anything(Shape):
    """Any JSON value (checked elsewhere, e.g. by :class:`trainer.config.TrainConfig`)."""

    optional: bool = True

    def describe(self) -> str:
        return "anything"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        return None


@dataclasses.dataclass(frozen=True)
class Number(Shape):
    """A finite int or float (not a bool) in ``[low, high]``; ``integer`` asks for an int."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    optional: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.low is None and self.high is None:
            return kind
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in [{low}, {high}]"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if value is None and self.optional:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (self.integer and not isinstance(value, int))
        ):
            return _expected(self, value, where)
        if (
            not math.isfinite(value)
            or (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
        ):
            return _expected(self, value, where)
        return None


@dataclasses.dataclass(frozen=True)
class Text(Shape):
    """A string of at most ``max_length`` characters, one of ``choices`` when given."""

    max_length: int = 4096
    choices: tuple[str, ...] | None = None
    optional: bool = False

    def describe(self) -> str:
        return f"one of {', '.join(self.choices)}" if self.choices else f"text of at most {self.max_length} characters"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or len(value) > self.max_length or (self.choices and value not in self.choices):
            return _expected(self, value, where)
        return None


@dataclasses.dataclass(frozen=True)
class ListOf(Shape):
    """A list of ``item`` with ``min_items`` to ``max_items`` entries."""

    item: Shape
    max_items: int = 10**7
    min_items: int = 0
    optional: bool = False

    def describe(self) -> str:
        return f"a list ({self.item.describe()} each)"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, list):
            return _expected(self, value, where)
        if len(value) > self.max_items:
            return where, f"expected at most {self.max_items} items, got {len(value)}"
        if len(value) < self.min_items:
            return where, f"expected at least {self.min_items} item(s), got {len(value)}"
        for index, item in enumerate(value):
            found = self.item.problem(item, _at(where, index))
            if found:
                return found
        return None


@dataclasses.dataclass(frozen=True)
class MapOf(Shape):
    """A mapping of text keys to ``value`` with at most ``max_items`` entries."""

    value: Shape
    max_items: int = 10**6
    optional: bool = False

    def describe(self) -> str:
        return "a mapping" if isinstance(self.value, Anything) else f"a mapping of names to {self.value.describe()}"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, dict):
            return _expected(self, value, where)
        if len(value) > self.max_items:
            return where, f"expected at most {self.max_items} entries, got {len(value)}"
        for key, item in value.items():
            if not isinstance(key, str):
                return where, f"keys must be text, got {quote(key)}"
            found = self.value.problem(item, _at(where, key))
            if found:
                return found
        return None


@dataclasses.dataclass(frozen=True)
class Record(Shape):
    """A mapping with the declared ``fields`` (a missing field is a problem unless its
    shape is optional); other keys are allowed unless ``closed``. ``rules`` check what
    one field cannot: each takes the mapping and returns ``(key, problem)`` or ``None``
    (e.g. a confusion matrix as long as the label list)."""

    fields: Mapping[str, Shape]
    closed: bool = False
    rules: tuple[Callable[[dict], tuple[str, str] | None], ...] = ()
    optional: bool = False

    def describe(self) -> str:
        return "a mapping with " + ", ".join(self.fields) if self.fields else "a mapping"

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, dict):
            return _expected(self, value, where)
        for name, shape in self.fields.items():
            if name not in value:
                if shape.optional:
                    continue
                return _at(where, name), "missing"
            found = shape.problem(value[name], _at(where, name))
            if found:
                return found
        if self.closed:
            extra = next((key for key in value if key not in self.fields), None)
            if extra is not None:
                return where, f"unknown key {quote(extra)}"
        for rule in self.rules:
            found = rule(value)
            if found:
                return _at(where, found[0]), found[1]
        return None


@dataclasses.dataclass(frozen=True)
class OneOf(Shape):
    """A value of any of ``shapes``."""

    shapes: tuple[Shape, ...]
    optional: bool = False

    def describe(self) -> str:
        return " or ".join(shape.describe() for shape in self.shapes)

    def problem(self, value: Any, where: str) -> tuple[str, str] | None:
        if value is None and self.optional:
            return None
        if any(shape.problem(value, where) is None for shape in self.shapes):
            return None
        return _expected(self, value, where)


def maybe(shape: Shape) -> Shape:
    """``shape`` that also takes ``None`` or a missing key."""
    return dataclasses.replace(shape, optional=True)


def check(value: Any, shape: Shape, name: str, error: type[SermtlError] = SermtlError) -> Any:
    """``value`` itself when it has ``shape``; else one line naming ``name`` (the file), the
    key and what was expected, as an ``error`` (a :class:`SermtlError` of the file's domain)."""
    found = shape.problem(value, "")
    if found:
        where, what = found
        raise error(f"{name}: {where + ': ' if where else ''}{what}")
    return value
