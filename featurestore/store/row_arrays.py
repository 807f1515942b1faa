"""The per-manifest-row arrays of a store: ``index``, ``checksum``, ``audio`` and ``audio_stat``.

Row ``i`` of each belongs to the manifest's row ``i``: ``index`` holds ``(offset, frames)`` of
the utterance's run in ``features``, ``checksum`` its CRC-32 (for ``verify``), ``audio``
the signature of the audio file it was computed from and ``audio_stat`` the
:func:`~featurestore.decode.stat_key` of that file when its signature was last checked (so
that an unchanged file is known by one ``stat``). ``-1`` means pending or unknown. Each is
int64, grown to the manifest's length when a writer opens the store; stores written before
an array existed get it, all unknown, from their next writer.
"""

from __future__ import annotations

import numpy as np

from featurestore.errors import SermtlError
from featurestore.store.base import Backend
from featurestore.store.reader import read_rows
from featurestore.store.recovery import reset_unreadable_chunks

#: Rows per chunk of the per-row arrays.
ROW_CHUNK = 65536
#: ``(name, width)`` of each per-row array.
ROW_ARRAYS = (("index", 2), ("checksum", 1), ("audio", 1), ("audio_stat", 1))


def growth_bytes(backend: Backend, name: str, width: int, rows: int) -> int:
    """Bytes of the chunks that growing the per-row array ``name`` to ``rows`` rows adds.

    Parameters
    ----------
    backend : Backend
        The store, open for writing.
    name : str
        One of :data:`ROW_ARRAYS`; an array the store lacks counts from 0 rows.
    width : int
        Columns of the array (see :data:`ROW_ARRAYS`).
    rows : int
        The length it grows to.

    Returns
    -------
    int
        Bytes of the whole new chunks (8 per int64 value).
    """
    array = backend.array(name) if backend.has_array(name) else None
    chunk = int(array.chunks[0]) if array is not None else ROW_CHUNK
    have = int(array.shape[0]) if array is not None else 0
    return (-(-rows // chunk) - -(-have // chunk)) * chunk * width * 8


def load_rows(backend: Backend, name: str, width: int, rows: int) -> np.ndarray:
    """The per-row array ``name``, grown (on disk too) to ``rows`` rows.

    ``checksum``, ``audio`` and ``audio_stat`` are created on first use in stores written
    before they existed (their rows stay -1, unknown, for utterances committed then); their chunks that
    damage made unreadable are rewritten, their rows unknown
    (:func:`~featurestore.store.recovery.reset_unreadable_chunks`). An unreadable ``index``
    is a :class:`SermtlError`.

    Parameters
    ----------
    backend : Backend
        The store, open for writing.
    name : str
        One of :data:`ROW_ARRAYS`.
    width : int
        Columns of the array (see :data:`ROW_ARRAYS`).
    rows : int
        The manifest's length.

    Returns
    -------
    np.ndarray
        ``(rows, width)`` int64; rows past the stored ones are -1.
    """
    if not backend.has_array(name):
        backend.create_array(name, (0, width), "int64", (ROW_CHUNK, width), fill_value=-1)
    array = backend.array(name)
    loaded = np.full((rows, width), -1, dtype=np.int64)
    try:
        old = read_rows(backend, name)
    except SermtlError:
        if name == "index":
            raise
        old = reset_unreadable_chunks(array, backend.path)
    loaded[: len(old)] = old
    if len(old) != len(loaded):
        backend.reserve(growth_bytes(backend, name, width, len(loaded)))
        array.resize((len(loaded), width))
        array[len(old) :] = loaded[len(old) :]
    backend.flush()
    return loaded
