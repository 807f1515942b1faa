"""Read-only access to a feature store, whatever its backend.

Layout (both backends; see docs/architecture.md):

- ``features``: one array ``(layers, total_frames, dim)`` holding every utterance's frames
  back to back, chunked ``(1, chunk_frames, dim)``;
- ``index``: ``(rows, 2)`` int64, ``(offset, frames)`` of manifest row *i*, ``(-1, -1)``
  until that utterance is committed;
- ``checksum``: ``(rows, 1)`` int64, CRC-32 of row *i*'s stored bytes, -1 when unknown;
- ``audio``, ``audio_stat``: ``(rows, 1)`` int64, the signature of row *i*'s audio file and
  the file's state when that was last checked (:mod:`featurestore.store.row_arrays`);
- text blobs ``manifest`` (the manifest as JSON) and ``report`` (skipped items);
- attributes: feature config, dtype, fingerprint, versions.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from featurestore.errors import SermtlError, StoreError, describe_error
from featurestore.manifest import Manifest
from featurestore.store.base import Backend, available_backends, backend_for_path, get_backend

T = TypeVar("T")


def find_backend(path: Path, format: str | None = None) -> type[Backend]:
    """The backend that holds the store at ``path`` (by ``format``, suffix, or by probing)."""
    if not path.exists():
        raise StoreError(f"store not found: {path}")
    candidates = [get_backend(format)] if format else [get_backend(n) for n in available_backends()]
    for backend in candidates:
        if backend.exists(path):
            return backend
    raise StoreError(f"not a feature store: {path}")


def damaged_store_error(path: Path, action: str, exc: BaseException) -> StoreError:
    """The one-line error for a backend failure on damaged data: names the store and the
    commands that deal with it."""
    return StoreError(
        f"cannot {action} store {path} ({describe_error(exc)}): it may be damaged; "
        f"run `sermtl verify {path}`, then `sermtl extract … --repair`"
    )


def rows_inside(offset: np.ndarray, frames: np.ndarray, stored: int) -> np.ndarray:
    """Which index rows ``(offset, frames)`` name a non-empty run inside the first ``stored``
    frames (written so that huge damaged values cannot overflow)."""
    return (frames > 0) & (offset >= 0) & (frames <= stored) & (offset <= stored - frames)


def _compact_spans(entries: dict[str, tuple[int, int]]) -> tuple[list[tuple[int, int]], dict[str, tuple[int, int]]]:
    """The frame ranges ``[(start, stop)]`` that ``entries`` use, sorted, adjacent and
    overlapping ones merged, and the entries' ``(offset, frames)`` in those ranges laid
    end to end."""
    spans: list[tuple[int, int]] = []
    moved: dict[str, tuple[int, int]] = {}
    base = 0  # where the last span starts once laid end to end
    for utt_id, (offset, frames) in sorted(entries.items(), key=lambda item: item[1]):
        if spans and offset <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], offset + frames))
        else:
            if spans:
                base += spans[-1][1] - spans[-1][0]
            spans.append((offset, offset + frames))
        moved[utt_id] = (base + offset - spans[-1][0], frames)
    return spans, {utt_id: moved[utt_id] for utt_id in entries}


def read_manifest(backend: Backend) -> Manifest:
    """The manifest a store holds; a one-line :class:`SermtlError` when it is absent or unreadable."""
    try:
        text = backend.read_text("manifest")
        if text is None:
            raise StoreError(f"store has no manifest: {backend.path}")
        return Manifest.from_json(text, source=str(backend.path))
    except SermtlError:
        raise
    except Exception as exc:  # a damaged blob: json, zarr and h5py raise many types
        raise StoreError(f"store manifest unreadable: {backend.path} ({describe_error(exc)})") from None


def read_rows(backend: Backend, name: str) -> np.ndarray:
    """Every row of the per-utterance array ``name`` (``index`` or ``checksum``) as int64;
    a one-line :class:`SermtlError` (``store <name> unreadable: …``) when a chunk is damaged."""
    try:
        return np.asarray(backend.array(name)[:], dtype=np.int64)
    except Exception as exc:  # a damaged chunk: zarr and h5py raise many types
        raise StoreError(f"store {name} unreadable: {backend.path} ({describe_error(exc)})") from None


class FeatureStore:
    """A read-only store: ``len``, :meth:`ids`, :meth:`read`, :attr:`manifest`, :attr:`attrs`.

    Only committed utterances are visible: a store being written, or left by a killed
    writer, reads as the utterances finished so far.
    """

    def __init__(self, backend: Backend, manifest: Manifest | None = None) -> None:
        """Read the committed entries of the store ``backend`` holds open.

        Parameters
        ----------
        backend : Backend
            The open store.
        manifest : Manifest or None
            The store's manifest, when the caller holds it already (a writer that has just
            merged it into the store: parsing it again is what opening costs most); ``None``:
            read from the store.
        """
        self._backend = backend
        self.path = backend.path
        self.attrs: dict[str, Any] = backend.attrs
        if not backend.has_array("features") or not backend.has_array("index"):
            raise StoreError(f"not a feature store (no features/index arrays): {self.path}")
        self.full_manifest = read_manifest(backend) if manifest is None else manifest
        #: Store-level damage found while opening (an unreadable ``checksum`` array), for ``verify``.
        self.problems: list[str] = []
        # The index is read before the frame array's shape and the checksums: a writer
        # stores frames and checksums before index rows, so every entry seen here is whole.
        # Rows past the end of the index (a writer appending manifest rows) are pending.
        index = read_rows(backend, "index")
        self.index_rows = len(index)
        self._features = backend.array("features")
        ids = self.full_manifest.ids()
        index = index[: len(ids)]
        rows = np.flatnonzero(index[:, 1] >= 0)
        committed = [ids[row] for row in rows.tolist()]
        self._entries: dict[str, tuple[int, int]] = dict(
            zip(committed, zip(index[rows, 0].tolist(), index[rows, 1].tolist()))
        )
        self._checksums = self._known(committed, rows, self._optional_rows("checksum"))
        self._audio = self._known(committed, rows, self._optional_rows("audio"))
        self._audio_stat = self._known(committed, rows, self._optional_rows("audio_stat"))

    @staticmethod
    def _known(ids: list[str], rows: np.ndarray, values: np.ndarray) -> dict[str, int]:
        """``{id: value}`` of the committed ``ids`` (at manifest ``rows``) whose row of a per-row
        array's column ``values`` holds a known value (not -1, and not past its end)."""
        padded = np.full(len(rows), -1, dtype=np.int64)
        inside = rows < len(values)
        padded[inside] = values[rows[inside]]
        known = np.flatnonzero(padded >= 0)
        return dict(zip([ids[i] for i in known.tolist()], padded[known].tolist()))

    @functools.cached_property
    def manifest(self) -> Manifest:
        """The manifest rows of the committed utterances, in manifest order (made when first
        asked for: ``verify`` and ``extract`` look rows up in :attr:`full_manifest`)."""
        return self.full_manifest.subset(list(self._entries))

    def _optional_rows(self, name: str) -> np.ndarray:
        """Column 0 of a per-row array that older stores lack (``checksum``, ``audio``,
        ``audio_stat``); empty
        when absent, and when unreadable (noted in :attr:`problems`: those rows are unknown)."""
        if not self._backend.has_array(name):
            return np.zeros(0, np.int64)
        try:
            return read_rows(self._backend, name)[:, 0]
        except SermtlError as exc:  # the entries stay readable; these rows are unknown
            self.problems.append(
                f"{exc}: {name} rows unknown, entries not checked against them (the next extract rewrites the array)"
            )
            return np.zeros(0, np.int64)

    # -- the public API -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def ids(self) -> list[str]:
        """Ids of the stored utterances, in manifest order."""
        return list(self._entries)

    @property
    def num_layers(self) -> int:
        return int(self._features.shape[0])

    @property
    def dim(self) -> int:
        return int(self._features.shape[2])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._features.dtype)

    @property
    def format(self) -> str:
        """Backend name (``zarr`` or ``hdf5``)."""
        return self._backend.name

    @property
    def stored_frames(self) -> int:
        """Length of the frame axis on disk (committed frames plus any uncommitted tail)."""
        return int(self._features.shape[1])

    @property
    def committed_frames(self) -> int:
        """Frames the committed utterances use (what :meth:`read_all` returns); less than
        :attr:`stored_frames` where a repair or an interrupted write left frames unused."""
        return sum(stop - start for start, stop in _compact_spans(self._entries)[0])

    def entries(self) -> dict[str, tuple[int, int]]:
        """``{utt_id: (offset, frames)}`` of every committed utterance."""
        return dict(self._entries)

    def checksums(self) -> dict[str, int]:
        """``{utt_id: CRC-32}`` of the committed utterances whose checksum the store holds
        (stores written before checksums existed hold none)."""
        return dict(self._checksums)

    def audio_signatures(self) -> dict[str, int]:
        """``{utt_id: signature}`` of the audio each committed utterance was computed from
        (:func:`featurestore.audio.audio_signature`), where the store recorded it."""
        return dict(self._audio)

    def audio_stat_keys(self) -> dict[str, int]:
        """``{utt_id: key}``: the :func:`featurestore.decode.stat_key` of each committed
        utterance's audio file when its signature was last found right, where recorded."""
        return dict(self._audio_stat)

    def read_frames(self, layer: int, start: int, stop: int) -> np.ndarray:
        """Raw frames ``start:stop`` of one layer of the concatenated frame array."""
        return np.asarray(self._features[layer, start:stop])

    def num_frames(self, utt_id: str) -> int:
        """Frames stored for ``utt_id``."""
        return self._entry(utt_id)[1]

    def read(self, utt_id: str, layer: int | None = None) -> np.ndarray:
        """Features of one utterance: ``(frames, dim)`` for a one-layer store or when ``layer``
        is given, else ``(layers, frames, dim)``."""
        offset, frames = self._entry(utt_id)
        if layer is not None:
            return np.asarray(self._features[layer, offset : offset + frames])
        block = np.asarray(self._features[:, offset : offset + frames])
        return block[0] if block.shape[0] == 1 else block

    def read_all(self, layer: int | None = None) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
        """Every committed utterance's frames at once, with ``{utt_id: (offset, frames)}`` into
        the returned block (not into the store: offsets differ where the store has gaps).

        The fast path for loading a whole corpus into memory. Only the frames that entries
        use are read (frames left unreferenced by ``extract --repair``, perhaps a damaged
        chunk, are not): one sequential read when the entries leave no gaps, else one per
        run of adjacent entries. A read that fails is a one-line :class:`SermtlError`.
        """
        spans, entries = _compact_spans(self._entries)
        if spans and (spans[0][0] < 0 or spans[-1][1] > self.stored_frames):
            raise StoreError(
                f"store {self.path} has entries outside its {self.stored_frames} stored frames: run `sermtl verify {self.path}`"
            )
        layers = slice(None) if layer is None else layer
        total = sum(stop - start for start, stop in spans)
        try:
            if len(spans) == 1:
                block = np.asarray(self._features[layers, spans[0][0] : spans[0][1]])
            else:
                shape = (total, self.dim) if layer is not None else (self.num_layers, total, self.dim)
                block = np.empty(shape, self.dtype)
                at = 0
                for start, stop in spans:
                    block[..., at : at + stop - start, :] = self._features[layers, start:stop]
                    at += stop - start
        except Exception as exc:  # a damaged chunk: zarr and h5py raise many types
            raise damaged_store_error(self.path, "read the frames of", exc) from None
        if layer is None and block.shape[0] == 1:
            block = block[0]
        return block, entries

    def pending_ids(self) -> list[str]:
        """Manifest rows that have no features yet."""
        return [u for u in self.full_manifest.ids() if u not in self._entries]

    def skipped(self) -> list[dict[str, Any]]:
        """Items that extraction skipped (``--on-error skip``), with their error."""
        try:
            text = self._backend.read_text("report")
            return json.loads(text) if text else []
        except Exception as exc:  # a damaged blob: json and h5py raise many types
            raise StoreError(f"store report unreadable: {self.path} ({describe_error(exc)})") from None

    def size_on_disk(self) -> int:
        """Bytes the store takes on disk."""
        return self._backend.size_on_disk()

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, utterances={len(self)}, layers={self.num_layers}, dim={self.dim})"

    # -- internals ----------------------------------------------------------------------
    def _entry(self, utt_id: str) -> tuple[int, int]:
        try:
            return self._entries[utt_id]
        except KeyError:
            raise KeyError(f"no utterance {utt_id!r} in store {self.path}") from None


def _with_backend(path: Path, format: str | None, use: Callable[[Backend], T], keep_open: bool) -> T:
    """``use`` of the store at ``path`` opened read-only (format from ``format``, suffix or
    contents); the backend is closed afterwards, or only if ``use`` fails with ``keep_open``
    (``use`` then owns it). Damaged metadata is one :class:`StoreError` line."""
    try:
        opened = find_backend(path, format).open(path, writable=False)
        try:
            result = use(opened)
        except BaseException:
            with contextlib.suppress(Exception):
                opened.close()
            raise
        if not keep_open:
            opened.close()
        return result
    except SermtlError:
        raise
    except Exception as exc:  # damaged metadata: zarr and h5py raise many types
        raise damaged_store_error(path, "open", exc) from None


def open_store(path: str | Path, format: str | None = None) -> FeatureStore:
    """Open the feature store at ``path`` read-only (format from ``format``, suffix or contents)."""
    return _with_backend(Path(path), format, FeatureStore, keep_open=True)


def stored_attrs(path: str | Path, format: str | None = None) -> dict[str, Any]:
    """The attributes of the store at ``path`` (its feature, dims, frame rate), read without
    parsing its manifest (the store is closed again)."""
    return _with_backend(Path(path), format, lambda backend: dict(backend.attrs), keep_open=False)


def stored_manifest(path: str | Path, format: str | None = None) -> Manifest:
    """The manifest of the stored utterances of the store at ``path`` (the store is closed again)."""
    with open_store(path, format) as store:
        return store.manifest


__all__ = [
    "FeatureStore",
    "open_store",
    "stored_attrs",
    "stored_manifest",
    "backend_for_path",
    "damaged_store_error",
    "describe_error",
    "read_manifest",
    "read_rows",
    "rows_inside",
]
