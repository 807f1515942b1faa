"""Feature extractors, found by name.

``mfcc``: 40-d MFCC in torch (:mod:`featurestore.features.mfcc`).
``fbank``: 80-band log-mel filterbank in torch (:mod:`featurestore.features.fbank`).
``w2v2``: hidden states of a frozen Hugging Face wav2vec2/HuBERT/WavLM model
(:mod:`featurestore.features.wav2vec2`); transformers is imported only when it is used.
``egemaps``, ``compare``: openSMILE low-level descriptors on the same 10 ms grid;
``egemaps-functionals``, ``compare-functionals``: openSMILE's utterance-level functionals
(:mod:`featurestore.features.opensmile_sets`; needs the ``opensmile`` extra).
"""

from __future__ import annotations

import inspect
from typing import Any

from featurestore.errors import ConfigError
from featurestore.features.base import FeatureExtractor, resolve_device
from featurestore.registry import Registry

#: The self-supervised model ``--feature w2v2`` uses unless ``--model`` names another (the paper's).
DEFAULT_SSL_MODEL = "facebook/wav2vec2-large-960h"
#: name -> "module:class"; modules are imported on first use so the CLI starts fast.
FEATURES = Registry(
    "--feature",
    {
        "mfcc": "featurestore.features.mfcc:MFCCExtractor",
        "fbank": "featurestore.features.fbank:FbankExtractor",
        "w2v2": "featurestore.features.wav2vec2:SSLExtractor",
        "egemaps": "featurestore.features.opensmile_sets:EGeMAPS",
        "compare": "featurestore.features.opensmile_sets:ComParE",
        "egemaps-functionals": "featurestore.features.opensmile_sets:EGeMAPSFunctionals",
        "compare-functionals": "featurestore.features.opensmile_sets:ComParEFunctionals",
    },
)


def feature_class(name: str) -> type[FeatureExtractor]:
    """The extractor class registered as ``name``."""
    return FEATURES.load(name)


def build_extractor(name: str, **options: Any) -> FeatureExtractor:
    """Build the extractor registered as ``name`` with its keyword options."""
    return feature_class(name)(**options)


def accepted_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` (not ``None``) that the extractor ``name`` takes: the command line
    offers every extractor's flags (``--model`` for ``w2v2``) and passes each its own."""
    taken = inspect.signature(feature_class(name)).parameters
    return {key: value for key, value in options.items() if key in taken and value is not None}


#: ``describe()`` keys that may differ between the extractor that made a store and one
#: rebuilt to compute the same features elsewhere (bf16 on a GPU vs float32 on a CPU).
RUNTIME_KEYS = frozenset({"precision"})


def extractor_from_description(description: dict[str, Any], device: str = "auto") -> FeatureExtractor:
    """Rebuild the extractor that a store's ``attrs["feature"]`` describes.

    Raises :class:`SermtlError` naming the differences when the rebuilt extractor would
    not give the same features (e.g. other model weights).
    """
    from featurestore.store.creation import config_differences

    if description.get("feature") == "fusion":  # a fused store's parts, each rebuilt and checked
        from featurestore.features.fusion import FusedExtractor, fusion_parts

        return FusedExtractor(
            [
                (extractor_from_description(part["feature"], device=device), part["dtype"], part["layer"])
                for part in fusion_parts(description)
            ]
        )
    extractor = feature_class(str(description.get("feature"))).from_description(description, device=device)
    expected = {k: v for k, v in description.items() if k not in RUNTIME_KEYS}
    rebuilt = {k: v for k, v in extractor.describe().items() if k not in RUNTIME_KEYS}
    differences = config_differences(expected, rebuilt)
    if differences:
        raise ConfigError(
            "the features cannot be recomputed as stored: " + "; ".join(differences).replace("in the store", "recorded")
        )
    return extractor


__all__ = [
    "FEATURES",
    "FeatureExtractor",
    "accepted_options",
    "build_extractor",
    "extractor_from_description",
    "feature_class",
    "resolve_device",
]
