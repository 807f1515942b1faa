"""Registries: names a user types (``--corpus iemocap``, ``--feature w2v2``, an experiment)
mapped to ``"module:attribute"``, imported only when the name is used, so the command line
lists every name without importing torch, transformers or a corpus's readers.

>>> MATH = Registry("--function", {"sqrt": "math:sqrt", "floor": "math:floor"})
>>> MATH.names(), "sqrt" in MATH, MATH.load("sqrt")(9.0)
(['sqrt', 'floor'], True, 3.0)
>>> MATH.load("sqr")
Traceback (most recent call last):
...
featurestore.errors.ConfigError: --function: 'sqr' is not one of sqrt, floor (nearest: sqrt)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

from featurestore.errors import unknown_choice


def import_attribute(entry: str) -> Any:
    """The object that ``"module:attribute"`` names, its module imported now."""
    module, attribute = entry.split(":")
    return getattr(importlib.import_module(module), attribute)


class Registry:
    """Names (in declaration order) of things found on first use; ``flag`` names the
    choice in the one-line error for a name that is not registered. Entries are
    ``"module:attribute"`` texts, imported by :meth:`load`, unless ``find`` says how an
    entry becomes the thing (e.g. ``Path`` for files found by name).

    >>> Registry("--unit", {"ms": 0.001, "s": 1.0}, find=lambda value: value).load("ms")
    0.001
    """

    def __init__(self, flag: str, entries: dict[str, Any], find: Callable[[Any], Any] = import_attribute) -> None:
        self.flag = flag
        self._entries = dict(entries)
        self._find = find

    def names(self) -> list[str]:
        """The registered names, in declaration order."""
        return list(self._entries)

    def load(self, name: str) -> Any:
        """The object registered as ``name``; a :class:`~featurestore.errors.ConfigError`
        naming the choices and the nearest one for another name."""
        if name not in self._entries:
            raise unknown_choice(self.flag, name, self._entries)
        return self._find(self._entries[name])

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
