"""Writing a feature store: open it (created or resumed), append committed batches, record skips.

Commit order, which makes a killed writer harmless:

1. the batch's frames are written after the last committed frame and flushed;
2. then the batch's ``checksum`` rows (CRC-32 of each utterance's stored bytes, for
   ``verify``) and ``index`` rows are written and flushed.

An utterance exists for readers only once its index row is written, so a crash leaves
at worst some unreferenced frames past the committed end, which the next writer
overwrites. A new store is made by :mod:`featurestore.store.creation` (under
``<store>.partial``, renamed into place once whole), which also checks an existing store's
config; damage found on opening is repaired by :mod:`featurestore.store.recovery`. One
writer at a time: a lock file beside the store (``<store>.lock``, an ``flock`` that the OS
drops when the process dies) refuses a second one at once. A failed write (disk full,
read-only store, a damaged chunk) is a one-line :class:`SermtlError`; what was committed
before stays.

``extract --repair`` moves the append point past every frame stored so far, to a chunk
boundary, and saves it in the store (attribute ``write_from``) before it forgets any entry
(clearing its index row only), so no later writer writes into a damaged chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import SermtlError, StoreError
from featurestore.locking import ExclusiveLock
from featurestore.manifest import Manifest
from featurestore.store.base import backend_for_path, check_store_path
from featurestore.store.creation import as_stored, check_config, create_store, merge_manifest
from featurestore.store.reader import FeatureStore, damaged_store_error
from featurestore.store.recovery import forget_damaged_rows
from featurestore.store.row_arrays import ROW_ARRAYS, load_rows


def frames_checksum(frames: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of a contiguous ``(frames, dim)`` block of one layer, continuing ``crc``.

    An utterance's checksum chains its layers in order, so it can be computed in one go
    at write time and block by block when ``verify`` scans the store.
    """
    return zlib.crc32(np.ascontiguousarray(frames).data, crc)


def entry_checksum(layers: np.ndarray) -> int:
    """An utterance's checksum: :func:`frames_checksum` chained over its ``(layers, frames, dim)``."""
    crc = 0
    for layer in layers:
        crc = frames_checksum(layer, crc)
    return crc


@contextlib.contextmanager
def store_io(path: Path, action: str) -> Iterator[None]:
    """Turn an ``OSError`` (disk full, read-only, permissions) into a one-line :class:`SermtlError`."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise StoreError(f"cannot {action} store {path}: {reason}; everything committed before is kept") from None


@contextlib.contextmanager
def store_write(path: Path, action: str) -> Iterator[None]:
    """:func:`store_io`, plus any other backend failure (a damaged chunk or array) as a
    one-line :class:`SermtlError` that names the store and the commands that deal with it."""
    try:
        with store_io(path, action):
            yield
    except SermtlError:
        raise
    except Exception as exc:  # zarr and h5py raise many types for damaged data
        raise damaged_store_error(path, action, exc) from None


class StoreWriter:
    """Create a store, or reopen one made with the same config, and append utterances.

    The config is what decides the features (the extractor's ``describe()`` plus the
    storage dtype); reopening with a different one is refused, naming the difference.
    The manifest is merged: new rows are appended, known rows must point to the same
    audio (file name, start, end). See :mod:`featurestore.store.creation`.

    Parameters
    ----------
    path : str or Path
        The store; its lock file goes beside it.
    manifest : Manifest
        The utterances to extract (merged into the store's manifest).
    feature : dict[str, Any]
        The extractor's ``describe()``.
    dtype : str
        Storage dtype of the features (``float32``, ``float16``, ...).
    dim : int
        Values per frame.
    num_layers : int
        Layers stored per frame; the store's ``features`` are ``(num_layers, frames, dim)``.
    frame_rate : float
        Frames per second (0 for one vector per utterance).
    format : str or None
        Backend name (``zarr``, ``hdf5``); ``None``: from the path's suffix.
    chunk_frames : int or None
        Frames per chunk of a new store; ``None``: about 512 KiB per chunk.
    """

    def __init__(
        self,
        path: str | Path,
        manifest: Manifest,
        feature: dict[str, Any],
        dtype: str,
        dim: int,
        num_layers: int,
        frame_rate: float,
        format: str | None = None,
        chunk_frames: int | None = None,
    ) -> None:
        self.path = check_store_path(path)
        self.dtype = np.dtype(dtype)
        backend_cls = backend_for_path(self.path, format)
        with store_io(self.path, "create the folder of"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = ExclusiveLock(self.path.with_name(self.path.name + ".lock"), f"store {self.path}")
        self._backend = None
        try:
            config = {"feature": feature, "dtype": self.dtype.name}
            created = not self.path.exists()
            if created:
                with store_io(self.path, "create"):
                    create_store(
                        self.path,
                        backend_cls,
                        config,
                        manifest,
                        dim=dim,
                        num_layers=num_layers,
                        frame_rate=frame_rate,
                        chunk_frames=chunk_frames,
                    )
            if not backend_cls.exists(self.path):
                raise StoreError(f"{self.path} exists but is not a {backend_cls.name} feature store")
            with store_write(self.path, "open for writing"):
                self._backend = backend_cls.open(self.path, writable=True)
                check_config(self._backend, config)
                self._features = self._backend.array("features")
                # A store made just now holds exactly ``manifest``: nothing to merge or compare.
                self.manifest = (
                    as_stored(manifest, self._backend) if created else merge_manifest(self._backend, manifest)
                )
                self._index = load_rows(self._backend, "index", 2, len(self.manifest))
                forget_damaged_rows(self._index, int(self._features.shape[1]), self.manifest, self.path)
                self._checksums = load_rows(self._backend, "checksum", 1, len(self.manifest))[:, 0]
                self._audio = load_rows(self._backend, "audio", 1, len(self.manifest))[:, 0]
                self._audio_stat = load_rows(self._backend, "audio_stat", 1, len(self.manifest))[:, 0]
                # Opened once: each lookup reads the array's metadata again (Zarr: a file).
                self._rows = {name: self._backend.array(name) for name, _ in ROW_ARRAYS}
                self._report = {r["utt_id"]: r for r in json.loads(self._backend.read_text("report") or "[]")}
                self._report_changed = False
                self._stat_rows = (len(self._audio_stat), 0)  # rows of audio_stat not saved yet: none
            self._end = max(self.committed_end(), int(self._backend.attrs.get("write_from") or 0))
        except BaseException:
            try:
                if self._backend is not None:
                    with contextlib.suppress(Exception):
                        self._backend.close()
            finally:
                self._lock.release()
            raise

    # -- state --------------------------------------------------------------------------
    def is_done(self, utt_id: str) -> bool:
        """Whether ``utt_id`` has committed features."""
        return self._index[self.manifest.position(utt_id), 1] >= 0

    def pending(self, utt_ids: Iterable[str] | None = None) -> list[str]:
        """Ids (of ``utt_ids``, default all rows) that have no features yet."""
        ids = self.manifest.ids() if utt_ids is None else utt_ids
        return [u for u in ids if not self.is_done(u)]

    def committed_end(self) -> int:
        """One past the last frame that a committed utterance uses."""
        done = self._index[:, 1] >= 0
        return int(self._index[done].sum(axis=1).max()) if done.any() else 0

    def read_view(self) -> FeatureStore:
        """The committed entries, read through this writer's open store (for checks made
        while the lock is held), with the manifest this writer merged into it (not read and
        parsed again). Closing the writer closes it; do not close it yourself."""
        return FeatureStore(self._backend, manifest=self.manifest)

    # -- writing ------------------------------------------------------------------------
    def write(
        self,
        items: Sequence[tuple[str, np.ndarray]],
        audio: Mapping[str, int] | None = None,
        audio_stat: Mapping[str, int] | None = None,
    ) -> None:
        """Append utterances' features after the committed frames and commit them.

        Items recorded as skipped since the last write (:meth:`skip`) are saved in the store's
        report at the same time, so a batch costs one report write however many it skips.

        Parameters
        ----------
        items : Sequence[tuple[str, np.ndarray]]
            ``(utt_id, features)`` pairs, features ``(layers, frames, dim)`` (cast to the
            store's dtype).
        audio : Mapping[str, int] or None
            The signature of the audio each was computed from
            (:func:`featurestore.audio.audio_signature`), where known; others are stored as -1.
        audio_stat : Mapping[str, int] or None
            The :func:`featurestore.decode.stat_key` of each one's audio file as it was signed
            (:func:`featurestore.audio.audio_identity`), where known; others are stored as -1
            (their file is then hashed when a later run checks it).
        """
        if not items:
            self._save_report_if_changed()
            return
        shape = self._features.shape
        for utt_id, feats in items:
            if feats.ndim != 3 or feats.shape[0] != shape[0] or feats.shape[2] != shape[2]:
                raise StoreError(
                    f"{utt_id}: features shaped {feats.shape}, store expects (layers={shape[0]}, frames, dim={shape[2]})"
                )
        block = np.concatenate([feats for _, feats in items], axis=1).astype(self.dtype, copy=False)
        start, stop = self._end, self._end + block.shape[1]
        with store_write(self.path, "write to"):
            chunk = int(self._features.chunks[1])
            chunk_bytes = shape[0] * chunk * shape[2] * self.dtype.itemsize
            self._backend.reserve((-(-stop // chunk) - -(-start // chunk)) * chunk_bytes)
            if shape[1] < stop:
                self._features.resize((shape[0], max(stop, int(shape[1] * 1.25)), shape[2]))
            self._features[:, start:stop] = block
            self._backend.flush()
            offset = start
            rows = []
            for utt_id, feats in items:
                row = self.manifest.position(utt_id)
                self._index[row] = (offset, feats.shape[1])
                self._checksums[row] = entry_checksum(block[:, offset - start : offset - start + feats.shape[1]])
                self._audio[row] = (audio or {}).get(utt_id, -1)
                self._audio_stat[row] = (audio_stat or {}).get(utt_id, -1)
                offset += feats.shape[1]
                rows.append(row)
            self._commit_rows(min(rows), max(rows) + 1)
            self._unsaved_stat(min(rows), max(rows) + 1)
        for utt_id, _ in items:
            if self._report.pop(utt_id, None) is not None:
                self._report_changed = True
        self._end = stop
        self._save_report_if_changed()

    def _commit_rows(self, lo: int, hi: int) -> None:
        """Write rows ``lo:hi`` of the checksums and audio signatures, then of the index (which
        makes them visible).

        The audio files' states (``audio_stat``) are saved once, by :meth:`close`: a batch's
        rows lie all over the manifest, so each per-row array written per batch costs a write
        of every chunk, and a state is only a shortcut. One lost with a killed writer leaves
        its row unknown or holding an earlier state of the file, which the file cannot be in
        again (its change time has moved on), so the file is hashed: never wrongly trusted.
        """
        self._rows["checksum"][lo:hi] = self._checksums[lo:hi, None]
        self._rows["audio"][lo:hi] = self._audio[lo:hi, None]
        self._rows["index"][lo:hi] = self._index[lo:hi]
        self._backend.flush()

    def _unsaved_stat(self, lo: int, hi: int) -> None:
        """Note that rows ``lo:hi`` of ``audio_stat`` changed in memory."""
        self._stat_rows = (min(lo, self._stat_rows[0]), max(hi, self._stat_rows[1]))

    def _save_audio_stat(self) -> None:
        """Write the ``audio_stat`` rows changed since the last save."""
        lo, hi = self._stat_rows
        if lo < hi:
            with store_write(self.path, "write to"):
                self._rows["audio_stat"][lo:hi] = self._audio_stat[lo:hi, None]
                self._backend.flush()
            self._stat_rows = (len(self._audio_stat), 0)

    def record_audio_stat(self, keys: Mapping[str, int]) -> None:
        """Record the :func:`featurestore.decode.stat_key` of committed entries' audio files
        whose signature was just found unchanged, so that the next run knows them by a ``stat``.

        Parameters
        ----------
        keys : Mapping[str, int]
            ``{utt_id: key}``; ids that are not committed are left out.
        """
        rows = []
        for utt_id, key in keys.items():
            row = self.manifest.position(utt_id)
            if self._index[row, 1] >= 0 and self._audio_stat[row] != key:
                self._audio_stat[row] = key
                rows.append(row)
        if rows:
            self._unsaved_stat(min(rows), max(rows) + 1)
            self._save_audio_stat()

    def invalidate(self, utt_ids: Sequence[str]) -> None:
        """Forget the features of ``utt_ids`` (they become pending, for ``extract --repair``).

        Their old frames stay on disk unreferenced. New frames go after every frame stored
        so far, from a chunk boundary, so a damaged chunk is never written again (nor read:
        readers read only frames that entries use); that append point is saved in the store
        (``write_from``) before any index row is cleared, so later writers keep to it even
        when they are the ones to recompute. Only index rows are cleared: their checksum rows
        keep the old values until :meth:`write` replaces them, before it writes the new index
        rows, so a kill at any point leaves no entry without its checksum.
        """
        attrs = self._backend.attrs
        chunk = int(attrs.get("chunk_frames") or 1)
        stored = max(self._end, int(self._features.shape[1]))
        floor = -(-stored // chunk) * chunk
        with store_write(self.path, "write to"):
            if attrs.get("write_from") != floor:
                self._backend.set_attrs({**attrs, "write_from": floor})
                self._backend.flush()
            self._end = floor
            if utt_ids:
                rows = sorted(self.manifest.position(u) for u in utt_ids)
                self._index[rows] = -1
                self._backend.array("index")[rows[0] : rows[-1] + 1] = self._index[rows[0] : rows[-1] + 1]
                self._backend.flush()

    def skip(self, utt_id: str, error: str) -> None:
        """Record that ``utt_id`` was skipped because of ``error`` (listed by ``info``/``verify``).

        Saved in the store by the next :meth:`write` (the end of the batch) or :meth:`close`:
        saving rewrites the report, and in Zarr the attributes that hold the manifest too, so
        saving once per skipped item would cost a corpus-sized write each. A run killed
        before then loses the record only; the item stays pending and is tried again.
        """
        self._report[utt_id] = {"utt_id": utt_id, "path": self.manifest[utt_id]["path"], "error": error}
        self._report_changed = True

    def _save_report_if_changed(self) -> None:
        if self._report_changed:
            self._save_report()

    def _save_report(self) -> None:
        with store_write(self.path, "write the report of"):
            self._backend.write_text("report", json.dumps(list(self._report.values()), ensure_ascii=False))
            self._backend.flush()
        self._report_changed = False

    def close(self) -> None:
        """Trim spare capacity, save the audio files' states and the report if they changed,
        release the store and its lock."""
        try:
            shape = self._features.shape
            with store_write(self.path, "close"):
                if shape[1] > self._end:
                    self._features.resize((shape[0], self._end, shape[2]))
            self._save_audio_stat()
            self._save_report_if_changed()
        except BaseException:
            self._release()
            raise
        try:
            with store_write(self.path, "close"):
                self._backend.close()
        finally:
            self._lock.release()

    def _release(self) -> None:
        """Close the store without writing anything more (after a failure: HDF5 would fail
        again, and a second failure inside it is what damages a file), then unlock it."""
        try:
            with contextlib.suppress(Exception):
                self._backend.close()
        finally:
            self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        self._release()  # the error in flight is the one to report
