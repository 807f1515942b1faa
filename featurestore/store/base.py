"""The storage-backend seam: a few array and metadata operations, and a registry by name.

A backend only knows how to keep named N-d arrays (growable along one axis), a JSON
attribute dict and named text blobs. Everything about utterances, the index and resume
lives once in :mod:`featurestore.store.reader` and :mod:`featurestore.store.writer`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

from featurestore.errors import ConfigError, StoreError
from featurestore.registry import Registry

#: The dtypes a store may hold its features in (``--dtype``).
STORE_DTYPES = ("float16", "float32")

#: Store formats (``--format``): name -> ``"module:class"`` of its backend, imported on first use.
BACKENDS = Registry(
    "--format",
    {"hdf5": "featurestore.store.hdf5_store:HDF5Backend", "zarr": "featurestore.store.zarr_store:ZarrBackend"},
)
#: The path suffixes that pick a format when ``--format`` is not given.
SUFFIXES = {".zarr": "zarr", ".h5": "hdf5", ".hdf5": "hdf5"}


def available_backends() -> list[str]:
    """Names of the store formats (``hdf5``, ``zarr``)."""
    return BACKENDS.names()


def get_backend(name: str) -> type[Backend]:
    """The backend class of format ``name``; another name is a one-line ``ConfigError``."""
    return BACKENDS.load(name)


def check_store_path(path: str | Path) -> Path:
    """``path`` as a store path: it must end in a name of its own (not ``.``, ``..`` or ``/``),
    beside which the store's lock and temporary files go."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ConfigError(f"--store {path}: a store needs a name of its own, e.g. cache/corpus_mfcc.zarr")
    return path


def backend_for_path(path: str | Path, format: str | None = None) -> type[Backend]:
    """Pick a backend from ``--format`` or else from the path's suffix (``.zarr``, ``.h5``/``.hdf5``)."""
    if format:
        return get_backend(format)
    suffix = Path(path).suffix.lower()
    if suffix in SUFFIXES:
        return get_backend(SUFFIXES[suffix])
    raise StoreError(
        f"cannot tell the store format of {path}: use a .zarr or .h5 suffix, or --format "
        f"({', '.join(available_backends())})"
    )


class Backend(abc.ABC):
    """One store on disk, opened read-only or for writing."""

    name: ClassVar[str]

    def __init__(self, path: Path, writable: bool) -> None:
        self.path = path
        self.writable = writable

    @classmethod
    @abc.abstractmethod
    def exists(cls, path: Path) -> bool:
        """Whether ``path`` holds a store of this backend."""

    @classmethod
    @abc.abstractmethod
    def open(cls, path: Path, writable: bool, create: bool = False) -> Backend:
        """Open (or with ``create`` make) the store at ``path``."""

    @property
    @abc.abstractmethod
    def attrs(self) -> dict[str, Any]:
        """The store's JSON attributes (a copy)."""

    @abc.abstractmethod
    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """Replace the store's attributes."""

    @abc.abstractmethod
    def has_array(self, name: str) -> bool: ...

    @abc.abstractmethod
    def create_array(
        self, name: str, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...], fill_value: Any = 0
    ) -> Any:
        """Create a growable array; the returned object supports ``[]``, ``.shape`` and ``.resize``."""

    @abc.abstractmethod
    def array(self, name: str) -> Any:
        """An existing array (same protocol as :meth:`create_array`)."""

    @abc.abstractmethod
    def read_text(self, name: str) -> str | None:
        """A text blob, or ``None`` when absent."""

    @abc.abstractmethod
    def write_text(self, name: str, text: str) -> None:
        """Replace a text blob."""

    def reserve(self, nbytes: int) -> None:
        """Make sure the next ``nbytes`` of new data fit on disk, or raise ``OSError``
        (ENOSPC) before anything is written. A no-op where a failed write leaves the store
        as it was (Zarr); HDF5 allocates the blocks."""

    def flush(self) -> None:
        """Make every write so far durable."""

    def close(self) -> None:
        """Release the store."""

    def size_on_disk(self) -> int:
        """Bytes used on disk."""
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
