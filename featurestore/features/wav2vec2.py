"""Hidden states of a frozen wav2vec 2.0 / HuBERT / WavLM model (feature name ``w2v2``).

The model is loaded with ``transformers.AutoModel.from_pretrained`` from a hub name or a
local folder, put in eval mode with gradients off, and run under
``torch.inference_mode()``: in float32 on the CPU, under bfloat16 autocast on CUDA (the
outputs are cast back to float32). transformers is imported only when an extractor is
built, so ``import featurestore.features`` stays fast. The stored layers are entries of
the model's ``hidden_states`` output as transformers returns them: index 0 is the input
to the first transformer layer, index N the output of layer N (for pre-layer-norm
"stable" models, transformers 5 gives the last one before the encoder's final layer norm).

Input normalisation
    As the model's own feature extractor does when its ``preprocessor_config.json`` says
    ``do_normalize`` (read with ``AutoFeatureExtractor``; taken as True, the usual value,
    when the model ships no preprocessor config): every utterance is scaled to zero mean
    and unit variance over its own samples, ``(x - mean) / sqrt(var + 1e-7)``, before
    padding. A preprocessor config asking for another sampling rate than 16 kHz is an
    error.

Batches give the same features as one-by-one extraction
    The batch is zero-padded and an attention mask is passed, so the transformer ignores
    padded frames (transformers also zeroes them before the positional convolution,
    which is what the zero padding of that convolution does for a lone utterance). Later
    conv layers are "valid" convolutions, so an utterance's output frames see only its
    own samples. What remains is the group norm of the first conv layer in
    ``feat_extract_norm == "group"`` models (wav2vec2-base/large-960h, HuBERT-base,
    WavLM-base...): it normalises each channel over *time*, so padding would change
    every frame. For the duration of the call that layer is replaced by a module that
    runs its conv, normalises with each utterance's statistics over its valid frames only
    (the layer's own eps and affine parameters), and applies its activation. Layer-norm
    models (``feat_extract_norm == "layer"``) normalise each frame on its own and need
    nothing. In float32 on the CPU the batched and one-by-one features agree to about
    1e-6 (tests allow 1e-4); bf16 autocast on CUDA adds its own rounding either way.

Long utterances
    A wave longer than ``chunk_seconds`` (default 40 s: above IEMOCAP's longest
    utterance, 34.1 s, so the paper's corpus is always processed whole, while attention
    cost stays bounded on long recordings; 0 or None never chunks) is cut into
    ``ceil(frames / (chunk_seconds * 50))`` cores of near-equal frame counts. Each core
    is run with ``chunk_context_seconds`` (default 2.5 s) of extra audio on each side,
    and only the core frames are kept. Windows start on multiples of the conv stack's
    total stride (320 samples) and end on a frame's receptive field, so their frame
    grids coincide with the whole utterance's and the stitched output has exactly
    ``num_frames(len(wave))`` frames. Input normalisation and, for group-norm models, the
    first layer's group-norm statistics are those of the whole utterance (computed once,
    by running the first conv over the wave in 10 s blocks), so the conv features of
    every frame are exact. The approximation is the transformer's: a frame near a core's
    edge attends to at most ``chunk_context_seconds`` of audio beyond it instead of the
    whole utterance, and deeper layers drift further from the unchunked features.

Fingerprint
    ``describe()`` records the model name, its class, hidden size, layer count and
    ``feat_extract_norm``, the hub revision when known, and ``weights_sha256``: the
    sha256 of the weight files (``model.safetensors``, or the shards of an index, or
    ``pytorch_model.bin``) read in 1 MB blocks from the model folder or the hub cache
    (about 1 s per GB), or, when no file is found, of the state dict's tensors. It also
    records the layers, the chunking parameters, ``do_normalize`` and the precision
    (``float32`` on the CPU, ``bfloat16-autocast`` on CUDA), since all of these change the
    features.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featurestore.errors import ConfigError, ModelError, describe_error
from featurestore.features import DEFAULT_SSL_MODEL
from featurestore.features.base import FeatureExtractor, resolve_device

SAMPLE_RATE = 16000
#: Variance floor of the per-utterance input normalisation (as in transformers).
NORMALIZE_EPS = 1e-7
#: Block length (samples) for the whole-utterance group-norm statistics of long waves.
_STATS_BLOCK_SAMPLES = 10 * SAMPLE_RATE
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclasses.dataclass(frozen=True)
class SSLConfig:
    """Everything that decides the ``w2v2`` features."""

    model: str
    model_class: str
    revision: str | None
    weights_sha256: str
    hidden_size: int
    num_hidden_layers: int
    feat_extract_norm: str
    do_normalize: bool
    layers: list[int]
    chunk_seconds: float | None
    chunk_context_seconds: float
    precision: str


class SSLExtractor(FeatureExtractor):
    """Selected hidden states of a frozen self-supervised speech model.

    ``model``: hub name or local folder. ``layers``: ``last``, ``all`` or a comma list of
    hidden-state indices (0 = input to the first transformer layer, N = output of the
    last). ``device``: ``auto``, ``cpu``, ``cuda``... ``chunk_seconds`` /
    ``chunk_context_seconds``: see the module docstring.
    """

    name = "w2v2"
    default_dtype = "float16"
    default_batch_seconds = 200.0

    @classmethod
    def from_description(cls, description: dict[str, Any], device: str = "auto") -> SSLExtractor:
        return cls(
            model=description["model"],
            layers=",".join(map(str, description["layers"])),
            device=device,
            chunk_seconds=description["chunk_seconds"],
            chunk_context_seconds=description["chunk_context_seconds"],
        )

    def __init__(
        self,
        model: str = DEFAULT_SSL_MODEL,
        layers: str = "last",
        device: str = "auto",
        chunk_seconds: float | None = 40.0,
        chunk_context_seconds: float = 2.5,
    ) -> None:
        if chunk_seconds is not None and chunk_seconds < 0:
            raise ConfigError(f"--chunk-seconds {chunk_seconds}: must be positive (0 = never chunk)")
        if chunk_context_seconds < 0:
            raise ConfigError(f"--chunk-context-seconds {chunk_context_seconds}: must be >= 0")
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # sermtl's own bar reports progress

        self.device = resolve_device(device)
        try:
            hf_model = AutoModel.from_pretrained(model, trust_remote_code=False)
        except Exception as exc:  # transformers raises many types (a weight file holding a pickle: UnpicklingError)
            raise ModelError(f"--model {model}: cannot load it ({describe_error(exc)})") from exc
        hf_config = hf_model.config
        if not hasattr(hf_model, "feature_extractor") or not hasattr(hf_config, "conv_kernel"):
            raise ModelError(
                f"--model {model}: {type(hf_model).__name__} is not a wav2vec2-style model "
                "(needs a conv feature encoder: wav2vec2, HuBERT, WavLM, data2vec-audio...)"
            )
        self.model = hf_model.to(self.device, torch.float32).eval().requires_grad_(False)
        self._kernels = tuple(int(k) for k in hf_config.conv_kernel)
        self._strides = tuple(int(s) for s in hf_config.conv_stride)
        first = self.model.feature_extractor.conv_layers[0]
        norm = getattr(first, "layer_norm", None)
        #: the first conv layer's GroupNorm, which needs per-utterance statistics; None otherwise
        self._group_norm = norm if isinstance(norm, nn.GroupNorm) else None

        weight_files = _weight_files(model)
        revision = getattr(hf_config, "_commit_hash", None) or _snapshot_revision(weight_files)
        weights_hash = _sha256_files(weight_files) if weight_files else _sha256_state_dict(self.model)
        self.config = SSLConfig(
            model=model,
            model_class=type(hf_model).__name__,
            revision=revision,
            weights_sha256=weights_hash,
            hidden_size=int(hf_config.hidden_size),
            num_hidden_layers=int(hf_config.num_hidden_layers),
            feat_extract_norm=str(hf_config.feat_extract_norm),
            do_normalize=_read_do_normalize(model),
            layers=parse_layers(layers, int(hf_config.num_hidden_layers)),
            chunk_seconds=float(chunk_seconds) if chunk_seconds else None,
            chunk_context_seconds=float(chunk_context_seconds),
            precision="bfloat16-autocast" if self.device.type == "cuda" else "float32",
        )

    # -- geometry -------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.config.layers)

    @property
    def total_stride(self) -> int:
        """Samples between consecutive frames (320 for wav2vec2)."""
        return math.prod(self._strides)

    @property
    def min_samples(self) -> int:
        """Receptive field of the conv stack (400 samples for wav2vec2)."""
        field, jump = 1, 1
        for kernel, stride in zip(self._kernels, self._strides):
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def num_frames(self, num_samples: int) -> int:
        n = num_samples
        for kernel, stride in zip(self._kernels, self._strides):
            if n < kernel:
                return 0
            n = (n - kernel) // stride + 1
        return n

    # -- extraction -----------------------------------------------------------------

    def extract_batch(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Features of each wave.

        Waves up to ``chunk_seconds`` go through the model together as one padded batch;
        longer ones are processed alone in overlapping windows.

        Parameters
        ----------
        waves : sequence of numpy.ndarray, each shape (samples,)
            16 kHz mono waves, each at least :attr:`min_samples` long.

        Returns
        -------
        list of numpy.ndarray, each shape (layers, frames, dim)
            float32 hidden states of the selected layers, ``frames = num_frames(samples)``.
        """
        inputs = []
        for index, wave in enumerate(waves):
            x = np.asarray(wave, dtype=np.float32)
            if x.ndim != 1:
                raise ModelError(f"utterance {index} of the batch: expected a 1-d mono wave, got shape {x.shape}")
            self.check_length(len(x), f"utterance {index} of the batch")
            inputs.append(self._normalize(x))

        limit = self.config.chunk_seconds
        is_long = [limit is not None and len(x) > limit * SAMPLE_RATE for x in inputs]
        short = [i for i, long in enumerate(is_long) if not long]
        results: list[np.ndarray | None] = [None] * len(inputs)
        if short:
            for i, features in zip(short, self._forward([inputs[i] for i in short])):
                results[i] = features
        for i, long in enumerate(is_long):
            if long:
                results[i] = self._extract_chunked(inputs[i])
        return results  # type: ignore[return-value]

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        """``x`` (samples,) scaled to zero mean and unit variance when ``do_normalize``."""
        if not self.config.do_normalize:
            return x
        x64 = x.astype(np.float64)
        return ((x64 - x64.mean()) / np.sqrt(x64.var() + NORMALIZE_EPS)).astype(np.float32)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(
        self, inputs: Sequence[np.ndarray], stats: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> list[np.ndarray]:
        """Run normalised waves ``(samples,)`` as one zero-padded batch, giving
        ``(layers, frames, dim)`` per wave; ``stats`` (mean and variance, ``(batch, groups)``
        each) fixes the group norm."""
        lengths = [len(x) for x in inputs]
        batch = torch.zeros(len(inputs), max(lengths))
        for row, x in enumerate(inputs):
            batch[row, : len(x)] = torch.from_numpy(x)
        mask = (torch.arange(batch.shape[1])[None, :] < torch.tensor(lengths)[:, None]).long()
        first_frames = torch.tensor(
            [(n - self._kernels[0]) // self._strides[0] + 1 for n in lengths], device=self.device
        )
        with (
            torch.inference_mode(),
            self._autocast(),
            self._utterance_group_norm(first_frames, stats),
            warnings.catch_warnings(),
        ):
            # WavLM hands torch a bool padding mask beside a float position bias: harmless
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            output = self.model(batch.to(self.device), attention_mask=mask.to(self.device), output_hidden_states=True)
            hidden = torch.stack([output.hidden_states[layer] for layer in self.config.layers])
            hidden = hidden.float().cpu()
        return [hidden[:, row, : self.num_frames(n)].numpy().copy() for row, n in enumerate(lengths)]

    @contextlib.contextmanager
    def _utterance_group_norm(
        self, first_frames: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None
    ) -> Iterator[None]:
        """Swap in per-utterance group norm for the first conv layer (group-norm models)."""
        if self._group_norm is None:
            yield
            return
        conv_layers = self.model.feature_extractor.conv_layers
        original = conv_layers[0]
        conv_layers[0] = _UtteranceGroupNormConv(original, first_frames, stats)
        try:
            yield
        finally:
            conv_layers[0] = original

    def _extract_chunked(self, x: np.ndarray) -> np.ndarray:
        """Features ``(layers, frames, dim)`` of one long normalised wave ``(samples,)`` from
        overlapping windows (see module doc)."""
        stride, field = self.total_stride, self.min_samples
        frames = self.num_frames(len(x))
        core = max(1, round(self.config.chunk_seconds * SAMPLE_RATE / stride))
        context = round(self.config.chunk_context_seconds * SAMPLE_RATE / stride)
        bounds = np.linspace(0, frames, math.ceil(frames / core) + 1).round().astype(int)
        stats = self._whole_utterance_stats(x) if self._group_norm is not None else None
        parts = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            first, last = max(0, start - context), min(frames, end + context)
            window = x[first * stride : (last - 1) * stride + field]
            (features,) = self._forward([window], stats)
            parts.append(features[:, start - first : end - first])
        return np.concatenate(parts, axis=1)

    def _whole_utterance_stats(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Group-norm mean and variance of the first conv layer over the whole wave, (1, groups)."""
        conv = self.model.feature_extractor.conv_layers[0].conv
        kernel, stride = self._kernels[0], self._strides[0]
        frames = (len(x) - kernel) // stride + 1
        block = _STATS_BLOCK_SAMPLES // stride
        groups = self._group_norm.num_groups
        total = torch.zeros(groups, dtype=torch.float64, device=self.device)
        total_sq = torch.zeros_like(total)
        with torch.inference_mode(), self._autocast():
            for start in range(0, frames, block):
                end = min(frames, start + block)
                piece = torch.from_numpy(x[start * stride : (end - 1) * stride + kernel]).to(self.device)
                y = conv(piece[None, None]).double()
                y = y.reshape(groups, -1)
                total += y.sum(1)
                total_sq += (y * y).sum(1)
        count = frames * (conv.out_channels // groups)
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0)
        return mean.float()[None], var.float()[None]


class _UtteranceGroupNormConv(nn.Module):
    """First conv layer of a group-norm model with per-utterance statistics.

    conv -> group norm whose mean/variance are either ``stats`` (given, shape
    ``(batch, groups)``) or computed over each utterance's first ``valid_frames`` output
    frames -> the layer's affine parameters -> activation.
    """

    def __init__(
        self,
        layer: nn.Module,
        valid_frames: torch.Tensor,
        stats: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.valid_frames = valid_frames
        self.stats = stats

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` (B, 1, samples) → (B, channels, frames)."""
        norm: nn.GroupNorm = self.layer.layer_norm
        y = self.layer.conv(hidden_states).float()
        batch, channels, frames = y.shape
        grouped = y.reshape(batch, norm.num_groups, channels // norm.num_groups, frames)
        if self.stats is None:
            valid = (torch.arange(frames, device=y.device)[None, :] < self.valid_frames[:, None]).float()
            valid = valid[:, None, None, :]
            count = self.valid_frames.float()[:, None] * (channels // norm.num_groups)
            mean = (grouped * valid).sum((2, 3)) / count
            var = (((grouped - mean[..., None, None]) * valid) ** 2).sum((2, 3)) / count
        else:
            mean, var = self.stats
        grouped = (grouped - mean[..., None, None]) * torch.rsqrt(var[..., None, None] + norm.eps)
        y = grouped.reshape(batch, channels, frames)
        y = y * norm.weight[None, :, None] + norm.bias[None, :, None]
        return self.layer.activation(y)


def parse_layers(spec: str, num_hidden_layers: int) -> list[int]:
    """``last`` | ``all`` | comma list of hidden-state indices in ``0..num_hidden_layers``."""
    text = str(spec).strip()
    top = num_hidden_layers
    if text == "last":
        return [top]
    if text == "all":
        return list(range(top + 1))
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--layers {spec!r}: expected 'last', 'all' or comma-separated hidden-state indices 0..{top}"
        ) from None
    bad = [layer for layer in layers if not 0 <= layer <= top]
    if bad:
        raise ConfigError(
            f"--layers {spec!r}: index {bad[0]} is out of range; this model has hidden states 0..{top} "
            "(0 = input to the first transformer layer)"
        )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"--layers {spec!r}: an index is repeated")
    return layers


def _read_do_normalize(model: str) -> bool:
    """``do_normalize`` of the model's preprocessor config; True when it has none."""
    from transformers import AutoFeatureExtractor

    try:
        processor = AutoFeatureExtractor.from_pretrained(model, trust_remote_code=False)
    except Exception:  # no or unreadable preprocessor config: the model's default applies
        return True
    rate = getattr(processor, "sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise ModelError(f"--model {model}: expects {rate} Hz audio, sermtl feeds {SAMPLE_RATE} Hz")
    return bool(getattr(processor, "do_normalize", True))


def _weight_files(model: str) -> list[Path]:
    """The weight file(s) ``from_pretrained`` reads, from the folder or the hub cache."""
    folder = Path(model)

    def locate(filename: str) -> Path | None:
        if folder.is_dir():
            path = folder / filename
            return path if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, filename)
        return Path(cached) if isinstance(cached, str) else None

    for filename in _WEIGHT_FILES:
        path = locate(filename)
        if path is None:
            continue
        if not filename.endswith(".index.json"):
            return [path]
        try:
            names = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(f"--model {model}: {path} is damaged (no weight_map)") from None
        shards = [locate(str(name)) for name in names]
        if all(shards):
            return shards  # type: ignore[return-value]
    return []


def _snapshot_revision(weight_files: list[Path]) -> str | None:
    """Commit hash of a hub-cache snapshot (``.../snapshots/<commit>/file``), else None."""
    if weight_files and weight_files[0].parent.parent.name == "snapshots":
        return weight_files[0].parent.name
    return None


def _sha256_files(paths: Sequence[Path]) -> str:
    """sha256 over the files' names and bytes, read in 1 MB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _sha256_state_dict(model: nn.Module) -> str:
    """sha256 over the state dict's names and tensor bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
