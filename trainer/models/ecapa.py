"""ECAPA-TDNN (Desplanques et al., 2020) in the widely used SpeechBrain configuration.

Read top-down, one class per block::

    (B, T, F) ─ TDNNBlock k5 ─ SERes2NetBlock k3 d2 ─ SERes2NetBlock k3 d3 ─ SERes2NetBlock k3 d4
                                     │                       │                       │
                                     └──────── concat (3·C) ─┴───────────────────────┘
                                                    │
                      TDNNBlock 1×1 to 3·C (multi-layer feature aggregation)
                                                    │
                  AttentiveStatisticsPooling → BatchNorm1d → ``pooled`` (B, 6·C)
                                                    │
                         Linear → BatchNorm1d → ``embedding`` (B, 192)

The paper's data-expression branch sits after the pooling layer, beside the emotion branch,
so :class:`ECAPATDNN` returns both ``embedding`` and ``pooled``.

Padding. Utterances in a batch are padded at the end to the longest one, and ``lengths``
(number of valid frames, int64) says how many frames each has. Every time reduction (SE
squeeze, pooling statistics, attention softmax) uses only valid frames, and every block sets
the padded frames of its output to zero. Convolutions use zero 'same' padding (SpeechBrain
uses 'reflect'), so a short utterance in a batch sees the same zeros past its end that it
sees alone: in eval mode an utterance's outputs do not depend on the batch it is in, up to
float error. In training mode the batch-norm statistics are computed over all frames of
the batch, padded ones included, as in SpeechBrain; bucketing utterances by length keeps
that effect small.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from trainer.config import NetworkOptions

__all__ = [
    "ECAPATDNN",
    "AttentiveStatisticsPooling",
    "Res2NetBlock",
    "SEBlock",
    "SERes2NetBlock",
    "TDNNBlock",
    "frame_mask",
]

_EPS = 1e-12


def _exporting() -> bool:
    """Whether a graph is being traced or compiled (it can hold no data-dependent branch)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def frame_mask(lengths: Tensor, num_frames: int) -> Tensor:
    """Valid-frame mask ``(B, 1, T)`` (bool, on ``lengths``' device) from frame counts ``(B,)``.

    Raises
    ------
    ValueError
        A length is outside ``[1, num_frames]`` (an empty utterance would make the
        attention softmax undefined).

    Examples
    --------
    >>> frame_mask(torch.tensor([3, 1]), 4).int().squeeze(1)
    tensor([[1, 1, 1, 0],
            [1, 0, 0, 0]], dtype=torch.int32)
    """
    if lengths.dim() != 1:
        raise ValueError(f"lengths must have shape (B,), got {tuple(lengths.shape)}")
    if not _exporting() and (bool((lengths < 1).any()) or bool((lengths > num_frames).any())):
        raise ValueError(f"lengths must lie in [1, {num_frames}], got {lengths.tolist()}")
    frames = torch.arange(num_frames, device=lengths.device)
    return (frames < lengths.unsqueeze(1)).unsqueeze(1)


def _frame_weights(x: Tensor, mask: Tensor | None) -> Tensor:
    """Uniform weights over each utterance's valid frames, ``(B, 1, T)``, summing to 1 over T."""
    if mask is None:
        return torch.full_like(x[:, :1], 1.0 / x.shape[-1])
    weights = mask.to(x.dtype)
    return weights / weights.sum(dim=-1, keepdim=True)


def _weighted_mean_std(x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over time of ``x`` (B, C, T) with ``weights`` (B, 1|C, T) summing to 1.

    Returns two ``(B, C)`` tensors; the variance is floored at 1e-12 before the square root.
    """
    mean = (weights * x).sum(dim=-1)
    variance = (weights * (x - mean.unsqueeze(-1)).pow(2)).sum(dim=-1)
    return mean, variance.clamp(min=_EPS).sqrt()


def _zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` (B, C, T) with padded frames set to zero (unchanged when ``mask`` is None)."""
    return x if mask is None else x.masked_fill(~mask, 0.0)


class TDNNBlock(nn.Module):
    """Conv1d ('same' zero padding) → ReLU → BatchNorm1d; padded frames of the output are zeroed.

    Parameters
    ----------
    in_ch, out_ch : int
        Input and output channels.
    kernel_size, dilation : int
        Of the convolution (odd kernel sizes; 'same' output length).

    Examples
    --------
    >>> TDNNBlock(80, 64, kernel_size=5, dilation=1)(torch.randn(5, 80, 120)).shape
    torch.Size([5, 64, 120])
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, dilation=dilation, padding="same", padding_mode="zeros")
        self.activation = nn.ReLU()
        self.norm = nn.BatchNorm1d(out_ch)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, in_ch, T), ``mask`` (B, 1, T) bool or None → (B, out_ch, T)."""
        return _zero_padding(self.norm(self.activation(self.conv(x))), mask)


class Res2NetBlock(nn.Module):
    """Res2Net multi-scale convolution: ``scale`` channel groups, each seeing the previous group's output.

    Group 0 passes through; group 1 goes through a TDNN block; group ``i > 1`` goes through its
    TDNN block after adding group ``i - 1``'s output, so later groups see ever wider contexts.

    Parameters
    ----------
    channels : int
        Input and output channels, divisible by ``scale``.
    scale : int
        Number of groups.
    kernel_size, dilation : int
        Of each group's TDNN block.

    Examples
    --------
    >>> Res2NetBlock(64, scale=8, kernel_size=3, dilation=2)(torch.randn(5, 64, 120)).shape
    torch.Size([5, 64, 120])
    """

    def __init__(self, channels: int, scale: int = 8, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by scale ({scale})")
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, channels, T), ``mask`` (B, 1, T) bool or None → (B, channels, T)."""
        first, *rest = torch.chunk(x, self.scale, dim=1)
        outputs = [first]
        previous = None
        for group, block in zip(rest, self.blocks):
            previous = block(group if previous is None else group + previous, mask)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation: a per-channel gate from the mean over valid frames rescales the input.

    Parameters
    ----------
    in_ch : int
        Channels of the input.
    se_channels : int
        Bottleneck width.
    out_ch : int
        Channels of the gate; equal to ``in_ch`` when the block rescales its own input.

    Examples
    --------
    >>> x = torch.randn(2, 64, 50)
    >>> SEBlock(64, 16, 64)(x, frame_mask(torch.tensor([50, 20]), 50)).shape
    torch.Size([2, 64, 50])
    """

    def __init__(self, in_ch: int, se_channels: int, out_ch: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv1d(in_ch, se_channels, kernel_size=1)
        self.excite = nn.Conv1d(se_channels, out_ch, kernel_size=1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, in_ch, T), ``mask`` (B, 1, T) bool or None → ``x`` times the gate (B, out_ch, 1)."""
        x = _zero_padding(x, mask)
        mean = (x * _frame_weights(x, mask)).sum(dim=-1, keepdim=True)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(mean))))
        return x * gate


class SERes2NetBlock(nn.Module):
    """SE-Res2Block: TDNN 1×1 → Res2Net → TDNN 1×1 → SE, plus the block's input (residual).

    Parameters
    ----------
    channels : int
        Input and output channels.
    res2net_scale : int
        Res2Net groups.
    se_channels : int
        SE bottleneck width.
    kernel_size, dilation : int
        Of the Res2Net convolutions.

    Examples
    --------
    >>> SERes2NetBlock(64, res2net_scale=8, se_channels=16, kernel_size=3, dilation=2)(torch.randn(5, 64, 120)).shape
    torch.Size([5, 64, 120])
    """

    def __init__(
        self, channels: int, res2net_scale: int = 8, se_channels: int = 128, kernel_size: int = 3, dilation: int = 1
    ) -> None:
        super().__init__()
        self.tdnn_in = TDNNBlock(channels, channels, kernel_size=1)
        self.res2net = Res2NetBlock(channels, res2net_scale, kernel_size, dilation)
        self.tdnn_out = TDNNBlock(channels, channels, kernel_size=1)
        self.se = SEBlock(channels, se_channels, channels)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, channels, T), ``mask`` (B, 1, T) bool or None → (B, channels, T)."""
        y = self.tdnn_out(self.res2net(self.tdnn_in(x, mask), mask), mask)
        return self.se(y, mask) + _zero_padding(x, mask)


class AttentiveStatisticsPooling(nn.Module):
    """Channel- and context-dependent attentive statistics pooling over valid frames.

    Each frame's attention logits come from the frame itself and, with ``global_context``, the
    utterance's mean and standard deviation (over valid frames) appended to it; a softmax over
    valid frames turns them into per-channel weights, which give a weighted mean and standard
    deviation.

    Parameters
    ----------
    channels : int
        Channels of the input.
    attention_channels : int
        Width of the attention's hidden layer.
    global_context : bool
        Append the utterance mean and std to each frame before attention.

    Returns
    -------
    torch.Tensor, shape (B, 2 * channels)
        Weighted mean then weighted std.

    Examples
    --------
    >>> x = torch.randn(2, 96, 50)
    >>> AttentiveStatisticsPooling(96, 32)(x, frame_mask(torch.tensor([50, 20]), 50)).shape
    torch.Size([2, 192])
    """

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = True) -> None:
        super().__init__()
        self.global_context = global_context
        context_channels = 3 * channels if global_context else channels
        self.tdnn = TDNNBlock(context_channels, attention_channels, kernel_size=1)
        self.attention = nn.Conv1d(attention_channels, channels, kernel_size=1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, channels, T), ``mask`` (B, 1, T) bool or None → (B, 2 * channels)."""
        x = _zero_padding(x, mask)
        context = x
        if self.global_context:
            mean, std = _weighted_mean_std(x, _frame_weights(x, mask))
            frames = x.shape[-1]
            context = torch.cat(
                [x, mean.unsqueeze(-1).expand(-1, -1, frames), std.unsqueeze(-1).expand(-1, -1, frames)], dim=1
            )
        logits = self.attention(torch.tanh(self.tdnn(context, mask)))
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        mean, std = _weighted_mean_std(x, torch.softmax(logits, dim=-1))
        return torch.cat([mean, std], dim=1)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN: frame features ``(B, T, F)`` → utterance embedding and pooled statistics.

    First TDNN block, three SE-Res2Blocks, multi-layer feature aggregation (the three blocks'
    outputs concatenated, then a TDNN block to ``3 * channels``), attentive statistics pooling
    with batch norm (``pooled``, ``2 * 3 * channels``), then Linear and batch norm to the
    embedding. Each SE-Res2Block's residual is its own input (SpeechBrain's choice; the
    original paper sums the outputs of all preceding blocks).

    Trainable parameters of the reference configuration (``channels=512``, ``embedding_dim=192``,
    other arguments at their defaults), by input size, checked by ``tests/unit/test_ecapa.py``:

    =========== ============================================
    input_size  parameters
    =========== ============================================
    40          6,092,032  (MFCC, the paper's baseline)
    80          6,194,432  (80-d filterbanks; the ECAPA paper's "6.2M")
    1024        8,611,072  (wav2vec 2.0 large)
    =========== ============================================

    SpeechBrain's ``ECAPA_TDNN`` has 384 fewer (no batch norm after the Linear layer).

    Parameters
    ----------
    input_size : int
        Feature dimension F.
    channels : int
        C, the width of the frame layers.
    embedding_dim : int
        Size of the embedding.
    kernel_sizes, dilations : sequence of int
        Of the first TDNN block, the three SE-Res2Blocks and the aggregation block (5 each).
    res2net_scale, se_channels : int
        Of the SE-Res2Blocks.
    attention_channels : int
        Of the attentive statistics pooling.
    global_context : bool
        Of the attentive statistics pooling.
    dropout : float
        Dropout on ``pooled`` before the Linear layer.
    utterance_size : int
        Size of an utterance-level vector joined to ``pooled`` before the Linear layer (0: none).

    Attributes
    ----------
    pooled_dim : int
        ``2 * 3 * channels`` (3072 for C = 512).
    embedding_dim : int
        Size of the embedding.

    Examples
    --------
    >>> model = ECAPATDNN(input_size=80).eval()
    >>> embedding, pooled = model(torch.randn(5, 120, 80), torch.tensor([120, 100, 80, 60, 40]))
    >>> embedding.shape, pooled.shape
    (torch.Size([5, 192]), torch.Size([5, 3072]))
    """

    def __init__(
        self,
        input_size: int,
        channels: int = NetworkOptions.channels,
        embedding_dim: int = NetworkOptions.embedding_dim,
        kernel_sizes: Sequence[int] = (5, 3, 3, 3, 1),
        dilations: Sequence[int] = (1, 2, 3, 4, 1),
        res2net_scale: int = 8,
        se_channels: int = 128,
        attention_channels: int = 128,
        global_context: bool = True,
        dropout: float = NetworkOptions.dropout,
        utterance_size: int = 0,
    ) -> None:
        super().__init__()
        if len(kernel_sizes) != 5 or len(dilations) != 5:
            raise ValueError("kernel_sizes and dilations need 5 entries: first block, 3 SE-Res2Blocks, aggregation")
        aggregated = 3 * channels
        self.pooled_dim = 2 * aggregated
        self.embedding_dim = embedding_dim
        self.first = TDNNBlock(input_size, channels, kernel_sizes[0], dilations[0])
        self.se_res2_blocks = nn.ModuleList(
            SERes2NetBlock(channels, res2net_scale, se_channels, kernel_size, dilation)
            for kernel_size, dilation in zip(kernel_sizes[1:4], dilations[1:4])
        )
        self.aggregation = TDNNBlock(aggregated, aggregated, kernel_sizes[4], dilations[4])
        self.pooling = AttentiveStatisticsPooling(aggregated, attention_channels, global_context)
        self.pooled_norm = nn.BatchNorm1d(self.pooled_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.pooled_dim + utterance_size, embedding_dim)
        self.embedding_norm = nn.BatchNorm1d(embedding_dim)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, utterance: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Embed a padded batch.

        Parameters
        ----------
        x : torch.Tensor, shape (B, T, F)
            Float features, padded at the end.
        lengths : torch.Tensor, shape (B,), optional
            int64 valid frames per utterance, or None when none is padded.
        utterance : torch.Tensor, shape (B, utterance_size), optional
            Utterance-level features joined to the pooled statistics before the Linear layer
            (late fusion); required when ``utterance_size`` > 0.

        Returns
        -------
        embedding : torch.Tensor, shape (B, embedding_dim)
            The utterance embedding.
        pooled : torch.Tensor, shape (B, pooled_dim)
            The batch-normed attentive-pooling output.
        """
        if lengths is None:
            mask = None
        elif lengths.shape != x.shape[:1]:
            raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}")
        elif not _exporting() and bool((lengths == x.shape[1]).all()):
            mask = None  # nothing padded (equal crops): no mask to build or apply, about a tenth of a step
        else:
            mask = frame_mask(lengths, x.shape[1]).to(x.device)
        h = self.first(_zero_padding(x.transpose(1, 2), mask), mask)
        block_outputs = []
        for block in self.se_res2_blocks:
            h = block(h, mask)
            block_outputs.append(h)
        h = self.aggregation(torch.cat(block_outputs, dim=1), mask)
        pooled = self.pooled_norm(self.pooling(h, mask))
        joined = pooled if utterance is None else torch.cat([pooled, utterance.to(pooled.dtype)], dim=1)
        return self.embedding_norm(self.fc(self.dropout(joined))), pooled
