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


#: ``describe()`` keys that may differ between the extractor that made a store and one
#: rebuilt to compute the same features elsewhere (bf16 on a GPU vs float32 on a CPU).
RUNTIME_KEYS = frozenset({"precision"})


def extractor_from_description(description: dict[str, Any], device: str = "auto") -> FeatureExtractor:
    """Rebuild the extractor that a store's ``attrs["feature"]`` describes.

    Raises :class:`SermtlError` naming the differences when the rebuilt extractor would
    not give the same features (e.g. other model weights).
    """
    from featurestore.store.writer import config_differences

    name = description.get("feature")
    if name == "mfcc":
        from featurestore.features.mfcc import MFCCConfig

        fields = MFCCConfig.__dataclass_fields__
        extractor = build_extractor("mfcc", device=device, **{k: v for k, v in description.items() if k in fields})
    elif name == "w2v2":
        extractor = build_extractor(
            "w2v2", device=device, model=description["model"], layers=",".join(map(str, description["layers"])),
            chunk_seconds=description["chunk_seconds"], chunk_context_seconds=description["chunk_context_seconds"],
        )
    else:
        raise SermtlError(f"cannot rebuild a feature extractor for feature {name!r}")
    expected = {k: v for k, v in description.items() if k not in RUNTIME_KEYS}
    rebuilt = {k: v for k, v in extractor.describe().items() if k not in RUNTIME_KEYS}
    differences = config_differences(expected, rebuilt)
    if differences:
        raise SermtlError("the features cannot be recomputed as stored: " + "; ".join(differences).replace("in the store", "recorded"))
    return extractor


__all__ = ["FEATURES", "FeatureExtractor", "build_extractor", "extractor_from_description", "resolve_device"]
