"""Reading a small text file a user hands over (a config, a grid, fold lists, a corpus's
metadata) without trusting what the path is.

A path may name a FIFO (reading it blocks forever), a device such as ``/dev/zero`` (reading
it never ends) or a file of gigabytes; a JSON or YAML text may nest deeper than Python's
recursion limit. :func:`read_text_file` opens without blocking, reads only regular files
and at most :data:`MAX_TEXT_BYTES`, and :func:`parse_json` / :func:`parse_yaml` turn every
parser failure, the recursion error included, into one line naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from featurestore.errors import SermtlError, describe_error

#: The largest metadata file read (fold lists and corpus jsonl of a million utterances fit).
MAX_TEXT_BYTES = 512 * 2**20


def read_file_bytes(path: str | os.PathLike, name: str, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path``; ``name`` starts every error line (e.g.
    ``"--grid-file g.yaml"``). Refuses, in one line, a path that is missing, not a regular
    file (a folder, FIFO or device) or larger than ``max_bytes`` (default
    :data:`MAX_TEXT_BYTES`)."""
    max_bytes = MAX_TEXT_BYTES if max_bytes is None else max_bytes
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise SermtlError(f"{name}: cannot open it ({os.strerror(exc.errno) if exc.errno else exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SermtlError(f"{name}: not a regular file (a folder, pipe or device); give a file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > max_bytes:
            raise SermtlError(f"{name}: {info.st_size / 2**20:.0f} MiB is more than the {max_bytes / 2**20:.0f} MiB "
                              "such a file may hold")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise SermtlError(f"{name}: more than the {max_bytes / 2**20:.0f} MiB such a file may hold")
    return data


def read_text_file(path: str | os.PathLike, name: str, max_bytes: int | None = None) -> str:
    """The UTF-8 text of ``path``, read with :func:`read_file_bytes`; not UTF-8 is one line too."""
    data = read_file_bytes(path, name, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SermtlError(f"{name}: not UTF-8 text (byte {exc.start})") from None


def parse_json(text: str, name: str) -> Any:
    """``text`` parsed as JSON; one line naming ``name`` when it is not (nesting too deep included)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SermtlError(f"{name}: not valid JSON ({describe_error(exc)})") from None


def parse_yaml(text: str, name: str) -> Any:
    """``text`` parsed as YAML (safe types only); one line naming ``name`` when it is not."""
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise SermtlError(f"{name}: not valid YAML ({describe_error(exc)})") from None


def read_structured_file(path: str | os.PathLike, name: str) -> Any:
    """A JSON (``.json``) or YAML file's data, read with :func:`read_text_file`."""
    text = read_text_file(path, name)
    return parse_json(text, name) if Path(path).suffix.lower() == ".json" else parse_yaml(text, name)
