"""Feature stores: one interface, two backends (Zarr, the default, and HDF5).

``open_store(path)`` reads; :class:`StoreWriter` writes. Backends register themselves
by name (``zarr``, ``hdf5``) and are picked by ``--format`` or the path's suffix.
"""

from featurestore.store import hdf5_store, zarr_store  # noqa: F401  (registers the backends)
from featurestore.store.base import available_backends, backend_for_path, get_backend
from featurestore.store.reader import FeatureStore, open_store
from featurestore.store.writer import StoreWriter

__all__ = ["FeatureStore", "StoreWriter", "available_backends", "backend_for_path", "get_backend", "open_store"]
