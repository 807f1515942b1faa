"""Feature extractors, found by name.

``mfcc``: 40-d MFCC in torch (:mod:`featurestore.features.mfcc`).
``w2v2``: hidden states of a frozen Hugging Face wav2vec2/HuBERT/WavLM model
(:mod:`featurestore.features.wav2vec2`); transformers is imported only when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from featurestore.errors import SermtlError
from featurestore.features.base import FeatureExtractor, resolve_device

#: name -> "module:class"; modules are imported on first use so the CLI starts fast.
FEATURES: dict[str, str] = {
    "mfcc": "featurestore.features.mfcc:MFCCExtractor",
    "w2v2": "featurestore.features.wav2vec2:SSLExtractor",
}


def build_extractor(name: str, **options: Any) -> FeatureExtractor:
    """Build the extractor registered as ``name`` with its keyword options."""
    if name not in FEATURES:
        raise SermtlError(f"unknown feature {name!r} (choose from: {', '.join(FEATURES)})")
    module_name, class_name = FEATURES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**options)


__all__ = ["FEATURES", "FeatureExtractor", "build_extractor", "resolve_device"]
