"""Writing a feature store: create or resume, append committed batches, record skips.

Commit order, which makes a killed writer harmless:

1. the batch's frames are written after the last committed frame and flushed;
2. then the batch's ``checksum`` rows (CRC-32 of each utterance's stored bytes, for
   ``verify``) and ``index`` rows are written and flushed.

An utterance exists for readers only once its index row is written, so a crash leaves
at worst some unreferenced frames past the committed end, which the next writer
overwrites. A new store is built under ``<store>.partial`` and renamed into place once
its arrays, attributes and manifest exist, so a writer killed while creating it leaves
no half-made store. One writer at a time: a lock file beside the store (``<store>.lock``,
an ``flock`` that the OS drops when the process dies) refuses a second one at once.
A failed write (disk full, read-only store, a damaged chunk) is a one-line
:class:`SermtlError`; what was committed before stays.

``extract --repair`` moves the append point past every frame stored so far, to a chunk
boundary, and saves it in the store (attribute ``write_from``) before it forgets any entry
(clearing its index row only), so no later writer writes into a damaged chunk.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import SermtlError, StoreError
from featurestore.locking import ExclusiveLock
from featurestore.manifest import Manifest, same_audio
from featurestore.store.base import backend_for_path, check_store_path
from featurestore.store.reader import FeatureStore, damaged_store_error, read_manifest, read_rows, rows_inside
from featurestore.version import __version__

FORMAT_VERSION = 1
#: What a row of each per-utterance array holds, for messages.
_ROW_NAMES = {"checksum": "checksums", "audio": "audio signatures"}
_CHUNK_BYTES = 512 * 1024
_ROW_CHUNK = 65536  # rows per chunk of the per-row arrays
_ROW_ARRAYS = (("index", 2), ("checksum", 1), ("audio", 1))  # (name, width) of the per-row arrays


def store_fingerprint(config: dict[str, Any]) -> str:
    """Hash of the store-level config (feature description + storage dtype)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def default_chunk_frames(dim: int, dtype: str) -> int:
    """Frames per chunk so that a chunk holds about 512 KiB (a power of two in 64..8192)."""
    frames = _CHUNK_BYTES // (dim * np.dtype(dtype).itemsize)
    return int(min(8192, max(64, 1 << (max(1, frames).bit_length() - 1))))


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


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"key: old in the store, new now"`` for every leaf where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} in the store, {new!r} now"]


class StoreWriter:
    """Create a store, or reopen one made with the same config, and append utterances.

    ``config`` is what decides the features (the extractor's ``describe()`` plus the
    storage dtype); reopening with a different one is refused, naming the difference.
    The manifest is merged: new rows are appended, known rows must point to the same
    audio (file name, start, end).
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
            if not self.path.exists():
                with store_io(self.path, "create"):
                    self._create(backend_cls, config, manifest, dim, num_layers, frame_rate, chunk_frames)
            if not backend_cls.exists(self.path):
                raise StoreError(f"{self.path} exists but is not a {backend_cls.name} feature store")
            with store_write(self.path, "open for writing"):
                self._backend = backend_cls.open(self.path, writable=True)
                self._check_config(config)
                self._features = self._backend.array("features")
                self.manifest = self._merge_manifest(manifest)
                self._index = self._load_rows("index", 2)
                self._forget_damaged_rows()
                self._checksums = self._load_rows("checksum", 1)[:, 0]
                self._audio = self._load_rows("audio", 1)[:, 0]
                self._report = {r["utt_id"]: r for r in json.loads(self._backend.read_text("report") or "[]")}
            self._end = max(self.committed_end(), int(self._backend.attrs.get("write_from") or 0))
        except BaseException:
            try:
                if self._backend is not None:
                    with contextlib.suppress(Exception):
                        self._backend.close()
            finally:
                self._lock.release()
            raise

    # -- opening ------------------------------------------------------------------------
    def _create(self, backend_cls, config, manifest, dim, num_layers, frame_rate, chunk_frames) -> None:
        """Build the empty store under ``<store>.partial``, then rename it into place.

        A marker ``<store>.partial.sermtl`` is made (exclusively) before the partial store
        and removed after the rename, so a ``.partial`` left by a killed writer is known to
        be ours and cleared, while one without the marker (the user's) is refused, untouched.
        """
        partial = self.path.with_name(self.path.name + ".partial")
        marker = partial.with_name(partial.name + ".sermtl")
        if partial.exists() or partial.is_symlink():
            if marker.is_symlink() or not marker.is_file() or partial.is_symlink():
                raise StoreError(f"{partial} exists and was not made by sermtl: move it away, then run again")
            if partial.is_dir():
                shutil.rmtree(partial)  # left by a writer killed while creating the store
            else:
                partial.unlink()
        marker.unlink(missing_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))
        backend = backend_cls.open(partial, writable=True, create=True)
        try:
            chunk = chunk_frames or default_chunk_frames(dim, self.dtype.name)
            backend.create_array("features", (num_layers, 0, dim), self.dtype.name, (1, chunk, dim))
            # The per-row arrays are made as long as the manifest (every row -1, pending), so that
            # a store whose first open is refused (a full disk) is whole as it stands.
            for name, width in _ROW_ARRAYS:
                backend.create_array(name, (len(manifest), width), "int64", (_ROW_CHUNK, width), fill_value=-1)[:] = -1
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            backend.set_attrs(
                {
                    "format_version": FORMAT_VERSION,
                    "sermtl_version": __version__,
                    "layout": "concatenated-frames",
                    "created": now,
                    **config,
                    "fingerprint": store_fingerprint(config),
                    "dim": dim,
                    "num_layers": num_layers,
                    "frame_rate": frame_rate,
                    "chunk_frames": chunk,
                }
            )
            backend.write_text("manifest", manifest.to_json())
            backend.flush()
        finally:
            backend.close()
        partial.rename(self.path)
        marker.unlink()

    def _check_config(self, config: dict[str, Any]) -> None:
        attrs = self._backend.attrs
        stored = {"feature": attrs.get("feature"), "dtype": attrs.get("dtype")}
        diffs = config_differences(stored, config)
        if diffs:
            raise StoreError(
                f"store {self.path} was made with another feature config ({'; '.join(diffs)}): "
                "use another --store, or delete this one"
            )

    def _merge_manifest(self, manifest: Manifest) -> Manifest:
        stored = read_manifest(self._backend)
        rows = {u: dict(stored[u]) for u in stored.ids()}
        for row in manifest:
            old = rows.get(row["utt_id"])
            if old is not None and not same_audio(old, row):
                raise StoreError(
                    f"utterance {row['utt_id']} points to other audio than in store {self.path} "
                    f"({row['path']} [{row['start']}, {row['end']}] vs {old['path']} [{old['start']}, {old['end']}])"
                )
            rows[row["utt_id"]] = dict(row)
        merged = Manifest(rows.values(), source=str(self.path))
        text = merged.to_json()
        changed = text != stored.to_json()
        # What opening adds, reserved at once: a full disk refuses the open before the manifest
        # is written, not between it and the per-row arrays grown to its length.
        self._backend.reserve(
            (len(text.encode()) if changed else 0)
            + sum(self._row_bytes(name, width, len(merged)) for name, width in _ROW_ARRAYS)
        )
        if changed:
            self._backend.write_text("manifest", text)
        return merged

    def _row_bytes(self, name: str, width: int, rows: int) -> int:
        """Bytes of the chunks that growing the per-row array ``name`` to ``rows`` rows adds."""
        array = self._backend.array(name) if self._backend.has_array(name) else None
        chunk = int(array.chunks[0]) if array is not None else _ROW_CHUNK
        have = int(array.shape[0]) if array is not None else 0
        return (-(-rows // chunk) - -(-have // chunk)) * chunk * width * 8

    def _load_rows(self, name: str, width: int) -> np.ndarray:
        """A per-manifest-row array (``index``, ``checksum`` or ``audio``), grown to the
        manifest's length.

        ``checksum`` and ``audio`` are created on first use in stores written before they
        existed (their rows stay -1, unknown, for utterances committed then); their chunks
        that damage made unreadable are rewritten, their rows unknown (see
        :meth:`_reset_unreadable_chunks`).
        An unreadable ``index`` is a :class:`SermtlError`.
        """
        if not self._backend.has_array(name):
            self._backend.create_array(name, (0, width), "int64", (_ROW_CHUNK, width), fill_value=-1)
        array = self._backend.array(name)
        rows = np.full((len(self.manifest), width), -1, dtype=np.int64)
        try:
            old = read_rows(self._backend, name)
        except SermtlError:
            if name == "index":
                raise
            old = self._reset_unreadable_chunks(array)
        rows[: len(old)] = old
        if len(old) != len(rows):
            self._backend.reserve(self._row_bytes(name, width, len(rows)))
            array.resize((len(rows), width))
            array[len(old) :] = rows[len(old) :]
        self._backend.flush()
        return rows

    def _forget_damaged_rows(self) -> None:
        """Treat index rows that cannot be right (an entry of no frames, or outside the frames
        stored on disk) as not committed: they are never written at nor counted for the
        append point, and the next commit of their utterance replaces them."""
        offset, frames = self._index[:, 0], self._index[:, 1]
        stored = int(self._features.shape[1])
        damaged = (frames >= 0) & ~rows_inside(offset, frames, stored)
        if damaged.any():
            ids = self.manifest.ids()
            names = ", ".join(ids[i] for i in np.flatnonzero(damaged)[:3])
            warnings.warn(
                f"store {self.path}: {int(damaged.sum())} damaged index row(s) ({names}{', …' if damaged.sum() > 3 else ''}) "
                "point outside the stored frames; their utterances are extracted again",
                stacklevel=4,
            )
            self._index[damaged] = -1

    def _reset_unreadable_chunks(self, array: Any) -> np.ndarray:
        """The rows of a damaged per-row array, read chunk by chunk; each unreadable chunk is
        rewritten as -1 (unknown), with a warning naming the store and the rows discarded."""
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
                f"store {self.path}: {lost} of {len(rows)} {_ROW_NAMES[array.name.strip('/')]} discarded (unreadable "
                "chunks, rewritten as unknown); those entries are verified without them",
                stacklevel=4,
            )
        return rows

    # -- state --------------------------------------------------------------------------
    def is_done(self, utt_id: str) -> bool:
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
        while the lock is held). Closing the writer closes it; do not close it yourself."""
        return FeatureStore(self._backend)

    # -- writing ------------------------------------------------------------------------
    def write(self, items: Sequence[tuple[str, np.ndarray]], audio: Mapping[str, int] | None = None) -> None:
        """Append ``(utt_id, features (layers, frames, dim))`` pairs and commit them, with the
        signature of the audio each was computed from (:func:`featurestore.audio.audio_signature`)
        where ``audio`` gives one."""
        if not items:
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
                offset += feats.shape[1]
                rows.append(row)
            self._commit_rows(min(rows), max(rows) + 1)
        for utt_id, _ in items:
            self._report.pop(utt_id, None)
        self._end = stop

    def _commit_rows(self, lo: int, hi: int) -> None:
        """Write rows ``lo:hi`` of the checksums and audio signatures, then of the index (which
        makes them visible)."""
        self._backend.array("checksum")[lo:hi] = self._checksums[lo:hi, None]
        self._backend.array("audio")[lo:hi] = self._audio[lo:hi, None]
        self._backend.array("index")[lo:hi] = self._index[lo:hi]
        self._backend.flush()

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
        """Record that ``utt_id`` was skipped because of ``error`` (listed by ``info``/``verify``)."""
        self._report[utt_id] = {"utt_id": utt_id, "path": self.manifest[utt_id]["path"], "error": error}
        self._save_report()

    def _save_report(self) -> None:
        with store_write(self.path, "write the report of"):
            self._backend.write_text("report", json.dumps(list(self._report.values()), ensure_ascii=False))
            self._backend.flush()

    def close(self) -> None:
        """Trim spare capacity, save the report, release the store and its lock."""
        try:
            shape = self._features.shape
            with store_write(self.path, "close"):
                if shape[1] > self._end:
                    self._features.resize((shape[0], self._end, shape[2]))
            self._save_report()
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
