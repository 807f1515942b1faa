"""Writing a file so that readers see the old file or the whole new one, never half of it,
and so that nothing planted beside it (a symbolic or hard link) is written through.

Every file the project writes (manifests, folds, run files, checkpoints, reports, plots)
goes through :func:`atomic_write`: the new content goes to a temporary file that is
*created* here, exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``, a unique random name
beside the target), and is renamed onto the target when the block ends. A rename replaces
a link at the target by the file itself; it never writes to what the link points to.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from featurestore.errors import SermtlError, describe_error

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """An open file (``mode`` ``"w"`` or ``"wb"``) whose content replaces ``path`` when the
    block ends without an error; on an error the temporary file is removed and ``path`` is
    left as it was.

    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(target) as handle:
    ...     _ = handle.write("done")
    >>> target.read_text()
    'done'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        # mkstemp opens with O_CREAT | O_EXCL (and O_NOFOLLOW where the OS has it): a name
        # that exists, link or not, is never opened; a fresh random one is tried instead.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise SermtlError(f"cannot write {path}: {os.strerror(exc.errno) if exc.errno else exc}") from None
    tmp = Path(tmp_name)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the usual umask-based mode
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if path.is_dir() and not path.is_symlink():
            raise SermtlError(f"cannot write {path}: it is a directory")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SermtlError(f"cannot write {path}: {os.strerror(exc.errno) if exc.errno else exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as strict JSON (no ``NaN``/``Infinity``: non-finite numbers become
    ``null``), atomically."""
    return write_text(path, json.dumps(finite_json(data), indent=indent, ensure_ascii=False) + "\n")


def finite_json(value: Any) -> Any:
    """``value`` with every non-finite number replaced by ``None`` and numpy scalars made
    plain Python numbers, so that it serialises as strict JSON."""
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # numpy scalars (np.float32, np.int64, np.bool_) as Python values
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return value


def read_json(path: str | os.PathLike, expect: type = dict) -> Any:
    """A JSON file the project wrote, parsed as data and checked to be an ``expect`` (a dict
    by default); one-line :class:`SermtlError` naming the file when it is unreadable,
    damaged or of another shape."""
    from featurestore.textfile import read_file_bytes

    path = Path(path)
    raw = read_file_bytes(path, str(path))
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise SermtlError(
            f"{path} is damaged (not valid JSON: {describe_error(exc)}); delete it or use another folder"
        ) from None
    if not isinstance(data, expect):
        raise SermtlError(f"{path} is damaged (holds a {type(data).__name__}, expected a {expect.__name__})")
    return data
