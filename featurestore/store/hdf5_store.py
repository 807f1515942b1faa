"""HDF5 backend: one ``.h5`` file, opened with h5py.

Faster random reads than Zarr, but HDF5 allows one writer at a time and a process killed
in the middle of a write can leave the file's internal metadata inconsistent; the writer
flushes after every commit to keep that window short. Prefer Zarr for long extractions
that may be interrupted (see docs/architecture.md and docs/reliability.md).

Files are created with the HDF5 1.8 file format (superblock version 2). The 1.10+ format
keeps a "file is open for writing" flag in the superblock that a killed writer never
clears, after which the file refuses every open until ``h5clear -s`` is run on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import SermtlError
from featurestore.store.base import Backend, register_backend

_ATTRS = "sermtl_attrs"
_BLOB_GROUP = "blobs"


@register_backend
class HDF5Backend(Backend):
    name = "hdf5"
    suffixes = (".h5", ".hdf5")

    def __init__(self, path: Path, writable: bool, handle: Any) -> None:
        super().__init__(path, writable)
        self._file = handle

    @classmethod
    def exists(cls, path: Path) -> bool:
        import h5py

        return path.is_file() and h5py.is_hdf5(str(path))

    @classmethod
    def open(cls, path: Path, writable: bool, create: bool = False) -> "HDF5Backend":
        import h5py

        mode = "w-" if create else ("r+" if writable else "r")
        # Created files stay at the 1.8 format (no open-for-writing flag a killed writer would leave set).
        libver = ("earliest", "v108") if create else None
        try:
            handle = h5py.File(str(path), mode, libver=libver, locking=writable)
        except Exception as exc:
            raise SermtlError(f"cannot open HDF5 store {path}: {type(exc).__name__}: {exc}") from None
        return cls(path, writable, handle)

    @property
    def attrs(self) -> dict[str, Any]:
        text = self._file.attrs.get(_ATTRS)
        return json.loads(text) if text else {}

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self._file.attrs[_ATTRS] = json.dumps(attrs)

    def has_array(self, name: str) -> bool:
        return name in self._file

    def create_array(self, name, shape, dtype, chunks, fill_value=0):
        maxshape = tuple(None for _ in shape)
        return self._file.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, maxshape=maxshape, fillvalue=fill_value)

    def array(self, name: str) -> Any:
        return self._file[name]

    def read_text(self, name: str) -> str | None:
        key = f"{_BLOB_GROUP}/{name}"
        if key not in self._file:
            return None
        return self._file[key][()].tobytes().decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        key = f"{_BLOB_GROUP}/{name}"
        if key in self._file:
            del self._file[key]
        self._file.create_dataset(key, data=np.frombuffer(text.encode("utf-8"), dtype=np.uint8))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
