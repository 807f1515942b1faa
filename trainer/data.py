"""Feeding the trainer from a feature store: features in memory, batches, normalisation.

The trainer never touches audio. :class:`FeatureBank` reads a store's frames in one
sequential read (``store.read_all``) into a tensor (on the GPU when training there and it
fits), so every fold, epoch and α setting of a process batches from memory.

Batching (:func:`make_batches`): training batches hold ``batch_size`` utterances (64, as
the paper), each randomly cropped to at most ``crop_frames`` frames (3 s by default: long
utterances contribute a different 3 s every epoch, and a batch's cost is bounded), and are
length-bucketed: utterances are shuffled, cut into pools of 16 batches, sorted by length
inside a pool and cut into batches, and the batches are shuffled, so padding stays small
while batch composition stays random. Evaluation uses whole utterances, sorted by length.
Padding is zeros; the model masks it by ``lengths``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from featurestore.errors import SermtlError
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
            raise SermtlError(f"--layer weighted needs a store with several layers; {store.path} has one")
        return "weighted"
    try:
        index = int(layer)
    except (TypeError, ValueError):
        raise SermtlError(f"--layer must be last, weighted or a stored layer index, got {layer!r}") from None
    if not 0 <= index < count:
        raise SermtlError(f"--layer {index}: {store.path} stores {count} layer(s) (indices 0..{count - 1})")
    return index


class FeatureBank:
    """Every committed utterance of a store, held as one frame tensor plus offsets.

    ``frames`` is ``(total_frames, dim)``, or ``(layers, total_frames, dim)`` for
    ``layer="weighted"``, in the store's dtype (float16 stays float16 in memory and is
    converted per batch).
    """

    def __init__(self, store: FeatureStore, layer: str | int | None = None, device: str | torch.device = "cpu") -> None:
        self.layer = resolve_layer(store, layer)
        block, self.entries = store.read_all(layer=None if self.layer in (None, "weighted") else self.layer)
        self.frames = torch.from_numpy(np.ascontiguousarray(block)).to(device)
        self.device = self.frames.device
        self.multi_layer = self.layer == "weighted"
        self.dim = int(self.frames.shape[-1])
        self.num_layers = int(self.frames.shape[0]) if self.multi_layer else 1

    def lengths(self, ids: Sequence[str]) -> np.ndarray:
        """Frame counts of ``ids``."""
        return np.array([self.entries[u][1] for u in ids], dtype=np.int64)

    def batch(self, ids: Sequence[str], crop_frames: int | None = None,
              rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 features ``(B, [layers,] T, dim)`` and lengths ``(B,)`` on the bank's device.

        With ``crop_frames``, utterances longer than it are cut to a random window
        (``rng``) of that many frames.
        """
        spans = []
        for utt_id in ids:
            offset, frames = self.entries[utt_id]
            if crop_frames and frames > crop_frames:
                start = int(rng.integers(0, frames - crop_frames + 1)) if rng is not None else 0
                offset, frames = offset + start, crop_frames
            spans.append((offset, frames))
        longest = max(f for _, f in spans)
        shape = ((len(ids), self.num_layers, longest, self.dim) if self.multi_layer else (len(ids), longest, self.dim))
        out = torch.zeros(shape, dtype=torch.float32, device=self.device)
        for row, (offset, frames) in enumerate(spans):
            if self.multi_layer:
                out[row, :, :frames] = self.frames[:, offset:offset + frames]
            else:
                out[row, :frames] = self.frames[offset:offset + frames]
        lengths = torch.tensor([f for _, f in spans], dtype=torch.long, device=self.device)
        return out, lengths

    def statistics(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation over every frame of ``ids`` (float32;
        per layer for a multi-layer bank), accumulated in float64."""
        axis_shape = (self.num_layers, self.dim) if self.multi_layer else (self.dim,)
        total = torch.zeros(axis_shape, dtype=torch.float64, device=self.device)
        squares = torch.zeros_like(total)
        count = 0
        for utt_id in ids:
            offset, frames = self.entries[utt_id]
            block = (self.frames[:, offset:offset + frames] if self.multi_layer else self.frames[offset:offset + frames]).double()
            total += block.sum(dim=-2)
            squares += (block * block).sum(dim=-2)
            count += frames
        if count == 0:
            raise SermtlError("no training frames to compute normalisation statistics from")
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(1e-10).sqrt()
        return mean.float(), std.float()


def make_batches(ids: Sequence[str], lengths: Sequence[int], batch_size: int,
                 rng: np.random.Generator | None = None) -> list[list[str]]:
    """Cut ``ids`` into batches of at most ``batch_size``.

    With ``rng`` (training): shuffle, sort by length inside pools of ``16 × batch_size``,
    cut, shuffle the batches. Without (evaluation): sorted by length, longest first.

    >>> make_batches(["a", "b", "c"], [5, 9, 7], batch_size=2)
    [['b', 'c'], ['a']]
    """
    if batch_size < 1:
        raise SermtlError(f"--batch-size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if rng is None:
        order = sorted(range(len(ids)), key=lambda i: (-lengths[i], ids[i]))
        return [[ids[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
    order = rng.permutation(len(ids))
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [[ids[i] for i in chunk[s:s + batch_size]] for s in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
