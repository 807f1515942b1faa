"""Progress for long work: a tqdm bar on a terminal, plain lines in a log, nothing when quiet.

On a terminal :func:`progress_bar` is tqdm as usual. When standard error is not a terminal
(a log file, a pipe, a batch job) the same bar is written as whole lines, at most one every
:data:`LOG_INTERVAL_S` seconds, without carriage returns or cursor codes, so a log stays
readable and small. ``TQDM_DISABLE=1`` (tqdm's own switch) or ``enabled=False`` (``--quiet``)
turns bars off; :func:`note` lines (one per finished fold) still follow ``enabled``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import Any

#: Seconds between two lines of a bar written to a log.
LOG_INTERVAL_S = 30.0
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")


def bars_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no bars (any value but empty, 0 or false)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def _on_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


class _LogLines:
    """A file for tqdm that turns each refresh into one plain line on standard error."""

    def write(self, text: str) -> None:
        line = _CONTROL.sub("", text).strip()
        if line:
            sys.stderr.write(line + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress_bar(
    iterable: Iterable | None = None, *, enabled: bool = True, position: int = 0, leave: bool = True, **options: Any
):
    """A tqdm bar over ``iterable`` (or for manual ``update``), as the module docstring says."""
    from tqdm import tqdm

    disable = not enabled or bars_disabled()
    if disable or _on_terminal():
        return tqdm(iterable, disable=disable, position=position, leave=leave, **options)
    return tqdm(
        iterable,
        file=_LogLines(),
        mininterval=LOG_INTERVAL_S,
        maxinterval=LOG_INTERVAL_S,
        ascii=True,
        dynamic_ncols=False,
        ncols=100,
        leave=True,
        **options,
    )


def note(line: str, enabled: bool = True) -> None:
    """One line on standard error, between (not through) any bars on the screen."""
    if enabled:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)
