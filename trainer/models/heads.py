"""Classifier heads: AAM-softmax for emotion, a linear auxiliary head, and a learned layer mix.

- :class:`AAMSoftmax` turns the ECAPA embedding into emotion logits (the paper's loss).
- :class:`AuxHead` is the paper's "fully connected layer and softmax" on the pooled vector,
  one per auxiliary task (data expression, gender, ...).
- :class:`LayerWeightedSum` mixes the hidden layers of a self-supervised model (e.g. the 25
  of wav2vec 2.0 large) with learned weights before ECAPA-TDNN.

All heads return logits; the softmax is inside the cross-entropy loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config import NetworkOptions

__all__ = ["AAMSoftmax", "AuxHead", "LayerWeightedSum"]


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): logits ``s·cos(θ_y + m)`` for the target, ``s·cos θ_j`` otherwise.

    ``θ_j`` is the angle between the embedding and class ``j``'s weight vector (both
    L2-normalised). During training the margin ``m`` is added to the angle of each sample's
    target class only, so the target must win by a margin; the loss is plain cross-entropy on
    these logits. Without labels (inference) the logits are ``s·cos θ``.

    Numerics: cosines are clamped to [-1, 1] and ``sin²θ`` is floored at 1e-7 (reached only at
    ``cos θ = ±1`` exactly in float32) before its square root, so gradients stay finite. ``cos(θ + m)`` stops decreasing once ``θ + m > π``; there (that is,
    when ``cos θ < cos(π − m)``) the target logit uses ``cos θ − m·sin(π − m)`` instead, which
    keeps it monotonic in θ. With ``easy_margin`` the margin is applied only where
    ``cos θ > 0`` and the plain cosine is used elsewhere.

    Parameters
    ----------
    embedding_dim : int
        Size of the input embedding.
    num_classes : int
        Number of classes.
    margin : float
        m, in radians (0.2 is the usual value).
    scale : float
        s (30 is the usual value).
    easy_margin : bool
        See above.

    Examples
    --------
    >>> head = AAMSoftmax(192, 4)
    >>> embedding, labels = torch.randn(8, 192), torch.randint(0, 4, (8,))
    >>> loss = F.cross_entropy(head(embedding, labels), labels)
    >>> head(embedding).shape
    torch.Size([8, 4])
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        margin: float = NetworkOptions.margin,
        scale: float = NetworkOptions.scale,
        easy_margin: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.margin = margin
        self.scale = scale
        self.easy_margin = easy_margin
        self._cos_m, self._sin_m = math.cos(margin), math.sin(margin)
        self._threshold = math.cos(math.pi - margin)
        self._fallback_offset = math.sin(math.pi - margin) * margin

    def forward(self, embedding: Tensor, labels: Tensor | None = None) -> Tensor:
        """``embedding`` (B, embedding_dim), ``labels`` (B,) int64 or None → logits (B, num_classes)."""
        cosine = F.linear(F.normalize(embedding, dim=-1), F.normalize(self.weight, dim=-1)).clamp(-1.0, 1.0)
        if labels is None:
            return self.scale * cosine
        sine = (1.0 - cosine.pow(2)).clamp(min=1e-7).sqrt()
        with_margin = cosine * self._cos_m - sine * self._sin_m
        if self.easy_margin:
            with_margin = torch.where(cosine > 0, with_margin, cosine)
        else:
            with_margin = torch.where(cosine > self._threshold, with_margin, cosine - self._fallback_offset)
        target = F.one_hot(labels, cosine.shape[-1]).bool()
        return self.scale * torch.where(target, with_margin, cosine)


class AuxHead(nn.Module):
    """An auxiliary task's "fully connected layer and softmax": a Linear layer returning logits.

    Examples
    --------
    >>> AuxHead(3072, 2)(torch.randn(8, 3072)).shape
    torch.Size([8, 2])
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, in_dim) → logits (B, num_classes)."""
        return self.fc(x)


class LayerWeightedSum(nn.Module):
    """A weighted sum over layers with learned, softmax-normalised weights (equal at start).

    Examples
    --------
    >>> mix = LayerWeightedSum(25)
    >>> mix(torch.randn(2, 25, 50, 1024)).shape
    torch.Size([2, 50, 1024])
    >>> round(float(mix.weights().sum()), 6)
    1.0
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, L, T, F) → (B, T, F)."""
        if x.shape[1] != self.logits.numel():
            raise ValueError(f"expected {self.logits.numel()} layers in dim 1, got {x.shape[1]}")
        return torch.einsum("l,bltf->btf", self.logits.softmax(dim=0).to(x.dtype), x)

    def weights(self) -> Tensor:
        """The normalised layer weights ``(L,)``, detached, for reports."""
        return self.logits.detach().softmax(dim=0)
