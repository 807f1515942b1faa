"""Zarr v3 backend (the default): a directory store, one file per chunk.

Zarr's local store writes every chunk and metadata file atomically (temporary file, then
rename), so a killed writer leaves each file either old or new, never torn; the
index-after-data commit order in :mod:`featurestore.store.writer` builds on that.
Text blobs live in the group attributes (``zarr.json``), written the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurestore.errors import StoreError
from featurestore.store.base import Backend

_BLOBS = "sermtl_blobs"


class ZarrBackend(Backend):
    name = "zarr"

    def __init__(self, path: Path, writable: bool, group: Any) -> None:
        super().__init__(path, writable)
        self._group = group

    @classmethod
    def exists(cls, path: Path) -> bool:
        return (path / "zarr.json").is_file()

    @classmethod
    def open(cls, path: Path, writable: bool, create: bool = False) -> ZarrBackend:
        import zarr

        try:
            if create:
                group = zarr.open_group(str(path), mode="w-", zarr_format=3)
            else:
                group = zarr.open_group(str(path), mode="r+" if writable else "r", zarr_format=3)
        except Exception as exc:
            raise StoreError(f"cannot open zarr store {path}: {type(exc).__name__}: {exc}") from None
        return cls(path, writable, group)

    @property
    def attrs(self) -> dict[str, Any]:
        attrs = dict(self._group.attrs)
        attrs.pop(_BLOBS, None)
        return attrs

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        blobs = self._group.attrs.get(_BLOBS, {})
        self._group.attrs.put({**attrs, _BLOBS: blobs})

    def has_array(self, name: str) -> bool:
        return name in self._group

    def create_array(self, name, shape, dtype, chunks, fill_value=0):
        return self._group.create_array(
            name, shape=shape, dtype=dtype, chunks=chunks, fill_value=fill_value, compressors=None
        )

    def array(self, name: str) -> Any:
        return self._group[name]

    def read_text(self, name: str) -> str | None:
        return self._group.attrs.get(_BLOBS, {}).get(name)

    def write_text(self, name: str, text: str) -> None:
        blobs = dict(self._group.attrs.get(_BLOBS, {}))
        blobs[name] = text
        self._group.attrs.update({_BLOBS: blobs})
