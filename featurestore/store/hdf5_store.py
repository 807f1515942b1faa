"""HDF5 backend: one ``.h5`` file, opened with h5py.

Faster random reads than Zarr, but HDF5 allows one writer at a time and a process killed
in the middle of a write can leave the file's internal metadata inconsistent; the writer
flushes after every commit to keep that window short. Prefer Zarr for long extractions
that may be interrupted (see docs/architecture.md and docs/reliability.md).

Files are created with the HDF5 1.8 file format (superblock version 2). The 1.10+ format
keeps a "file is open for writing" flag in the superblock that a killed writer never
clears, after which the file refuses every open until ``h5clear -s`` is run on it.

A full disk must never reach HDF5: a write that fails inside the library leaves its caches
in a state that no flush or close recovers from (the file's metadata ends up pointing past
its end, and the library crashes closing it at exit). So a new store is built in memory and
written out in one piece, a writer keeps no chunk cache, and before anything is added the
writer reserves the disk blocks it will take (:meth:`HDF5Backend.reserve`): a full disk
fails there, before HDF5 has written anything, and the store stays as it was.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import StoreError, describe_error
from featurestore.store.base import Backend

_ATTRS = "sermtl_attrs"
_BLOB_GROUP = "blobs"
#: Bytes reserved on top of each estimate, for HDF5's own metadata (object headers, B-tree
#: nodes; measured at most 4 KiB per commit).
_METADATA_MARGIN = 64 * 1024


class HDF5Backend(Backend):
    name = "hdf5"

    def __init__(self, path: Path, writable: bool, handle: Any, image: io.BytesIO | None = None) -> None:
        super().__init__(path, writable)
        self._file = handle
        self._image = image  # a store being created: built in memory, written out by close()
        self._holes_filled = False

    @classmethod
    def exists(cls, path: Path) -> bool:
        import h5py

        return path.is_file() and h5py.is_hdf5(str(path))

    @classmethod
    def open(cls, path: Path, writable: bool, create: bool = False) -> HDF5Backend:
        import h5py

        if create:
            # Built in memory, so that no write inside HDF5 can meet a full disk; close()
            # writes it out. Created files stay at the 1.8 format (no open-for-writing flag
            # a killed writer would leave set).
            image = io.BytesIO()
            return cls(path, True, h5py.File(image, "w", libver=("earliest", "v108")), image)
        try:
            # A writer keeps no chunk cache: each chunk is written by the call that changes it,
            # so a failed write leaves nothing behind for a flush or close to retry.
            cache = {"rdcc_nbytes": 0} if writable else {}
            handle = h5py.File(str(path), "r+" if writable else "r", locking=writable, **cache)
        except Exception as exc:
            raise StoreError(f"cannot open HDF5 store {path}: {describe_error(exc)}") from None
        return cls(path, writable, handle)

    def reserve(self, nbytes: int) -> None:
        """Allocate disk blocks for ``nbytes`` more (plus room for HDF5's metadata) past the
        file's end, where HDF5 puts what it adds, so that a full disk fails here (``OSError``
        ENOSPC) before HDF5 writes anything. The first call also allocates any hole in the
        file (left by an earlier failed write). Space reserved and not used is given back
        when the next writer closes the store."""
        if self._image is not None:
            return
        end = int(self._file.id.get_filesize()) + nbytes + _METADATA_MARGIN
        start = 0 if not self._holes_filled else end - nbytes - _METADATA_MARGIN
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, start, end - start)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            info = os.statvfs(self.path)  # no fallocate here: check the free space instead
            if info.f_bavail * info.f_frsize < end - start:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
        finally:
            os.close(fd)
        self._holes_filled = True

    @property
    def attrs(self) -> dict[str, Any]:
        text = self._file.attrs.get(_ATTRS)
        return json.loads(text) if text else {}

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        text = json.dumps(attrs)
        self.reserve(len(text))
        self._file.attrs[_ATTRS] = text

    def has_array(self, name: str) -> bool:
        return name in self._file

    def create_array(self, name, shape, dtype, chunks, fill_value=0):
        maxshape = tuple(None for _ in shape)
        self.reserve(0)
        return self._file.create_dataset(
            name, shape=shape, dtype=dtype, chunks=chunks, maxshape=maxshape, fillvalue=fill_value
        )

    def array(self, name: str) -> Any:
        return self._file[name]

    def read_text(self, name: str) -> str | None:
        key = f"{_BLOB_GROUP}/{name}"
        if key not in self._file:
            return None
        return self._file[key][()].tobytes().decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        key = f"{_BLOB_GROUP}/{name}"
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        self.reserve(data.nbytes)
        if key in self._file:
            del self._file[key]
        self._file.create_dataset(key, data=data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self._image is not None:  # a new store: written out in one piece, or not at all
            image, self._image = self._image.getbuffer(), None
            try:
                with open(self.path, "xb") as out:
                    out.write(image)
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
