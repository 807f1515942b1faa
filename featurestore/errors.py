"""The one exception type that the CLI turns into a one-line message."""


class SermtlError(Exception):
    """A user-facing error: bad input, a bad flag or a refused operation.

    The message is one line that names the file, utterance or flag at fault.
    """


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
    return text if len(text) <= limit else text[:limit - 2] + "…" + text[-1]
