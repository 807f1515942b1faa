"""Feeding the trainer from a feature store: features in memory, batches, normalisation.

The trainer never touches audio. :class:`FeatureBank` reads a store's frames in one
sequential read (``store.read_all``) into a tensor (on the GPU when training there), so
every fold, epoch and α setting of a process batches from memory. When the frames do not
fit (:func:`open_bank` compares them with 60 % of the free memory), a
:class:`StreamingBank` reads each batch's frames from the store instead: only the frames
the batch uses (a crop, not its whole utterance), in storage order, with the ranges that
share or touch a chunk merged into one read (:func:`coalesce_reads`), by two background
threads that make at most four batches ahead of the model, so memory stays bounded
(:func:`read_ahead`). Both banks draw every crop in the calling thread before the first
batch, so a seed gives the same batches, bit for bit, from memory and from the store.

Batching (:func:`make_batches`, ``--batching``): training batches hold ``batch_size``
utterances (64, as the paper), each randomly cropped to at most ``crop_frames`` frames (3 s
by default: long utterances contribute a different 3 s every epoch, and a batch's cost is
bounded). ``bucketed`` (the default) groups utterances of similar length: shuffled, cut
into pools of 16 batches, sorted by length inside a pool and cut into batches, and the
batches are shuffled, so padding stays small while batch composition stays random;
``random`` cuts the shuffled order as it comes. Evaluation uses whole utterances, sorted by
length. Padding is zeros; the model masks it by ``lengths``.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from featurestore.errors import ConfigError, SermtlError, StoreError, unknown_choice
from featurestore.store.reader import FeatureStore, damaged_store_error

POOL_BATCHES = 16
#: The values of ``--batching`` (:func:`make_batches`).
BATCHING = ("bucketed", "random")
#: Frames per chunk assumed for a store whose attributes do not say (``chunk_frames``).
DEFAULT_CHUNK_FRAMES = 256

T = TypeVar("T")


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
#: One batch before it is read: its ids and the span of each utterance it uses.
Planned = tuple[Sequence[str], list[Span]]


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
        """Set ``entries`` (``{utt_id: (offset, frames)}``) and whatever ``_frames`` reads. A
        fusion's utterance-level vectors (:mod:`featurestore.store.fusion`) are kept once per
        utterance and joined to each read, not repeated on every frame in memory."""
        self._vectors: torch.Tensor | None = None
        if store.attrs.get("utterance_dim"):
            block, self.entries = store.read_all(utterance_columns=False)
            self._vectors = torch.from_numpy(store.utterance_vectors()).to(self.device)
            self._vector_row = {utt_id: row for row, utt_id in enumerate(self.entries)}
        else:
            block, self.entries = store.read_all(layer=None if self.layer in (None, "weighted") else self.layer)
        self.frames = torch.from_numpy(np.ascontiguousarray(block)).to(self.device)

    def _frames(self, utt_id: str, start: int, count: int) -> torch.Tensor:
        """Frames ``start:start+count`` of one utterance, ``([layers,] count, dim)``."""
        offset = self.entries[utt_id][0] + start
        if self.multi_layer:
            return self.frames[:, offset : offset + count]
        block = self.frames[offset : offset + count]
        if self._vectors is None:
            return block
        return torch.cat([block, self._vectors[self._vector_row[utt_id]].expand(count, -1)], dim=-1)

    def _normalise(self, utt_id: str, block: torch.Tensor) -> torch.Tensor:
        """``block`` ``([layers,] count, dim)`` of ``utt_id`` standardised with the utterance's
        own statistics when this bank is :meth:`speaker_normalised`, else as it is."""
        if self._utterance_norm is None:
            return block
        mean, std = self._utterance_norm[utt_id]
        return (block.float() - mean.unsqueeze(-2)) / std.unsqueeze(-2)

    def _read(self, utt_id: str, start: int, count: int) -> torch.Tensor:
        """:meth:`_frames` ``([layers,] count, dim)``, :meth:`_normalise`\\ d."""
        return self._normalise(utt_id, self._frames(utt_id, start, count))

    def _whole(self, ids: Sequence[str]) -> Iterator[torch.Tensor]:
        """Every frame of each of ``ids`` in turn, :meth:`_read`: ``([layers,] frames, dim)``."""
        for utt_id in ids:
            yield self._read(utt_id, 0, self.entries[utt_id][1])

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

    def plan(
        self,
        batches: Iterable[Sequence[str]],
        crop_frames: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> list[Planned]:
        """:meth:`spans` of every batch, drawn from ``rng`` in batch order, at once: the draws
        (and the state ``rng`` is left in) do not depend on how far the batches are read."""
        return [(ids, self.spans(ids, crop_frames, rng)) for ids in batches]

    def _assemble(
        self, ids: Sequence[str], spans: Sequence[Span], blocks: Iterable[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One padded float32 batch ``(B, [layers,] T, dim)`` and its lengths ``(B,)`` from each
        utterance's raw frames ``blocks`` (``([layers,] count, dim)``, in batch order)."""
        longest = max(count for _, count in spans)
        shape = (len(ids), self.num_layers, longest, self.dim) if self.multi_layer else (len(ids), longest, self.dim)
        out = torch.zeros(shape, dtype=torch.float32, device=self.device)
        for row, (utt_id, (_, count), block) in enumerate(zip(ids, spans, blocks)):
            if self.multi_layer:
                out[row, :, :count] = self._normalise(utt_id, block)
            else:
                out[row, :count] = self._normalise(utt_id, block)
        return out, torch.tensor([c for _, c in spans], dtype=torch.long, device=self.device)

    def gather(self, ids: Sequence[str], spans: Sequence[Span]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 features ``(B, [layers,] T, dim)`` and lengths ``(B,)`` on the bank's device."""
        return self._assemble(ids, spans, (self._frames(u, start, count) for u, (start, count) in zip(ids, spans)))

    def batch(
        self, ids: Sequence[str], crop_frames: int | None = None, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`gather` of :meth:`spans`: one padded batch, features ``(B, [layers,] T, dim)``
        and lengths ``(B,)``."""
        return self.gather(ids, self.spans(ids, crop_frames, rng))

    def iterate(
        self,
        batches: Sequence[Sequence[str]],
        crop_frames: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> Iterator[tuple[Sequence[str], torch.Tensor, torch.Tensor]]:
        """``(ids, features, lengths)`` for each batch, shaped as :meth:`batch` gives them
        (``(B, [layers,] T, dim)`` and ``(B,)``); every crop is drawn from ``rng`` in batch
        order when this is called (:meth:`plan`)."""
        return self._batches(self.plan(batches, crop_frames, rng))

    def _batches(self, planned: list[Planned]) -> Iterator[tuple[Sequence[str], torch.Tensor, torch.Tensor]]:
        for ids, spans in planned:
            yield (ids, *self.gather(ids, spans))

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
        for block in self._whole(ids):  # in the order of ids, whatever the bank: the same sums
            block = block.double()
            total += block.sum(dim=-2)
            squares += (block * block).sum(dim=-2)
            count += block.shape[-2]
        if count == 0:
            raise ConfigError("no training frames to compute normalisation statistics from")
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(1e-10).sqrt()
        return mean.float(), std.float()


def coalesce_reads(ranges: Sequence[tuple[int, int]], chunk_frames: int) -> list[tuple[int, int, list[int]]]:
    """Group frame ranges into as few reads as possible without reading an extra chunk.

    Ranges are taken in storage order; a range joins the read before it when it starts in
    the chunk where that read ends or in the next one (every chunk the joined read spans
    is read anyway: a chunk is the unit a store reads), so each chunk is read at most once.

    Parameters
    ----------
    ranges : sequence of (int, int)
        ``(start, stop)`` frame ranges of the concatenated frame array, in any order, ``(N,)``.
    chunk_frames : int
        Frames per stored chunk (``store.attrs["chunk_frames"]``).

    Returns
    -------
    list of (int, int, list of int)
        ``(start, stop, members)`` per read, in storage order; ``members`` index ``ranges``.

    Examples
    --------
    >>> coalesce_reads([(600, 700), (0, 100), (90, 300), (1200, 1250)], chunk_frames=256)
    [(0, 700, [1, 2, 0]), (1200, 1250, [3])]
    """
    reads: list[tuple[int, int, list[int]]] = []
    for i in sorted(range(len(ranges)), key=lambda i: ranges[i]):
        start, stop = ranges[i]
        if reads and start // chunk_frames <= (reads[-1][1] - 1) // chunk_frames + 1:
            first, last, members = reads[-1]
            reads[-1] = (first, max(last, stop), [*members, i])
        else:
            reads.append((start, stop, [i]))
    return reads


class StreamingBank(FeatureBank):
    """The :class:`FeatureBank` interface for stores larger than memory.

    A batch reads only the frames it uses (a crop, not its whole utterance), in storage
    order, one read per group of ranges that share or touch a chunk
    (:func:`coalesce_reads`). :meth:`iterate` reads and assembles batches in
    ``READ_WORKERS`` background threads (:func:`read_ahead`), at most ``PREFETCH_BATCHES``
    batches ahead of the model, so memory stays bounded whatever the epoch's length. Crops are drawn in the
    calling thread before the first read (:meth:`plan`), and batches are assembled by the
    same code from the same float16 frames, so a seed gives the in-memory bank's batches
    bit for bit. A store that cannot be read raises :class:`~featurestore.errors.StoreError`
    in the thread iterating, where the batch would have come.
    """

    streaming = True
    #: Batches made or kept ready ahead of the model.
    PREFETCH_BATCHES = 4
    #: Threads reading and assembling batches (two batches at once).
    READ_WORKERS = 2
    #: Whole utterances read at once when computing statistics.
    STATISTICS_GROUP = 64

    def _load(self, store: FeatureStore) -> None:
        self.store = store
        self.entries = store.entries()
        read_layer = None if self.layer in (None, "weighted") else self.layer
        self._layers = list(range(store.num_layers)) if read_layer is None else [int(read_layer)]
        self.chunk_frames = max(1, int(store.attrs.get("chunk_frames") or DEFAULT_CHUNK_FRAMES))

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of the store's frame array: ``([layers,] stop − start, dim)``."""
        try:
            parts = [self.store.read_frames(layer, start, stop) for layer in self._layers]
        except SermtlError:
            raise
        except Exception as exc:  # a damaged chunk: zarr and h5py raise many types
            raise damaged_store_error(self.store.path, "read the frames of", exc) from None
        if parts[0].shape[0] != stop - start:
            raise StoreError(
                f"store {self.store.path} has entries outside its {self.store.stored_frames} stored frames: "
                f"run `sermtl verify {self.store.path}`"
            )
        return np.stack(parts) if self.multi_layer else parts[0]

    def fetch(self, ids: Sequence[str], spans: Sequence[Span]) -> list[np.ndarray]:
        """The raw frames of each utterance's span, ``([layers,] count, dim)`` in the store's
        dtype and in batch order, read in storage order with :func:`coalesce_reads`."""
        ranges = []
        for utt_id, (start, count) in zip(ids, spans):
            first = self.entries[utt_id][0] + start
            ranges.append((first, first + count))
        blocks: list[np.ndarray] = [np.empty(0)] * len(ranges)
        for first, last, members in coalesce_reads(ranges, self.chunk_frames):
            frames = self._read_range(first, last)
            if not frames.flags.writeable:  # torch.from_numpy wants a writeable array
                frames = frames.copy()
            for i in members:
                start, stop = ranges[i]
                blocks[i] = frames[..., start - first : stop - first, :]
        return blocks

    def _tensors(self, blocks: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """``blocks`` as tensors on the bank's device (one transfer per batch off the CPU)."""
        if self.device.type == "cpu":
            return [torch.from_numpy(block) for block in blocks]
        counts = [block.shape[-2] for block in blocks]
        flat = torch.from_numpy(np.concatenate(blocks, axis=-2)).to(self.device)
        return list(torch.split(flat, counts, dim=-2))

    def _frames(self, utt_id: str, start: int, count: int) -> torch.Tensor:
        return self._tensors(self.fetch([utt_id], [(start, count)]))[0]

    def gather(self, ids: Sequence[str], spans: Sequence[Span]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._assemble(ids, spans, self._tensors(self.fetch(ids, spans)))

    def _whole(self, ids: Sequence[str]) -> Iterator[torch.Tensor]:
        for at in range(0, len(ids), self.STATISTICS_GROUP):
            group = ids[at : at + self.STATISTICS_GROUP]
            blocks = self._tensors(self.fetch(group, [(0, self.entries[u][1]) for u in group]))
            for utt_id, block in zip(group, blocks):
                yield self._normalise(utt_id, block)

    def _batches(self, planned: list[Planned]) -> Iterator[tuple[Sequence[str], torch.Tensor, torch.Tensor]]:
        def make(i: int) -> tuple[Sequence[str], torch.Tensor, torch.Tensor]:
            ids, spans = planned[i]
            return (ids, *self.gather(ids, spans))

        return read_ahead(make, len(planned), self.PREFETCH_BATCHES, "sermtl-batches", self.READ_WORKERS)


def read_ahead(make: Callable[[int], T], count: int, depth: int, name: str, workers: int = 1) -> Iterator[T]:
    """``make(0)``, ``make(1)``, … ``make(count − 1)`` in order, made by ``workers`` background
    threads at most ``depth`` items ahead of the caller.

    The threads start at the first ``next``. An exception raised by ``make(i)`` is raised
    again, the same object, where item ``i`` would have been returned. Closing the returned
    generator (or dropping it: CPython closes it at once) stops and joins the threads, so
    an epoch abandoned midway leaves no thread running. At most ``depth`` items are made or
    waiting at once, besides the one the caller holds.

    Parameters
    ----------
    make : callable
        ``make(i)`` returns item ``i``; called from the threads, several at once when
        ``workers > 1``.
    count : int
        Items to make.
    depth : int
        Most items made or being made ahead of the caller (at least 1).
    name : str
        The threads' name (``name-0``, ``name-1``, …).
    workers : int
        Threads making items.

    Examples
    --------
    >>> list(read_ahead(lambda i: i * i, 5, depth=2, name="example", workers=2))
    [0, 1, 4, 9, 16]
    """
    made: dict[int, tuple[bool, Any]] = {}  # index -> (failed, item or exception)
    ready = threading.Condition()
    room = threading.Semaphore(max(1, depth))
    stop = threading.Event()
    indices = iter(range(count))
    threads = [
        threading.Thread(target=_work, args=(make, indices, made, ready, room, stop), name=f"{name}-{k}", daemon=True)
        for k in range(max(1, min(workers, count)))
    ]
    for thread in threads:
        thread.start()
    try:
        for index in range(count):
            with ready:
                while index not in made:
                    ready.wait()
                failed, item = made.pop(index)
            room.release()
            if failed:
                raise item
            yield item
    finally:
        stop.set()
        for _ in threads:
            room.release()  # wakes a thread waiting for room; it sees `stop` next
        for thread in threads:
            thread.join()
        made.clear()


def _work(
    make: Callable[[int], T],
    indices: Iterator[int],
    made: dict[int, tuple[bool, Any]],
    ready: threading.Condition,
    room: threading.Semaphore,
    stop: threading.Event,
) -> None:
    """A :func:`read_ahead` thread: take the next index when there is room, make its item.
    Holds no reference to the caller's generator, so a dropped generator is collected and
    stops it."""
    while True:
        room.acquire()
        with ready:
            index = None if stop.is_set() else next(indices, None)
        if index is None:
            room.release()  # the others see the end (or the stop) too
            return
        try:
            result: tuple[bool, Any] = (False, make(index))
        except BaseException as exc:  # handed to the caller, whatever it is
            result = (True, exc)
        with ready:
            made[index] = result
            ready.notify_all()


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
    vectors = int(store.attrs.get("utterance_dim") or 0)  # a fusion's, held once per utterance
    needed = (store.committed_frames * (store.dim - vectors) + len(store) * vectors) * store.dtype.itemsize * layers
    budget = memory_budget(device) if budget_bytes is None else budget_bytes
    cls = FeatureBank if needed <= budget else StreamingBank
    return cls(store, layer, device)


def make_batches(
    ids: Sequence[str],
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator | None = None,
    batching: str = "bucketed",
) -> list[list[str]]:
    """Cut ``ids`` into batches of at most ``batch_size``.

    With ``rng`` (training), ``batching`` (``--batching``) decides who shares a batch:

    - ``bucketed`` (the default): shuffle, sort by length inside pools of
      ``POOL_BATCHES × batch_size``, cut, shuffle the batches: utterances of similar length
      share a batch, so little is padded (:func:`padding_fraction`), while which utterances
      meet still changes every epoch;
    - ``random``: shuffle and cut in that order, as a plain data loader does.

    Either way a last piece of one utterance joins the batch before it (BatchNorm cannot
    train on a batch of one), and the same ``rng`` state gives the same batches. Without
    ``rng`` (evaluation): sorted by length, longest first.

    Parameters
    ----------
    ids : sequence of str
        Utterance ids, ``(N,)``.
    lengths : sequence of int
        Their frame counts as batched (training: after cropping), ``(N,)``.
    batch_size : int
        Most utterances in a batch, at least 1.
    rng : numpy.random.Generator, optional
        The shuffling generator (training); ``None`` for evaluation order.
    batching : {"bucketed", "random"}
        How training batches are composed.

    Returns
    -------
    list of list of str
        The batches, every id exactly once.

    Examples
    --------
    >>> make_batches(["a", "b", "c"], [5, 9, 7], batch_size=2)
    [['b', 'c'], ['a']]
    >>> sorted(map(len, make_batches(list("abcde"), [1] * 5, 2, np.random.default_rng(0), "random")))
    [2, 3]
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if batching not in BATCHING:
        raise unknown_choice("--batching", batching, BATCHING)
    lengths = np.asarray(lengths)
    if rng is None:
        order = sorted(range(len(ids)), key=lambda i: (-lengths[i], ids[i]))
        return [[ids[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    order = rng.permutation(len(ids))
    if batching == "random":
        batches = [[ids[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2].append(batches.pop()[0])
        return batches
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        pieces = [[ids[i] for i in chunk[s : s + batch_size]] for s in range(0, len(chunk), batch_size)]
        if len(pieces[-1]) == 1 and (len(pieces) > 1 or batches):
            (pieces[-2] if len(pieces) > 1 else batches[-1]).append(pieces.pop()[0])
        batches += pieces
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(batches: Sequence[Sequence[str]], lengths: Mapping[str, int]) -> float:
    """The share of a set of padded batches that is padding: ``Σ (B·T_max − Σ T) / Σ B·T_max``
    over ``batches`` (each padded to its longest utterance), with ``lengths`` ``{utt_id:
    frames as batched}``; 0.0 for no frames.

    Examples
    --------
    >>> padding_fraction([["a", "b"], ["c"]], {"a": 3, "b": 1, "c": 4})
    0.2
    """
    padded = used = 0
    for batch in batches:
        counts = [int(lengths[u]) for u in batch]
        padded += len(counts) * max(counts, default=0)
        used += sum(counts)
    return (padded - used) / padded if padded else 0.0
