"""Damage a writer finds when it opens a store, and how it gets past it.

The commit order of :mod:`featurestore.store.writer` keeps a killed writer harmless, but an
interrupted write inside a backend, a damaged disk or a torn copy can leave index rows that
point outside the stored frames, or per-row chunks that cannot be read. Opening for writing
repairs both, with a warning naming the store: such index rows are forgotten (their
utterances become pending and are extracted again), and unreadable chunks of ``checksum``
``audio`` or ``audio_stat`` are rewritten as unknown (-1).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.manifest import Manifest
from featurestore.store.reader import rows_inside

#: What a row of each repairable per-row array holds, for messages.
_ROW_NAMES = {"checksum": "checksums", "audio": "audio signatures", "audio_stat": "audio file states"}


def forget_damaged_rows(index: np.ndarray, stored_frames: int, manifest: Manifest, path: Path) -> None:
    """Mark index rows that cannot be right (an entry of no frames, or outside the frames
    stored on disk) as not committed, in place, with a warning.

    They are then never written at nor counted for the append point, and the next commit of
    their utterance replaces them.

    Parameters
    ----------
    index : np.ndarray
        ``(rows, 2)`` int64 ``(offset, frames)`` per manifest row, -1 where pending; damaged
        rows are set to -1.
    stored_frames : int
        Frames in the store's ``features`` array.
    manifest : Manifest
        The store's manifest, whose rows ``index`` follows (to name the damaged rows).
    path : Path
        The store, for the warning.
    """
    offset, frames = index[:, 0], index[:, 1]
    damaged = (frames >= 0) & ~rows_inside(offset, frames, stored_frames)
    if damaged.any():
        ids = manifest.ids()
        names = ", ".join(ids[i] for i in np.flatnonzero(damaged)[:3])
        warnings.warn(
            f"store {path}: {int(damaged.sum())} damaged index row(s) ({names}{', …' if damaged.sum() > 3 else ''}) "
            "point outside the stored frames; their utterances are extracted again",
            stacklevel=4,  # past StoreWriter.__init__ and the code that opened it, to that code's caller
        )
        index[damaged] = -1


def reset_unreadable_chunks(array: Any, path: Path) -> np.ndarray:
    """The rows of a damaged per-row array (``checksum``, ``audio`` or ``audio_stat``), read chunk by chunk;
    each unreadable chunk is rewritten as -1 (unknown), with a warning naming the store and
    the rows discarded.

    Parameters
    ----------
    array : Any
        The backend's array, open for writing.
    path : Path
        The store, for the warning.

    Returns
    -------
    np.ndarray
        ``array.shape`` int64: the readable rows, -1 in the chunks that were not.
    """
    rows = np.full(array.shape, -1, dtype=np.int64)
    step = int(array.chunks[0])
    lost = 0
    for lo in range(0, len(rows), step):
        hi = min(lo + step, len(rows))
        try:
            rows[lo:hi] = array[lo:hi]
        except Exception:  # a damaged chunk: zarr and h5py raise many types
            array[lo:hi] = rows[lo:hi]
            lost += hi - lo
    if lost:
        warnings.warn(
            f"store {path}: {lost} of {len(rows)} {_ROW_NAMES[array.name.strip('/')]} discarded (unreadable "
            "chunks, rewritten as unknown); those entries are verified without them",
            stacklevel=4,  # past load_rows and StoreWriter.__init__, to the code that opened the writer
        )
    return rows
