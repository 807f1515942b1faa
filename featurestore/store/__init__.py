"""Feature stores: one interface, two backends (Zarr, the default, and HDF5).

``open_store(path)`` reads; :class:`StoreWriter` writes. Backends are listed by name
(``zarr``, ``hdf5``) in :data:`featurestore.store.base.BACKENDS` and picked by ``--format``
or the path's suffix.
"""

from featurestore.store.base import available_backends, backend_for_path, get_backend
from featurestore.store.reader import FeatureStore, open_store
from featurestore.store.writer import StoreWriter

__all__ = ["FeatureStore", "StoreWriter", "available_backends", "backend_for_path", "get_backend", "open_store"]
