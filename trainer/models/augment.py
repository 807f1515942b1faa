"""Training-time augmentation of normalised frame features.

:class:`SpecAugment` masks random bands of feature dimensions and random spans of frames
(Park et al., 2019), on features already normalised to zero mean, so a masked value is the
training mean. It acts only in training mode and only on valid frames; in eval mode it is
the identity. Randomness comes from torch's global generator, so ``--seed`` repeats it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SpecAugment(nn.Module):
    """Zero ``freq_masks`` bands of up to ``freq_width`` of the feature dimensions and
    ``time_masks`` spans of up to ``time_fraction`` of each utterance's valid frames.

    ``x`` is ``(B, T, F)``; every utterance gets its own masks.

    Examples
    --------
    >>> augment = SpecAugment().train()
    >>> x = torch.ones(2, 100, 40)
    >>> out = augment(x, torch.tensor([100, 60]))
    >>> bool((out == 0).any()), bool((out[1, 60:] == 1).all())
    (True, True)
    """

    def __init__(
        self, freq_masks: int = 2, freq_width: float = 0.15, time_masks: int = 2, time_fraction: float = 0.1
    ) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_fraction = time_masks, time_fraction

    @staticmethod
    def _band_mask(size: Tensor, count: int, max_width: Tensor, axis_len: int) -> Tensor:
        """``(B, axis_len)`` True inside ``count`` random bands per row, each of width
        ``< max_width`` (per row) starting inside ``[0, size)``."""
        batch = size.shape[0]
        device = size.device
        positions = torch.arange(axis_len, device=device)[None, :]
        masked = torch.zeros(batch, axis_len, dtype=torch.bool, device=device)
        for _ in range(count):
            width = (torch.rand(batch, device=device) * max_width).long()
            start = (torch.rand(batch, device=device) * (size - width).clamp_min(1)).long()
            masked |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
        return masked

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x`` (B, T, F), ``lengths`` (B,) int64 → (B, T, F), masked in training mode only."""
        if not self.training:
            return x
        batch, frames, dims = x.shape
        full_dims = torch.full((batch,), dims, device=x.device)
        freq = self._band_mask(full_dims, self.freq_masks, full_dims.float() * self.freq_width + 1, dims)
        time = self._band_mask(lengths, self.time_masks, lengths.float() * self.time_fraction + 1, frames)
        valid = torch.arange(frames, device=x.device)[None, :] < lengths[:, None]
        keep = ~((freq[:, None, :] & valid[:, :, None]) | time[:, :, None])
        return x * keep
