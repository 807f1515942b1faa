"""The multi-task SER network: input normalisation → (layer sum) → ECAPA-TDNN → two heads.

As in the paper's Fig. 1: the emotion branch is ECAPA-TDNN's embedding layer with an
AAM-softmax classifier; the auxiliary branch (data expression, or any other manifest
column) is a fully connected layer with softmax on the attentive-pooling output, in
parallel to the emotion branch. Per-dimension mean/std of the training frames are kept
as buffers, so a checkpoint normalises its inputs by itself. With ``input_norm="speaker"``
the inputs arrive already standardised per speaker (:mod:`trainer.speakers`; the trainer's
bank and ``predict`` do it) and the global statistics are applied on top.

A checkpoint's ``network`` entry is read back through :meth:`NetworkConfig.from_dict`, which
checks it against :data:`NETWORK` (sizes within the caps below) and
:class:`~trainer.config.NetworkOptions` before anything is built, so a crafted entry is one
line naming the file and the key, never an allocation of its declared size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from featurestore.errors import ModelError, SermtlError, nearest, quote
from featurestore.schema import MapOf, Number, OneOf, Record, Text, check, maybe
from trainer.config import NetworkOptions
from trainer.limits import MAX_CLASSES
from trainer.models.ecapa import ECAPATDNN
from trainer.models.heads import AAMSoftmax, AuxHead, LayerWeightedSum

#: The widest input a checkpoint may declare (feature dimensions: 40 MFCCs, 1024 for
#: wav2vec 2.0 large, a few thousand for the largest self-supervised models).
MAX_INPUT_SIZE = 65536
#: The most input layers a checkpoint may declare (``--layer weighted``: 25 for wav2vec 2.0 large).
MAX_INPUT_LAYERS = 64
_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(NetworkOptions))
#: A network's options: a few numbers or short words (their names and ranges are
#: :class:`NetworkOptions`' own, checked when it is built).
OPTIONS = MapOf(OneOf((Number(), Text(max_length=64))), max_items=64)


def _frames_left(value: dict) -> tuple[str, str] | None:
    """Some of the input must be frame features: ``utterance_size < input_size``."""
    if (value.get("utterance_size") or 0) >= value["input_size"]:
        return "utterance_size", f"must be less than input_size {value['input_size']}"
    return None


#: A checkpoint's ``network`` entry: the sizes the data decides, and the options (nested,
#: or flat beside the sizes as older versions wrote them).
NETWORK = Record(
    {
        "input_size": Number(1, MAX_INPUT_SIZE, integer=True),
        "num_emotions": Number(1, MAX_CLASSES, integer=True),
        "num_aux": Number(0, MAX_CLASSES, integer=True, optional=True),
        "input_layers": Number(1, MAX_INPUT_LAYERS, integer=True, optional=True),
        "utterance_size": Number(0, MAX_INPUT_SIZE - 1, integer=True, optional=True),
        "options": maybe(OPTIONS),
    },
    rules=(_frames_left,),
)
_SIZES = ("input_size", "num_emotions", "num_aux", "input_layers", "utterance_size")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild a :class:`SERNetwork` (saved in checkpoints): the sizes
    the data decides, and the training config's own :class:`~trainer.config.NetworkOptions`."""

    input_size: int
    num_emotions: int
    num_aux: int = 0
    input_layers: int = 1
    options: NetworkOptions = dataclasses.field(default_factory=NetworkOptions)
    #: The last ``utterance_size`` input values of every frame are one utterance-level vector
    #: (late fusion, :mod:`featurestore.store.fusion`), joined to the pooled statistics.
    utterance_size: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "checkpoint") -> NetworkConfig:
        """A checkpoint's ``network`` entry (``options`` nested, or flat as older versions
        wrote it), checked against :data:`NETWORK` and :class:`NetworkOptions`; one
        :class:`SermtlError` line naming ``source`` (the file) and the key otherwise."""
        values = dict(check(values, NETWORK, f"{source}: network", ModelError))
        sizes = {k: values.pop(k) for k in _SIZES if values.get(k) is not None}
        options = {**(values.pop("options", None) or {}), **values}
        check(options, OPTIONS, f"{source}: network.options", ModelError)
        unknown = next((key for key in options if key not in _OPTION_NAMES), None)
        if unknown is not None:
            raise ModelError(
                f"{source}: network.options: unknown key {quote(unknown)}{nearest(unknown, _OPTION_NAMES)}"
            )
        try:
            return cls(**sizes, options=NetworkOptions(**options))
        except SermtlError as exc:
            raise ModelError(f"{source}: network.options: {exc}") from None


class SERNetwork(nn.Module):
    """ECAPA-TDNN with an emotion head and an optional auxiliary head.

    ``forward(x, lengths, emotion=None)`` takes ``x`` shaped ``(B, T, F)`` (or
    ``(B, layers, T, F)`` when ``input_layers > 1``) and returns a dict with
    ``emotion_logits`` (margin applied when ``emotion`` labels are given),
    ``aux_logits`` (when the network has an auxiliary head) and ``embedding``.

    Examples
    --------
    >>> options = NetworkOptions(channels=16, embedding_dim=8)
    >>> net = SERNetwork(NetworkConfig(input_size=40, num_emotions=4, num_aux=2, options=options)).eval()
    >>> out = net(torch.randn(3, 50, 40), torch.tensor([50, 40, 30]))
    >>> tuple(out["emotion_logits"].shape), tuple(out["aux_logits"].shape), tuple(out["embedding"].shape)
    ((3, 4), (3, 2), (3, 8))
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        stats_shape = (config.input_layers, config.input_size) if config.input_layers > 1 else (config.input_size,)
        self.register_buffer("feature_mean", torch.zeros(stats_shape))
        self.register_buffer("feature_std", torch.ones(stats_shape))
        self.layer_sum = LayerWeightedSum(config.input_layers) if config.input_layers > 1 else None
        options = config.options
        self.encoder = ECAPATDNN(
            config.input_size - config.utterance_size,
            channels=options.channels,
            embedding_dim=options.embedding_dim,
            dropout=options.dropout,
            utterance_size=config.utterance_size,
        )
        self.emotion_head = AAMSoftmax(
            options.embedding_dim, config.num_emotions, margin=options.margin, scale=options.scale
        )
        self.aux_head = AuxHead(self.encoder.pooled_dim, config.num_aux) if config.num_aux else None
        #: Training-time augmentation of the normalised features (set by the trainer; no state).
        self.augment: nn.Module | None = None

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Use these per-dimension statistics (of the training frames) to normalise inputs:
        ``mean`` and ``std`` ``(input_size,)``, or ``(input_layers, input_size)`` when
        ``input_layers > 1``."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, emotion: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Normalise, (mix the layers,) encode and classify a padded batch.

        Parameters
        ----------
        x : torch.Tensor, shape (B, T, F), or (B, layers, T, F) when ``input_layers > 1``
            Features, padded at the end; normalised here with the training statistics. With
            ``utterance_size`` U, the last U values of each frame are the utterance's vector.
        lengths : torch.Tensor, shape (B,), optional
            int64 valid frames per utterance; None when none is padded.
        emotion : torch.Tensor, shape (B,), optional
            int64 emotion labels; given (training), the AAM margin is applied to them.

        Returns
        -------
        dict of str to torch.Tensor
            ``emotion_logits`` (B, num_emotions), ``embedding`` (B, embedding_dim) and, with
            an auxiliary head, ``aux_logits`` (B, num_aux).
        """
        mean, std = self.feature_mean, self.feature_std
        if self.layer_sum is not None:
            x = (x - mean[None, :, None, :]) / std[None, :, None, :]
            x = self.layer_sum(x)
        else:
            x = (x - mean) / std
        utterance = None
        if self.config.utterance_size:  # late fusion: the same vector on every frame; its first copy
            utterance = x[:, 0, -self.config.utterance_size :]
            x = x[..., : -self.config.utterance_size]
        lengths = lengths if lengths is not None else torch.full((x.shape[0],), x.shape[1], device=x.device)
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
        if self.config.options.input_norm == "utterance":
            # subtract each utterance's own mean (channel, speaker offsets)
            x = x - (x * mask).sum(dim=1, keepdim=True) / lengths[:, None, None]
        if self.augment is not None:
            x = self.augment(x, lengths)
        x = x * mask  # padded frames stay exactly zero
        embedding, pooled = self.encoder(x, lengths, utterance)
        out = {"emotion_logits": self.emotion_head(embedding, emotion), "embedding": embedding}
        if self.aux_head is not None:
            out["aux_logits"] = self.aux_head(pooled)
        return out

    def describe(self) -> dict[str, Any]:
        """Config plus parameter count, for run reports."""
        return {**dataclasses.asdict(self.config), "parameters": sum(p.numel() for p in self.parameters())}
