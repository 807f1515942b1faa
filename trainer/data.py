"""Feeding the trainer from a feature store: features in memory, batches, normalisation.

The trainer never touches audio. :class:`FeatureBank` reads a store's frames in one
sequential read (``store.read_all``) into a tensor (on the GPU when training there), so
every fold, epoch and α setting of a process batches from memory. When the frames do not
fit (:func:`open_bank` compares them with 60 % of the free memory), a
:class:`StreamingBank` reads each batch's utterances from the store instead, a few batches
ahead of the model in background threads.

Batching (:func:`make_batches`): training batches hold ``batch_size`` utterances (64, as
the paper), each randomly cropped to at most ``crop_frames`` frames (3 s by default: long
utterances contribute a different 3 s every epoch, and a batch's cost is bounded), and are
length-bucketed: utterances are shuffled, cut into pools of 16 batches, sorted by length
inside a pool and cut into batches, and the batches are shuffled, so padding stays small
while batch composition stays random. Evaluation uses whole utterances, sorted by length.
Padding is zeros; the model masks it by ``lengths``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from featurestore.errors import ConfigError
from featurestore.store.reader import FeatureStore

POOL_BATCHES = 16


def resolve_layer(store: FeatureStore, layer: str | int | None) -> int | str | None:
    """Which stored layer(s) to train on.

    ``None``/``"last"``: the only layer of a one-layer store, the last stored layer otherwise;
    an int or digit string: that index into the stored layers; ``"weighted"``: all stored
    layers, combined by a learned weighted sum.
    """
    count = store.num_layers
    if layer in (None, "last"):
        return None if count == 1 else count - 1
    if layer == "weighted":
        if count == 1:
            raise ConfigError(f"--layer weighted needs a store with several layers; {store.path} has one")
        return "weighted"
    try:
        index = int(layer)
    except (TypeError, ValueError):
        raise ConfigError(f"--layer must be last, weighted or a stored layer index, got {layer!r}") from None
    if not 0 <= index < count:
        raise ConfigError(f"--layer {index}: {store.path} stores {count} layer(s) (indices 0..{count - 1})")
    return index


Span = tuple[int, int]  # (first frame relative to the utterance, frame count)


class FeatureBank:
    """Batches of a store's utterances, held in memory as one frame tensor plus offsets.

    ``frames`` is ``(total_frames, dim)``, or ``(layers, total_frames, dim)`` for
    ``layer="weighted"``, in the store's dtype (float16 stays float16 in memory and is
    converted per batch). :class:`StreamingBank` has the same interface for stores that do
    not fit in memory.
    """

    streaming = False

    def __init__(self, store: FeatureStore, layer: str | int | None = None, device: str | torch.device = "cpu") -> None:
        self.layer = resolve_layer(store, layer)
        self.multi_layer = self.layer == "weighted"
        self.dim = store.dim
        self.num_layers = store.num_layers if self.multi_layer else 1
        self.device = torch.device(device)
        self._statistics_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        #: per-utterance (mean, std) applied to every read (:meth:`speaker_normalised`)
        self._utterance_norm: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._load(store)

    def _load(self, store: FeatureStore) -> None:
        """Set ``entries`` (``{utt_id: (offset, frames)}``) and whatever ``_frames`` reads."""
        block, self.entries = store.read_all(layer=None if self.layer in (None, "weighted") else self.layer)
        self.frames = torch.from_numpy(np.ascontiguousarray(block)).to(self.device)

    def _frames(self, utt_id: str, start: int, count: int) -> torch.Tensor:
        """Frames ``start:start+count`` of one utterance, ``([layers,] count, dim)``."""
        offset = self.entries[utt_id][0] + start
        return self.frames[:, offset : offset + count] if self.multi_layer else self.frames[offset : offset + count]

    def _read(self, utt_id: str, start: int, count: int) -> torch.Tensor:
        """:meth:`_frames` ``([layers,] count, dim)``, standardised with the utterance's own
        statistics when this bank is :meth:`speaker_normalised`."""
        block = self._frames(utt_id, start, count)
        if self._utterance_norm is None:
            return block
        mean, std = self._utterance_norm[utt_id]
        return (block.float() - mean.unsqueeze(-2)) / std.unsqueeze(-2)

    def speaker_normalised(self, groups: dict[str, list[str]]) -> FeatureBank:
        """A view of this bank (sharing its frames) in which each utterance is standardised
        with the mean and standard deviation over every frame of its speaker's utterances
        (``groups``: ``{speaker: ids}``, :func:`trainer.speakers.speaker_groups`)."""
        view = copy.copy(self)
        view._statistics_cache = {}
        view._utterance_norm = {}
        for ids in groups.values():
            statistics = self._compute_statistics(ids)
            view._utterance_norm.update(dict.fromkeys(ids, statistics))
        return view

    def lengths(self, ids: Sequence[str]) -> np.ndarray:
        """Frame counts of ``ids``, int64 ``(len(ids),)``."""
        return np.array([self.entries[u][1] for u in ids], dtype=np.int64)

    def spans(
        self, ids: Sequence[str], crop_frames: int | None = None, rng: np.random.Generator | None = None
    ) -> list[Span]:
        """Which frames of each utterance a batch uses: all, or a random ``crop_frames`` window."""
        spans = []
        for frames in self.lengths(ids):
            if crop_frames and frames > crop_frames:
                start = int(rng.integers(0, frames - crop_frames + 1)) if rng is not None else 0
                spans.append((start, crop_frames))
            else:
                spans.append((0, int(frames)))
        return spans

    def gather(self, ids: Sequence[str], spans: Sequence[Span]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 features ``(B, [layers,] T, dim)`` and lengths ``(B,)`` on the bank's device."""
        longest = max(count for _, count in spans)
        shape = (len(ids), self.num_layers, longest, self.dim) if self.multi_layer else (len(ids), longest, self.dim)
        out = torch.zeros(shape, dtype=torch.float32, device=self.device)
        for row, (utt_id, (start, count)) in enumerate(zip(ids, spans)):
            if self.multi_layer:
                out[row, :, :count] = self._read(utt_id, start, count)
            else:
                out[row, :count] = self._read(utt_id, start, count)
        return out, torch.tensor([c for _, c in spans], dtype=torch.long, device=self.device)

    def batch(
        self, ids: Sequence[str], crop_frames: int | None = None, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`gather` of :meth:`spans`: one padded batch, features ``(B, [layers,] T, dim)``
        and lengths ``(B,)``."""
        return self.gather(ids, self.spans(ids, crop_frames, rng))

    def iterate(
        self, batches: Sequence[Sequence[str]], crop_frames: int | None = None, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[Sequence[str], torch.Tensor, torch.Tensor]]:
        """``(ids, features, lengths)`` for each batch, shaped as :meth:`batch` gives them; crops
        are drawn from ``rng`` in batch order."""
        for ids in batches:
            yield (ids, *self.batch(ids, crop_frames, rng))

    def statistics(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation over every frame of ``ids`` (float32,
        ``(dim,)`` each, or ``(layers, dim)`` for a multi-layer bank), accumulated in float64;
        computed once per set of ids (the runs of a sweep share their folds' training sets)."""
        key = tuple(ids)
        if key not in self._statistics_cache:
            self._statistics_cache[key] = self._compute_statistics(ids)
        return self._statistics_cache[key]

    def _compute_statistics(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        axis_shape = (self.num_layers, self.dim) if self.multi_layer else (self.dim,)
        total = torch.zeros(axis_shape, dtype=torch.float64, device=self.device)
        squares = torch.zeros_like(total)
        count = 0
        for utt_id in ids:
            block = self._read(utt_id, 0, self.entries[utt_id][1]).double()
            total += block.sum(dim=-2)
            squares += (block * block).sum(dim=-2)
            count += block.shape[-2]
        if count == 0:
            raise ConfigError("no training frames to compute normalisation statistics from")
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(1e-10).sqrt()
        return mean.float(), std.float()


class StreamingBank(FeatureBank):
    """The :class:`FeatureBank` interface for stores larger than memory.

    Utterances are read from the store when a batch needs them; :meth:`iterate` reads the
    next ``PREFETCH_BATCHES`` batches in background threads while the current one trains,
    so the model is not kept waiting by the disk. Crops are drawn in the calling thread,
    so a seed gives the same batches as the in-memory bank.
    """

    streaming = True
    PREFETCH_BATCHES = 4

    def _load(self, store: FeatureStore) -> None:
        self.store = store
        self.entries = store.entries()
        self._read_layer = None if self.layer in (None, "weighted") else self.layer

    def _frames(self, utt_id: str, start: int, count: int) -> torch.Tensor:
        frames = self.store.read(utt_id, layer=self._read_layer)
        return torch.from_numpy(np.ascontiguousarray(frames[..., start : start + count, :])).to(self.device)

    def iterate(self, batches, crop_frames=None, rng=None):
        planned = [(ids, self.spans(ids, crop_frames, rng)) for ids in batches]
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="sermtl-bank") as pool:
            pending = [pool.submit(self.gather, ids, spans) for ids, spans in planned[: self.PREFETCH_BATCHES]]
            for i, (ids, _) in enumerate(planned):
                if i + self.PREFETCH_BATCHES < len(planned):
                    pending.append(pool.submit(self.gather, *planned[i + self.PREFETCH_BATCHES]))
                yield (ids, *pending[i].result())


def memory_budget(device: torch.device) -> int:
    """Bytes the in-memory bank may use: 60 % of free GPU memory on CUDA, else 60 % of the
    RAM the OS reports as available."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.6 * free)
    try:
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle}
        return int(0.6 * info["MemAvailable"])
    except (OSError, KeyError, ValueError):
        return int(0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def open_bank(
    store: FeatureStore,
    layer: str | int | None = None,
    device: str | torch.device = "cpu",
    budget_bytes: int | None = None,
) -> FeatureBank:
    """An in-memory :class:`FeatureBank` when the frames to load fit ``budget_bytes``
    (default :func:`memory_budget`), else a :class:`StreamingBank`."""
    device = torch.device(device)
    resolved = resolve_layer(store, layer)
    layers = store.num_layers if resolved == "weighted" else 1
    needed = store.committed_frames * store.dim * store.dtype.itemsize * layers
    budget = memory_budget(device) if budget_bytes is None else budget_bytes
    cls = FeatureBank if needed <= budget else StreamingBank
    return cls(store, layer, device)


def make_batches(
    ids: Sequence[str], lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None
) -> list[list[str]]:
    """Cut ``ids`` into batches of at most ``batch_size``.

    With ``rng`` (training): shuffle, sort by length inside pools of ``16 × batch_size``,
    cut, shuffle the batches; a last piece of one utterance joins the batch before it
    (BatchNorm cannot train on a batch of one). Without (evaluation): sorted by length,
    longest first.

    Examples
    --------
    >>> make_batches(["a", "b", "c"], [5, 9, 7], batch_size=2)
    [['b', 'c'], ['a']]
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if rng is None:
        order = sorted(range(len(ids)), key=lambda i: (-lengths[i], ids[i]))
        return [[ids[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    order = rng.permutation(len(ids))
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        pieces = [[ids[i] for i in chunk[s : s + batch_size]] for s in range(0, len(chunk), batch_size)]
        if len(pieces[-1]) == 1 and (len(pieces) > 1 or batches):
            (pieces[-2] if len(pieces) > 1 else batches[-1]).append(pieces.pop()[0])
        batches += pieces
    return [batches[i] for i in rng.permutation(len(batches))]
