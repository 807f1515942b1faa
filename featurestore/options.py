"""Declared options: each option a user can set is one dataclass field made with
:func:`option`, holding its default, help text and allowed values (:class:`Spec`), checked
when the dataclass is built (:func:`check_fields`) and turned into its command-line flag
by the CLI. :class:`trainer.config.TrainConfig` and :class:`trainer.protocols.Protocol` are
declared this way. Torch-free.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Example:
...     folds: int = option(5, "Number of folds.", low=2)
...     def __post_init__(self) -> None:
...         check_fields(self)
>>> Example(folds=1)
Traceback (most recent call last):
...
featurestore.errors.ConfigError: --folds must be in [2, inf), got 1
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from featurestore.errors import ConfigError, quote, unknown_choice


def flag(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a field allows: ``choices``, or numeric bounds (``low``/``high``, inclusive unless
    ``open_low``/``open_high``), or a ``check`` that returns an error text for a bad value;
    ``multiple_of`` for sizes the network needs divisible. On the command line: ``flag``
    when it is not ``--<field name>``, ``parse`` turning the flag's text into the value
    (e.g. a comma list), ``show_default=False`` where the help says what the default
    depends on, and ``cli=False`` for an option that has no flag. A ``bool`` field is an
    on/off flag, a ``tuple[str, ...]`` field a repeatable one; ``path`` (``"file"``,
    ``"dir"`` or ``"any"``) makes the flag a non-empty path (``exists``: one that exists);
    ``metavar``, ``short`` (e.g. ``"-q"``) and ``required`` shape the flag only."""

    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    multiple_of: int | None = None
    check: Callable[[Any], str | None] | None = None
    flag: str | None = None
    parse: Callable[[str], Any] | None = None
    cli: bool = True
    show_default: bool = True
    path: str | None = None
    exists: bool = False
    metavar: str | None = None
    short: str | None = None
    required: bool = False

    def describe(self) -> str:
        """The allowed values in words (for error messages and ``--help``)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        low = "(-inf" if self.low is None else f"{'(' if self.open_low else '['}{_number(self.low)}"
        high = "inf)" if self.high is None else f"{_number(self.high)}{')' if self.open_high else ']'}"
        return f"in {low}, {high}" + (f", a multiple of {self.multiple_of}" if self.multiple_of else "")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def option(default: Any, help: str, **spec: Any) -> Any:
    """A config field with its :class:`Spec`."""
    return dataclasses.field(default=default, metadata={"spec": Spec(help, **spec)})


def field_flag(field: dataclasses.Field) -> str:
    """The flag of a declared field: its :class:`Spec`'s ``flag``, else ``--<field name>``."""
    return field.metadata["spec"].flag or flag(field.name)


def declared(cls: type) -> list[tuple[dataclasses.Field, Spec]]:
    """The declared fields of dataclass ``cls`` (those made with :func:`option`) and their specs."""
    return [(field, field.metadata["spec"]) for field in dataclasses.fields(cls) if "spec" in field.metadata]


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]`` (a flag's list of values).

    >>> comma_list("Session1, Session2,")
    ['Session1', 'Session2']
    """
    return [value.strip() for value in text.split(",") if value.strip()]


def key_values(pairs: Sequence[str], flag: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` flag values → a dict (one line naming ``flag`` for a bad one).

    >>> key_values(["iemocap=/data/IEMOCAP", "baum1 = /data/BAUM1"], "--root")
    {'iemocap': '/data/IEMOCAP', 'baum1': '/data/BAUM1'}
    """
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {quote(pair)}")
        parsed[key.strip()] = value.strip()
    return parsed


def kind(field: dataclasses.Field) -> tuple[type | None, bool]:
    """The plain type of a declared field (``int``, ``float``, ``str``, ``bool``, ``tuple``
    or ``None`` for others) and whether ``None`` is allowed (``float | None``)."""
    parts = [part.strip() for part in str(field.type).split("|")]
    optional = "None" in parts
    names = [part for part in parts if part != "None"]
    plain = {"int": int, "float": float, "str": str, "bool": bool}
    if len(names) == 1 and names[0].startswith("tuple["):
        return tuple, optional
    return (plain.get(names[0]) if len(names) == 1 else None), optional


def values_of(cls: type, values: dict[str, Any]) -> Any:
    """An instance of declaration ``cls`` from the values of its fields in ``values`` (other
    keys ignored: e.g. every parameter of a command)."""
    return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls) if field.name in values})


def check_fields(config: Any) -> None:
    """Check every declared field of a config dataclass (nested configs check themselves)."""
    for field in dataclasses.fields(config):
        if "spec" in field.metadata:
            check_field(field, getattr(config, field.name))


def check_field(field: dataclasses.Field, value: Any) -> None:
    """One :class:`~featurestore.errors.ConfigError` line naming the field's flag unless
    ``value`` has the field's type and its :class:`Spec` allows it."""
    spec: Spec = field.metadata["spec"]
    name = field_flag(field)
    plain, optional = kind(field)
    if value is None and optional:
        return
    if plain is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {quote(value)}")
    if plain is tuple and (not isinstance(value, tuple) or not all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{name}: expected a list of texts, got {quote(value)}")
    if plain is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name}: expected an integer, got {quote(value)}")
    if plain is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {quote(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {quote(value)}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"{name}: {problem}")
        return
    if plain is str and not isinstance(value, str):
        raise ConfigError(f"{name}: expected text, got {quote(value)}")
    if spec.choices is not None:
        for item in value if plain is tuple else (value,):  # a repeatable option: each value given
            if item not in spec.choices:
                raise unknown_choice(name, item, spec.choices)
    if (
        spec.low is not None
        and (value < spec.low or (spec.open_low and value == spec.low))
        or spec.high is not None
        and (value > spec.high or (spec.open_high and value == spec.high))
        or spec.multiple_of
        and value % spec.multiple_of
    ):
        raise ConfigError(f"{name} must be {spec.describe()}, got {quote(value)}")


def check_value(cls: type, name: str, value: Any) -> None:
    """Check ``value`` against the declaration of field ``name`` of ``cls`` (for a library
    function that takes the option as a plain argument).

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Example:
    ...     workers: int = option(2, "Threads.", low=1)
    >>> check_value(Example, "workers", 0)
    Traceback (most recent call last):
    ...
    featurestore.errors.ConfigError: --workers must be in [1, inf), got 0
    """
    check_field(next(f for f in dataclasses.fields(cls) if f.name == name), value)
