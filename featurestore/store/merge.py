"""Combining stores without recomputing: copy selected utterances into a new store.

Used for cross-corpus settings (acted utterances of one corpus with spontaneous ones of
another): the sources must share one feature config (same fingerprint), and the copy
goes through :class:`~featurestore.store.writer.StoreWriter`, so it is resumable and
refuses to append to a store of another config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import StoreError, describe_error
from featurestore.manifest import Manifest
from featurestore.store.reader import FeatureStore, open_store
from featurestore.store.writer import StoreWriter, entry_checksum

Selector = Callable[[dict[str, Any]], bool]


def where(**conditions: Sequence[str] | str) -> Selector:
    """A row selector: every named column's value is one of the given values.

    >>> where(expression="acted", emotion=["angry", "sad"])({"expression": "acted", "emotion": "sad"})
    True
    """
    wanted = {k: {v} if isinstance(v, str) else set(v) for k, v in conditions.items()}
    return lambda row: all(row.get(k) in values for k, values in wanted.items())


def merge_stores(
    sources: Sequence[tuple[str | Path, Selector | None]], out: str | Path, format: str | None = None, batch: int = 256
) -> Path:
    """Copy the rows each selector picks from each source store into the store ``out``.

    Raises :class:`SermtlError` when the sources differ in feature config or dtype, or
    two sources hold the same utterance id.
    """
    with contextlib.ExitStack() as stack:
        opened = [(stack.enter_context(open_store(path)), select) for path, select in sources]
        if not opened:
            raise StoreError("merge: no source stores")
        first = opened[0][0]
        for store, _ in opened[1:]:
            if store.attrs.get("fingerprint") != first.attrs.get("fingerprint"):
                raise StoreError(f"merge: {store.path} and {first.path} hold different features (fingerprints differ)")
        picked: list[tuple[Any, list[str]]] = []
        rows: list[dict[str, Any]] = []
        for store, select in opened:
            ids = [u for u in store.ids() if select is None or select(store.manifest[u])]
            picked.append((store, ids))
            rows += [dict(store.manifest[u]) for u in ids]
        if not rows:
            raise StoreError("merge: the selection holds no utterance")
        manifest = Manifest(rows, source=f"merge of {', '.join(str(s.path) for s, _ in opened)}")
        attrs = first.attrs
        with StoreWriter(
            out,
            manifest,
            attrs["feature"],
            attrs["dtype"],
            dim=first.dim,
            num_layers=first.num_layers,
            frame_rate=attrs.get("frame_rate") or 0.0,
            format=format,
        ) as writer:
            holder = {u: store for store, ids in picked for u in ids}
            copy_entries(writer, holder, writer.pending(list(holder)), batch)
    return Path(out)


def copy_entries(
    writer: StoreWriter,
    holder: Mapping[str, FeatureStore],
    ids: Sequence[str],
    batch: int = 256,
    *,
    on_unusable: Callable[[str, str], None] | None = None,
) -> int:
    """Copy the features of ``ids``, each read from the store ``holder[id]``, into ``writer``
    in the order given, committing ``batch`` utterances at a time; returns how many were copied.

    Each entry is read and checked against its source's stored checksum first (entries of
    unknown checksum are copied as they read). One that does not read or no longer matches
    is refused with a one-line :class:`SermtlError` naming the store and the utterance (the
    batches committed before stay), or, with ``on_unusable``, passed to it as
    ``(utt_id, reason)`` and left out.
    """
    checksums = {store: store.checksums() for store in set(holder.values())}
    audio = {
        u: s for store in set(holder.values()) for u, s in store.audio_signatures().items() if holder.get(u) is store
    }
    copied = 0
    for start in range(0, len(ids), batch):
        items = []
        for utt_id in ids[start : start + batch]:
            store = holder[utt_id]
            layers, reason = _checked_entry(store, utt_id, checksums[store].get(utt_id))
            if layers is not None:
                items.append((utt_id, layers))
            elif on_unusable is None:
                raise StoreError(
                    f"store {store.path}: utterance {utt_id} {reason}; not copied: run `sermtl verify` on that store"
                )
            else:
                on_unusable(utt_id, reason)
        writer.write(items, audio)
        copied += len(items)
    return copied


def _checked_entry(store: FeatureStore, utt_id: str, checksum: int | None) -> tuple[np.ndarray | None, str]:
    """``((layers, frames, dim), "")`` of ``utt_id`` in ``store``, or ``(None, reason)`` when its
    frames do not read (a damaged chunk) or do not match ``checksum``."""
    try:
        features = store.read(utt_id)
    except Exception as exc:  # a damaged chunk: zarr and h5py raise many types
        return None, f"does not read ({describe_error(exc)})"
    layers = features[None] if store.num_layers == 1 else features
    if checksum is not None and entry_checksum(layers) != checksum:
        return None, "does not match its checksum (its values changed after they were written)"
    return layers, ""
