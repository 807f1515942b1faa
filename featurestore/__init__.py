"""featurestore: corpus manifests, audio loading, feature extraction and feature stores.

The public entry point for reading a cache is :func:`open_store`::

    >>> from featurestore import open_store          # doctest: +SKIP
    >>> store = open_store("cache/iemocap_w2v2.zarr")  # doctest: +SKIP
    >>> store.read(store.ids()[0]).shape              # doctest: +SKIP
    (231, 1024)
"""

from featurestore.errors import SermtlError
from featurestore.manifest import Manifest
from featurestore.store import open_store
from featurestore.version import __version__

__all__ = ["Manifest", "SermtlError", "open_store", "__version__"]
