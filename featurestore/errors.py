"""The one exception type that the CLI turns into a one-line message."""


class SermtlError(Exception):
    """A user-facing error: bad input, a bad flag or a refused operation.

    The message is one line that names the file, utterance or flag at fault.
    """


def describe_error(exc: BaseException) -> str:
    """``"Type: first line of the message"``, to quote another library's exception in one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
