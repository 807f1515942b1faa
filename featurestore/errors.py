"""The one exception type that the CLI turns into a one-line message."""


class SermtlError(Exception):
    """A user-facing error: bad input, a bad flag or a refused operation.

    The message is one line that names the file, utterance or flag at fault.
    """
