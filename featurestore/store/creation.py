"""Making a new feature store, and checking an existing one before a writer appends to it.

A new store is built under ``<store>.partial`` and renamed into place once its arrays,
attributes and manifest exist, so a writer killed while creating it leaves no half-made
store. An existing store is opened for writing only with the config that made it (the
extractor's ``describe()`` plus the storage dtype; another one is refused, naming the
difference), and its manifest is merged: new rows are appended, known rows must point to
the same audio (file name, start, end).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import StoreError
from featurestore.manifest import Manifest, same_audio
from featurestore.store.base import Backend
from featurestore.store.reader import read_manifest
from featurestore.store.row_arrays import ROW_ARRAYS, ROW_CHUNK, growth_bytes
from featurestore.version import __version__

FORMAT_VERSION = 1
_CHUNK_BYTES = 512 * 1024


def store_fingerprint(config: dict[str, Any]) -> str:
    """Hash of the store-level config (feature description + storage dtype)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def default_chunk_frames(dim: int, dtype: str) -> int:
    """Frames per chunk so that a chunk holds about 512 KiB (a power of two in 64..8192).

    >>> default_chunk_frames(40, "float32")
    2048
    """
    frames = _CHUNK_BYTES // (dim * np.dtype(dtype).itemsize)
    return int(min(8192, max(64, 1 << (max(1, frames).bit_length() - 1))))


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"key: old in the store, new now"`` for every leaf where two nested dicts differ.

    >>> config_differences({"feature": "mfcc", "n": 40}, {"feature": "mfcc", "n": 80})
    ['n: 40 in the store, 80 now']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} in the store, {new!r} now"]


def create_store(
    path: Path,
    backend_cls: type[Backend],
    config: dict[str, Any],
    manifest: Manifest,
    *,
    dim: int,
    num_layers: int,
    frame_rate: float,
    chunk_frames: int | None,
) -> None:
    """Build an empty store under ``<store>.partial``, then rename it to ``path``.

    A marker ``<store>.partial.sermtl`` is made (exclusively) before the partial store and
    removed after the rename, so a ``.partial`` left by a killed writer is known to be ours
    and cleared, while one without the marker (the user's) is refused, untouched.

    Parameters
    ----------
    path : Path
        Where the store goes; nothing is there yet.
    backend_cls : type[Backend]
        The store format.
    config : dict[str, Any]
        ``{"feature": describe(), "dtype": name}``, saved as attributes with its fingerprint.
    manifest : Manifest
        Saved in the store; the per-row arrays get one pending row (-1) per manifest row.
    dim : int
        Values per frame.
    num_layers : int
        Layers stored per frame; ``features`` is ``(num_layers, frames, dim)``.
    frame_rate : float
        Frames per second (0 for one vector per utterance).
    chunk_frames : int or None
        Frames per chunk of ``features``; ``None``: :func:`default_chunk_frames`.
    """
    partial = path.with_name(path.name + ".partial")
    marker = partial.with_name(partial.name + ".sermtl")
    _clear_left_partial(partial, marker)
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644))
    backend = backend_cls.open(partial, writable=True, create=True)
    try:
        chunk = chunk_frames or default_chunk_frames(dim, config["dtype"])
        backend.create_array("features", (num_layers, 0, dim), config["dtype"], (1, chunk, dim))
        # The per-row arrays are made as long as the manifest (every row -1, pending), so that
        # a store whose first open is refused (a full disk) is whole as it stands.
        for name, width in ROW_ARRAYS:
            backend.create_array(name, (len(manifest), width), "int64", (ROW_CHUNK, width), fill_value=-1)[:] = -1
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
    partial.rename(path)
    marker.unlink()


def _clear_left_partial(partial: Path, marker: Path) -> None:
    """Remove a ``.partial`` store left by a writer killed while creating it (``marker`` says
    so) and the marker; refuse one that sermtl did not make."""
    if partial.exists() or partial.is_symlink():
        if marker.is_symlink() or not marker.is_file() or partial.is_symlink():
            raise StoreError(f"{partial} exists and was not made by sermtl: move it away, then run again")
        if partial.is_dir():
            shutil.rmtree(partial)
        else:
            partial.unlink()
    marker.unlink(missing_ok=True)


def check_config(backend: Backend, config: dict[str, Any]) -> None:
    """Refuse to append to a store made with another ``config`` (``{"feature", "dtype"}``),
    naming each difference."""
    attrs = backend.attrs
    stored = {"feature": attrs.get("feature"), "dtype": attrs.get("dtype")}
    diffs = config_differences(stored, config)
    if diffs:
        raise StoreError(
            f"store {backend.path} was made with another feature config ({'; '.join(diffs)}): "
            "use another --store, or delete this one"
        )


def merge_manifest(backend: Backend, manifest: Manifest) -> Manifest:
    """The store's manifest with ``manifest``'s rows merged in, saved in the store if changed.

    New rows are appended; a known row must point to the same audio, or a
    :class:`StoreError` names it. What opening adds (the manifest and the per-row arrays grown
    to its length) is reserved at once: a full disk refuses the open before the manifest is
    written, not between it and the per-row arrays.

    Parameters
    ----------
    backend : Backend
        The store, open for writing.
    manifest : Manifest
        The rows the writer is asked to extract.

    Returns
    -------
    Manifest
        The merged manifest, the store's rows first.
    """
    same = _stored_unchanged(backend, manifest)
    if same is not None:
        return same
    stored = read_manifest(backend)
    rows = {u: dict(stored[u]) for u in stored.ids()}
    for row in manifest:
        old = rows.get(row["utt_id"])
        if old is not None and not same_audio(old, row):
            raise StoreError(
                f"utterance {row['utt_id']} points to other audio than in store {backend.path} "
                f"({row['path']} [{row['start']}, {row['end']}] vs {old['path']} [{old['start']}, {old['end']}])"
            )
        rows[row["utt_id"]] = dict(row)
    merged = Manifest(rows.values(), source=str(backend.path))
    text = merged.to_json()
    changed = text != stored.to_json()
    backend.reserve(
        (len(text.encode()) if changed else 0)
        + sum(growth_bytes(backend, name, width, len(merged)) for name, width in ROW_ARRAYS)
    )
    if changed:
        backend.write_text("manifest", text)
    return merged


def _stored_unchanged(backend: Backend, manifest: Manifest) -> Manifest | None:
    """``manifest`` as the store's merged manifest when the store holds exactly it (the same
    JSON text: every row, column and order), as a resumed run finds it; else ``None``.

    Merging such a manifest changes nothing, and parsing the stored copy again (each of its
    values checked, as for any manifest) is what opening a large store would cost most.
    Only the growth of per-row arrays that older stores lack is reserved.
    """
    try:
        text = backend.read_text("manifest")
    except Exception:  # a damaged blob: read_manifest, called next, names it
        return None
    if text is None or text != manifest.to_json():
        return None
    backend.reserve(sum(growth_bytes(backend, name, width, len(manifest)) for name, width in ROW_ARRAYS))
    return as_stored(manifest, backend)


def as_stored(manifest: Manifest, backend: Backend) -> Manifest:
    """``manifest`` as the manifest of the store ``backend`` holds, which is exactly it (a
    store just made from it, or one found unchanged): its rows, named by the store."""
    same = copy.copy(manifest)  # shares the rows, which a Manifest never changes once built
    same.source = str(backend.path)
    return same
