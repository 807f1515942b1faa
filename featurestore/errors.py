"""sermtl's errors: :class:`SermtlError`, which the CLI turns into one line, and its
subclasses by domain, so a library caller can tell a bad config from a damaged store
without reading the message.

>>> issubclass(StoreError, SermtlError)
True
>>> raise unknown_choice("--protocol", "lso", ("loso", "kfold"))
Traceback (most recent call last):
...
featurestore.errors.ConfigError: --protocol: 'lso' is not one of loso, kfold (nearest: loso)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SermtlError(Exception):
    """A user-facing error: bad input, a bad flag or a refused operation.

    The message is one line that names the file, utterance or flag at fault.
    """


class ConfigError(SermtlError):
    """A flag, option, config file, grid or preset with a value that is not allowed."""


class CorpusError(SermtlError):
    """A corpus folder, recipe option, importer input (datasets, lhotse, EmoBox) or manifest that cannot be used."""


class AudioError(SermtlError):
    """Audio that cannot be read, or is outside the limits (rate, length, samples)."""


class StoreError(SermtlError):
    """A feature store that is missing, damaged, locked, of another feature config, or cannot be written."""


class ModelError(SermtlError):
    """A checkpoint, model folder, pretrained model or export that cannot be used or written."""


class RunError(SermtlError):
    """A run directory, one of its files, fold lists or results that cannot be used or written."""


def nearest(value: object, choices: Iterable[str]) -> str:
    """``" (nearest: NAME)"`` naming the choice closest to ``value``, or ``""`` when none is close.

    >>> nearest("utterence", ["global", "utterance", "speaker"])
    ' (nearest: utterance)'
    """
    found = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" (nearest: {found[0]})" if found else ""


def unknown_choice(
    what: str, value: object, choices: Iterable[str], error: type[SermtlError] = ConfigError
) -> SermtlError:
    """The error for ``value`` of ``what`` (a flag, a key) that is none of ``choices``: one
    line listing them and the nearest, to raise."""
    choices = list(choices)
    return error(f"{what}: {quote(value)} is not one of {', '.join(choices)}{nearest(value, choices)}")


def describe_error(exc: BaseException) -> str:
    """``"Type: first line of the message"``, to quote another library's exception in one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


#: The most characters of a value an error line quotes.
QUOTE_LIMIT = 200


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error lines about values of any size.

    Bounded work whatever the value: containers are shown to a depth of 3 and their first 8
    items (:mod:`reprlib`), so a value a YAML alias bomb expands to is never rendered whole.

    >>> quote("angry")
    "'angry'"
    >>> quote("x" * 1000, limit=12)
    "'xxx...xxxx'"
    >>> quote([[1, 2]] * 10**6)
    '[[1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1, 2], ...]'
    """
    import reprlib

    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxtuple, shown.maxdict, shown.maxset = 3, 8, 8, 8, 8
    shown.maxstring, shown.maxother, shown.maxlong = limit, limit, limit
    text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 2] + "…" + text[-1]
