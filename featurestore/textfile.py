"""Reading a small text file a user hands over (a config, a grid, fold lists, a corpus's
metadata) without trusting what the path is.

A path may name a FIFO (reading it blocks forever), a device such as ``/dev/zero`` (reading
it never ends) or a file of gigabytes; a JSON or YAML text may nest deeper than Python's
recursion limit. :func:`read_text_file` opens without blocking, reads only regular files
and at most :data:`MAX_TEXT_BYTES`, and :func:`parse_json` / :func:`parse_yaml` turn every
parser failure, the recursion error included, into one line naming the file.
:func:`iter_lines` / :func:`iter_jsonl` read a large line-based file (a manifest of JSON
lines, gzip-compressed or not) a line at a time, with a cap on each line and on the total,
so that a small compressed file expanding to one huge line is refused before it is held.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from featurestore.errors import SermtlError, describe_error, quote

#: The largest metadata file read (fold lists and corpus jsonl of a million utterances fit).
MAX_TEXT_BYTES = 512 * 2**20
#: The longest line :func:`iter_lines` returns (one manifest item; real ones are < 10 KiB).
MAX_LINE_BYTES = 2**20
_GZIP_MAGIC = b"\x1f\x8b"


def _open_regular(path: str | os.PathLike, name: str) -> tuple[int, os.stat_result]:
    """A read-only descriptor of ``path`` (opened without blocking) and its ``fstat``; one line
    naming ``name`` when it cannot be opened or is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise SermtlError(f"{name}: cannot open it ({os.strerror(exc.errno) if exc.errno else exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SermtlError(f"{name}: not a regular file (a folder, pipe or device); give a file")
    return fd, info


def read_file_bytes(path: str | os.PathLike, name: str, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path``; ``name`` starts every error line (e.g.
    ``"--grid-file g.yaml"``). Refuses, in one line, a path that is missing, not a regular
    file (a folder, FIFO or device) or larger than ``max_bytes`` (default
    :data:`MAX_TEXT_BYTES`)."""
    max_bytes = MAX_TEXT_BYTES if max_bytes is None else max_bytes
    fd, info = _open_regular(path, name)
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > max_bytes:
            raise SermtlError(
                f"{name}: {info.st_size / 2**20:.0f} MiB is more than the {max_bytes / 2**20:.0f} MiB "
                "such a file may hold"
            )
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


def iter_lines(
    path: str | os.PathLike, name: str, max_line_bytes: int = MAX_LINE_BYTES, max_bytes: int | None = None
) -> Iterator[tuple[int, str]]:
    """``(line number, text without its line end)`` for each line of the regular file ``path``,
    read a line at a time; a file starting with gzip's magic bytes is decompressed as it is read.

    Memory stays bounded whatever the file holds: a line longer than ``max_line_bytes``, or more
    than ``max_bytes`` (default :data:`MAX_TEXT_BYTES`) in all once decompressed, is refused
    when reached. Every refusal is one line starting with ``name``: a path that is missing or
    not a regular file (as :func:`read_file_bytes`), a line too long or not UTF-8 (naming the
    line), damaged gzip data, too much text.
    """
    max_bytes = MAX_TEXT_BYTES if max_bytes is None else max_bytes
    fd, _ = _open_regular(path, name)
    with os.fdopen(fd, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        total = 0
        for number in itertools.count(1):
            try:
                line = stream.readline(max_line_bytes + 1)
            except (OSError, EOFError, zlib.error) as exc:
                raise SermtlError(
                    f"{name}: damaged or truncated gzip data near line {number} ({describe_error(exc)})"
                ) from None
            if not line:
                return
            total += len(line)
            if total > max_bytes:
                raise SermtlError(f"{name}: more than the {_size(max_bytes)} of text such a file may hold")
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                raise SermtlError(f"{name}, line {number}: longer than the {_size(max_line_bytes)} a line may hold")
            try:
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SermtlError(f"{name}, line {number}: not UTF-8 text (byte {exc.start})") from None
            yield number, text.rstrip("\r\n")


def _size(count: int) -> str:
    """``"1 MiB"``, or ``"100 bytes"`` below a MiB."""
    return f"{count / 2**20:g} MiB" if count >= 2**20 else f"{count} bytes"


def iter_jsonl(
    path: str | os.PathLike, name: str, max_line_bytes: int = MAX_LINE_BYTES, max_bytes: int | None = None
) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSON-lines file (``.jsonl`` or
    ``.jsonl.gz``), read with :func:`iter_lines`; a line that is not JSON is one line naming
    ``name`` and the line."""
    for number, text in iter_lines(path, name, max_line_bytes, max_bytes):
        if text.strip():
            yield number, parse_json(text, f"{name}, line {number}")


def parse_json(text: str, name: str) -> Any:
    """``text`` parsed as JSON; one line naming ``name`` when it is not (nesting too deep included)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SermtlError(f"{name}: not valid JSON ({describe_error(exc)})") from None


#: The most nodes YAML aliases may add when expanded (``*name`` repeats the node anchored ``&name``).
MAX_YAML_ALIAS_NODES = 10_000


def _strict_yaml_loader():
    """A safe YAML loader that refuses duplicate keys and bounds what aliases expand to."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._weights: dict[int, int] = {}  # id(node) → nodes it stands for, aliases expanded
            self._added = 0

        def compose_node(self, parent, index):
            alias = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
            if alias:  # the anchored node again: everything under it counts once more
                self._added += self._weights.get(id(node), 1)
                if self._added > MAX_YAML_ALIAS_NODES:
                    raise yaml.YAMLError(
                        f"aliases expand to more than {MAX_YAML_ALIAS_NODES} nodes "
                        f"(line {node.start_mark.line + 1}); write the values out"
                    )
                return node
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [n for pair in node.value for n in pair]
                if isinstance(node, yaml.MappingNode)
                else []
            )
            self._weights[id(node)] = 1 + sum(self._weights.get(id(child), 1) for child in children)
            return node

        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise yaml.YAMLError(
                            f"key {quote(key)} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1})"
                        )
                    seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return StrictLoader


def parse_yaml(text: str, name: str) -> Any:
    """``text`` parsed as YAML (safe types only); one line naming ``name`` when it is not,
    when a mapping gives a key twice, or when aliases expand to more than
    :data:`MAX_YAML_ALIAS_NODES` nodes (a "billion laughs" file)."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_yaml_loader())  # noqa: S506 -- a SafeLoader subclass
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise SermtlError(f"{name}: not valid YAML ({describe_error(exc)})") from None


def read_structured_file(path: str | os.PathLike, name: str) -> Any:
    """A JSON (``.json``) or YAML file's data, read with :func:`read_text_file`."""
    text = read_text_file(path, name)
    return parse_json(text, name) if Path(path).suffix.lower() == ".json" else parse_yaml(text, name)
