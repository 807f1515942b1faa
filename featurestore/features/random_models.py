"""Self-supervised speech models with random weights, saved like a hub checkpoint.

Tests, ``sermtl demo`` and ``bench/`` need a wav2vec 2.0 / HuBERT / WavLM model without
network access. :func:`save_random_ssl_model` builds one from a config, initialises it
from a seed (the library's own weight init under ``torch.manual_seed``), and writes the
model (``config.json`` + ``model.safetensors``) and a ``Wav2Vec2FeatureExtractor``
preprocessor config (16 kHz, ``do_normalize=True``) into a folder, so that
``SSLExtractor(model=str(folder))`` loads it offline through ``AutoModel``.

Sizes:

``tiny``
    2 transformer layers, hidden size 32, 2 heads, feed-forward 64, 32 conv channels, a
    16-wide positional conv in 2 groups. The conv kernels and strides are the real ones,
    so the receptive field (400 samples) and the frame rate (one frame per 320 samples)
    are those of the real models. Runs in milliseconds on a CPU.
``large``
    The ``facebook/wav2vec2-large-960h`` architecture: hidden 1024, 24 layers, 16 heads,
    feed-forward 4096, 512 conv channels, 128-wide positional conv in 16 groups,
    group norm in the first conv layer, post-layer-norm transformer (about 315 M
    parameters, 1.2 GB on disk). For benchmarks and a realistic demo.

``feat_extract_norm="layer"`` gives the layer-norm conv stack with conv biases and the
pre-layer-norm ("stable") transformer, as in wav2vec2-large-lv60 / HuBERT-large.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurestore.errors import ModelError, unknown_choice

KINDS = ("wav2vec2", "hubert", "wavlm")
SIZES = ("tiny", "large")
NORMS = ("group", "layer")

_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)

_SIZE_OPTIONS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    ),
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_dim=(512,) * 7,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
    ),
}


def save_random_ssl_model(
    out_dir: str | Path,
    kind: str = "wav2vec2",
    size: str = "tiny",
    feat_extract_norm: str = "group",
    seed: int = 0,
) -> Path:
    """Build a ``kind`` model of ``size`` with random weights from ``seed`` and save it.

    Returns ``out_dir``. The same arguments always give the same weights.
    """
    for flag, value, choices in (
        ("kind", kind, KINDS),
        ("size", size, SIZES),
        ("feat_extract_norm", feat_extract_norm, NORMS),
    ):
        if value not in choices:
            raise unknown_choice(f"random SSL model: {flag}", value, choices, ModelError)

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()

    config_cls, model_cls = {
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
        "hubert": (transformers.HubertConfig, transformers.HubertModel),
        "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
    }[kind]
    layer_norm = feat_extract_norm == "layer"
    config = config_cls(
        **_SIZE_OPTIONS[size],
        conv_kernel=_CONV_KERNEL,
        conv_stride=_CONV_STRIDE,
        conv_bias=layer_norm,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=layer_norm,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=layer_norm,
    ).save_pretrained(out)
    return out
