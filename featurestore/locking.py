"""One writer at a time: an exclusive lock on a file beside what is written (a store, a
run directory).

The lock is an OS lock (``flock``; ``msvcrt.locking`` on Windows) that the OS drops when
the process dies, so a killed writer never leaves a stale lock. The lock file is opened
without following links (``O_NOFOLLOW``), must be a regular file with a single name, and
is never truncated: a link planted at its name, or a file of the user's that happens to
have it, is refused, never written through. The holder's pid is written into the first
bytes so that a refused second writer can name it.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

from featurestore.errors import StoreError

_PID_FIELD = 16  # bytes: the pid, space-padded, then a newline
_LOCK_CONTENT = re.compile(rb"^[0-9 ]*\n?$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; ``False`` when another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class ExclusiveLock:
    """Hold ``path`` as the lock of ``what`` (e.g. ``"store cache/x.zarr"``), or raise a
    one-line :class:`SermtlError` when another process holds it or ``path`` is not a lock
    file this project could have made."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        except OSError as exc:
            if self.path.is_symlink():
                raise StoreError(f"{self.path} is a symbolic link, not a lock file of {what}: remove it") from None
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StoreError(f"cannot lock {what}: cannot open {self.path}: {reason}") from None
        try:
            self._check_own_file(what)
            if not _try_lock(self._fd):
                holder = os.pread(self._fd, _PID_FIELD, 0).decode(errors="replace").strip() or "?"
                raise StoreError(f"{what} is being written by another process (pid {holder}); wait for it to finish")
            with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, unnamed
                os.pwrite(self._fd, f"{os.getpid():<{_PID_FIELD - 1}}\n".encode(), 0)
        except BaseException:
            os.close(self._fd)
            raise

    def _check_own_file(self, what: str) -> None:
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise StoreError(f"{self.path} is not a lock file of {what} (a link or a special file): remove it")
        if info.st_size > _PID_FIELD or not _LOCK_CONTENT.match(os.pread(self._fd, _PID_FIELD + 1, 0)):
            raise StoreError(f"{self.path} is not a lock file of {what} (it holds other data): move it away")

    def release(self) -> None:
        """Let another writer in (the file stays; it is reused, never truncated)."""
        os.close(self._fd)

    def __enter__(self) -> ExclusiveLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
