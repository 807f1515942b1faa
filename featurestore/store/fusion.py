"""Several stores of the same utterances read as one (``--store A --store B``): feature fusion.

Frame-level stores on the same frame grid (MFCC, fbank, eGeMAPS LLDs, openSMILE ComParE LLDs:
10 ms; wav2vec 2.0 layers: 20 ms) are joined frame by frame: each utterance's frames are the
parts' frames side by side, in the order the stores are given. Parts whose frame counts
differ by up to :data:`FRAME_TOLERANCE` frames (framing at the edges) are cut to the shortest;
anything else is refused in one line, as are stores of other utterances, other frame rates
or other labels. Utterance-level stores (openSMILE functionals: one vector per utterance)
are *late* fused: their vector is repeated on every frame after the frame parts, and the
network joins it to the pooled statistics instead of convolving it
(:class:`trainer.network.NetworkConfig` ``utterance_size``). A store with several layers
gives its last.

:class:`FusedStore` reads like a :class:`~featurestore.store.reader.FeatureStore` (ids,
manifest, entries, :meth:`~FusedStore.read_all`, :meth:`~FusedStore.read_frames`), so every
trainer path (cv, sweep, train --all-data, the streaming bank) takes it as it is; its
``attrs["feature"]`` describes the parts, from which ``predict`` rebuilds the same fusion
(:class:`featurestore.features.fusion.FusedExtractor`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import ConfigError, StoreError
from featurestore.manifest import Manifest
from featurestore.store.reader import FeatureStore, open_store, stored_attrs

#: Most frames by which the parts of one utterance may differ; longer parts are cut to the shortest.
FRAME_TOLERANCE = 2
#: Manifest columns that must agree between the parts (a label that differs is a mislabel).
CHECKED_COLUMNS = ("emotion", "speaker", "expression", "gender", "corpus", "session")

#: One store path, or several to fuse.
StoreSpec = str | os.PathLike | Sequence[str | os.PathLike]


def store_paths(spec: StoreSpec) -> list[Path]:
    """The paths of ``spec`` (one or several), in order."""
    if isinstance(spec, (str, os.PathLike)):
        return [Path(spec)]
    return [Path(p) for p in spec]


def store_name(spec: StoreSpec) -> str:
    """A short name for default run folders: the store's stem, or the stems joined by ``+``.

    >>> store_name(["cache/a_egemaps.zarr", "cache/a_fbank.zarr"])
    'a_egemaps+a_fbank'
    """
    return "+".join(p.stem for p in store_paths(spec))


def store_record(spec: StoreSpec) -> str | list[str]:
    """What a run records as its store: the absolute path, or the list of them for a fusion."""
    paths = [str(p.resolve()) for p in store_paths(spec)]
    return paths[0] if len(paths) == 1 else paths


def sibling_stores(store: str | os.PathLike, features: Sequence[str]) -> tuple[str, ...]:
    """``store`` and the stores of ``features`` beside it, named as ``sermtl extract`` names
    them: ``cache/x_egemaps.zarr`` with ``fbank`` → ``cache/x_fbank.zarr`` (the store's own
    feature, read from it, swapped in its name). One line when the name does not end in its
    feature or a sibling does not exist, saying how to make it."""
    path = Path(store)
    own = str((stored_attrs(path).get("feature") or {}).get("feature"))
    if not path.stem.endswith(f"_{own}"):
        raise ConfigError(
            f"--fuse: the name of {path} does not end in _{own} (its feature), so its siblings cannot be "
            "found; give each store with --store, or --fuse none"
        )
    prefix = path.stem[: -len(own) - 1]
    siblings = [path.with_name(f"{prefix}_{feature}{path.suffix}") for feature in features if feature != own]
    for sibling, feature in zip(siblings, [f for f in features if f != own]):
        if not sibling.exists():
            raise ConfigError(
                f"--fuse {feature}: no store {sibling} beside {path}; extract it "
                f"(sermtl extract … --feature {feature} --store {sibling}) or give --fuse none"
            )
    return (str(path), *map(str, siblings))


def open_stores(spec: StoreSpec) -> FeatureStore:
    """One store (:func:`~featurestore.store.reader.open_store`), or the :class:`FusedStore` of several."""
    paths = store_paths(spec)
    if not paths:
        raise ConfigError("--store: no store given")
    if len(paths) == 1:
        return open_store(paths[0])
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ConfigError(f"--store: {', '.join(map(str, paths))} names a store twice")
    with contextlib.ExitStack() as stack:
        stores = [stack.enter_context(open_store(path)) for path in paths]
        fused = FusedStore(stores)
        stack.pop_all()
    return fused


def spec_manifest(spec: StoreSpec) -> Manifest:
    """The manifest of the stored utterances of ``spec`` (the stores are closed again)."""
    with open_stores(spec) as store:
        return store.manifest


class FusedStore(FeatureStore):
    """Stores of the same utterances read as one store of their joined frames (module docstring).

    ``stores`` are open stores, at least one of them frame-level; they are closed with this one.
    """

    def __init__(self, stores: Sequence[FeatureStore]) -> None:  # noqa: D107 (the class says it)
        framed = [s for s in stores if s.attrs.get("frame_rate") != 0]
        #: frame-level parts first, in the order given, then utterance-level ones (their columns come last)
        self.parts = framed + [s for s in stores if s.attrs.get("frame_rate") == 0]
        self.path = Path("+".join(str(s.path) for s in stores))
        if not framed:
            raise ConfigError(
                f"--store {self.path}: every store holds one vector per utterance; give a frame-level one"
            )
        self._framed = [s.attrs.get("frame_rate") != 0 for s in self.parts]
        self._check_rates(framed)
        first = self.parts[0]
        self._ids = first.ids()
        self._check_same_utterances()
        self._check_labels()
        self._layers = [None if s.num_layers == 1 else s.num_layers - 1 for s in self.parts]
        self._part_entries = [s.entries() for s in self.parts]
        self._entries = self._aligned_entries()
        self._starts = np.array([offset for offset, _ in self._entries.values()], np.int64)
        self.full_manifest = first.manifest
        self.problems: list[str] = []
        self.attrs = self._describe(framed[0])

    # -- checks -----------------------------------------------------------------------
    def _check_rates(self, framed: list[FeatureStore]) -> None:
        rate = framed[0].attrs.get("frame_rate")
        for store in framed[1:]:
            other = store.attrs.get("frame_rate")  # measured on a minute of audio: equal to within 1 %
            if rate is None or other is None or abs(float(rate) - float(other)) > 0.01 * float(rate):
                raise ConfigError(
                    f"--store: {framed[0].path} has {rate} frames a second and {store.path} {other}: "
                    "frame-level fusion needs one frame grid (--fuse none: no fusion)"
                )

    def _check_same_utterances(self) -> None:
        first = self.parts[0]
        for store in self.parts[1:]:
            for a, b in ((first, store), (store, first)):
                missing = [u for u in a.ids() if u not in b]
                if missing:
                    raise ConfigError(
                        f"--store: {b.path} lacks {len(missing)} of the {len(a)} utterances of {a.path} "
                        f"(first: {missing[0]}); fuse stores of the same utterances"
                    )
        for store, framed in zip(self.parts, self._framed):
            if framed:
                continue
            many = next((u for u in self._ids if store.num_frames(u) != 1), None)
            if many is not None:
                raise StoreError(
                    f"--store: {store.path} declares one vector per utterance but holds "
                    f"{store.num_frames(many)} for {many}"
                )

    def _check_labels(self) -> None:
        first = self.parts[0].manifest
        for store in self.parts[1:]:
            manifest = store.manifest
            for column in CHECKED_COLUMNS:
                if column not in first.columns or column not in manifest.columns:
                    continue
                for utt_id in self._ids:
                    if first[utt_id][column] != manifest[utt_id][column]:
                        raise ConfigError(
                            f"--store: {utt_id} has {column} {first[utt_id][column]!r} in {self.parts[0].path} "
                            f"and {manifest[utt_id][column]!r} in {store.path}; fuse stores of one manifest"
                        )

    def _aligned_entries(self) -> dict[str, tuple[int, int]]:
        """``{utt_id: (offset, frames)}`` of the joined frames: each utterance cut to its shortest frame part."""
        entries, offset = {}, 0
        framed = [(s, e) for s, e, f in zip(self.parts, self._part_entries, self._framed) if f]
        for utt_id in self._ids:
            counts = [e[utt_id][1] for _, e in framed]
            if max(counts) - min(counts) > FRAME_TOLERANCE:
                longest, shortest = int(np.argmax(counts)), int(np.argmin(counts))
                raise ConfigError(
                    f"--store: {utt_id} has {counts[longest]} frames in {framed[longest][0].path} and "
                    f"{counts[shortest]} in {framed[shortest][0].path} (more than {FRAME_TOLERANCE} apart): "
                    "the stores do not share a frame grid"
                )
            entries[utt_id] = (offset, min(counts))
            offset += min(counts)
        return entries

    def _describe(self, framed: FeatureStore) -> dict[str, Any]:
        fingerprints = [store.attrs.get("fingerprint") for store in self.parts]
        return {
            "feature": {
                "feature": "fusion",
                "parts": [
                    {"feature": store.attrs.get("feature"), "dtype": str(store.dtype), "layer": layer}
                    for store, layer in zip(self.parts, self._layers)
                ],
            },
            "frame_rate": framed.attrs.get("frame_rate"),
            "chunk_frames": min(int(s.attrs.get("chunk_frames") or 256) for s in self.parts),
            "dtype": str(self.dtype),
            "dim": self.dim,
            "num_layers": 1,
            "utterance_dim": sum(s.dim for s, f in zip(self.parts, self._framed) if not f),
            "fingerprint": f"fusion:{hashlib.sha256(repr(fingerprints).encode()).hexdigest()[:16]}",
        }

    # -- the FeatureStore interface ----------------------------------------------------
    @property
    def num_layers(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return sum(s.dim for s in self.parts)

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(*(s.dtype for s in self.parts))

    @property
    def format(self) -> str:
        return "fusion"

    @property
    def stored_frames(self) -> int:
        return self.committed_frames

    @property
    def committed_frames(self) -> int:
        return sum(frames for _, frames in self._entries.values())

    def checksums(self) -> dict[str, int]:
        """``{utt_id: CRC-32 of the parts' checksums}`` where every part holds one."""
        parts = [s.checksums() for s in self.parts]
        return {
            u: zlib.crc32(np.array([p[u] for p in parts], np.int64).tobytes())
            for u in self._ids
            if all(u in p for p in parts)
        }

    def audio_signatures(self) -> dict[str, int]:
        return self.parts[0].audio_signatures()

    def audio_stat_keys(self) -> dict[str, int]:
        return self.parts[0].audio_stat_keys()

    def _joined(self, utt_id: str, start: int, count: int) -> np.ndarray:
        """Frames ``start:start+count`` of one utterance's joined frames, ``(count, dim)``."""
        blocks = []
        for store, entries, layer, framed in zip(self.parts, self._part_entries, self._layers, self._framed):
            offset = entries[utt_id][0]
            if framed:
                block = store.read_frames(layer or 0, offset + start, offset + start + count)
            else:
                block = np.repeat(store.read_frames(layer or 0, offset, offset + 1), count, axis=0)
            blocks.append(block.astype(self.dtype, copy=False))
        return np.concatenate(blocks, axis=1)

    def read_frames(self, layer: int, start: int, stop: int) -> np.ndarray:
        """Joined frames ``start:stop`` of the concatenation of every utterance's joined frames."""
        out = []
        at = max(0, int(np.searchsorted(self._starts, start, side="right")) - 1)
        while at < len(self._ids) and self._starts[at] < stop:
            utt_id = self._ids[at]
            offset, frames = self._entries[utt_id]
            first, last = max(start, offset), min(stop, offset + frames)
            if last > first:
                out.append(self._joined(utt_id, first - offset, last - first))
            at += 1
        return np.concatenate(out) if out else np.zeros((0, self.dim), self.dtype)

    def read(self, utt_id: str, layer: int | None = None) -> np.ndarray:
        return self._joined(utt_id, 0, self._entry(utt_id)[1])

    def read_all(
        self, layer: int | None = None, utterance_columns: bool = True
    ) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
        """Every utterance's joined frames at once, ``(frames, dim)``, with ``{utt_id: (offset,
        frames)}``; without ``utterance_columns``, only the frame parts' columns
        (:meth:`utterance_vectors` has the rest once per utterance)."""
        parts = [i for i, framed in enumerate(self._framed) if framed or utterance_columns]
        width = sum(self.parts[i].dim for i in parts)
        out = np.empty((self.committed_frames, width), self.dtype)
        column = 0
        for store, layer_, framed in [(self.parts[i], self._layers[i], self._framed[i]) for i in parts]:
            block, offsets = store.read_all(layer=layer_)
            rows = np.concatenate(
                [
                    offsets[u][0] + (np.arange(frames) if framed else np.zeros(frames, np.int64))
                    for u, (_, frames) in self._entries.items()
                ]
            )
            out[:, column : column + store.dim] = block[rows]
            column += store.dim
        return out, dict(self._entries)

    def utterance_vectors(self) -> np.ndarray:
        """The utterance-level parts' vectors side by side, ``(utterances, utterance_dim)`` in
        entry order, in :attr:`dtype`."""
        out = np.empty((len(self._ids), self.attrs["utterance_dim"]), self.dtype)
        column = 0
        for store, layer, framed in zip(self.parts, self._layers, self._framed):
            if framed:
                continue
            block, offsets = store.read_all(layer=layer)
            out[:, column : column + store.dim] = block[[offsets[u][0] for u in self._ids]]
            column += store.dim
        return out

    def pending_ids(self) -> list[str]:
        return []

    def skipped(self) -> list[dict[str, Any]]:
        return []

    def size_on_disk(self) -> int:
        return sum(s.size_on_disk() for s in self.parts)

    def close(self) -> None:
        for store in self.parts:
            store.close()

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"FusedStore({str(self.path)!r}, utterances={len(self)}, dim={self.dim})"
