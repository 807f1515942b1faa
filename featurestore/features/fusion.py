"""The features of a fused store (:mod:`featurestore.store.fusion`) computed from waves.

A model trained on ``--store A --store B`` records the parts' feature descriptions; a
:class:`FusedExtractor` rebuilds each part's extractor, computes the parts of a wave, rounds
each to its store's dtype (as the stores held them), takes the layer the fusion took, and
joins them as :class:`~featurestore.store.fusion.FusedStore` does: frame parts side by side,
cut to the shortest, then the utterance-level vectors repeated on every frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from featurestore.errors import ConfigError
from featurestore.features.base import FeatureExtractor
from featurestore.schema import Anything, ListOf, MapOf, Number, Record, Text, check, maybe

#: A fused store's ``attrs["feature"]``: its parts, each a feature description, dtype and layer.
FUSION = Record(
    {
        "feature": Text(choices=("fusion",)),
        "parts": ListOf(
            Record(
                {
                    "feature": MapOf(Anything(), max_items=256),
                    "dtype": Text(choices=("float16", "float32")),
                    "layer": maybe(Number(0, 4096, integer=True)),
                }
            ),
            min_items=2,
            max_items=16,
        ),
    }
)


def feature_name(description: dict[str, Any]) -> str:
    """The name of the features a store's (or checkpoint's) ``feature`` entry describes:
    ``fbank``; for a fusion its parts, ``egemaps + fbank + egemaps-functionals``."""
    if description.get("feature") == "fusion":
        parts = description.get("parts") or []
        return " + ".join(str((part.get("feature") or {}).get("feature")) for part in parts)
    return str(description.get("feature"))


def fusion_parts(description: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of a fused store's ``attrs["feature"]``, checked against :data:`FUSION`
    (each part's own description is checked when its extractor is rebuilt:
    :func:`featurestore.features.extractor_from_description`)."""
    return check(description, FUSION, "feature", ConfigError)["parts"]


class FusedExtractor(FeatureExtractor):
    """The joined features of several extractors (module docstring). ``parts`` are
    ``(extractor, dtype, layer)``: the store dtype each part is rounded to and the layer
    taken (``None``: the only one)."""

    name = "fusion"

    def __init__(self, parts: Sequence[tuple[FeatureExtractor, str, int | None]]) -> None:
        self.parts = list(parts)
        self._framed = [extractor.frame_rate != 0 for extractor, _, _ in self.parts]
        if not any(self._framed):
            raise ConfigError("feature: a fusion needs a frame-level part")
        for extractor, _, layer in self.parts:
            if layer is not None and layer >= extractor.num_layers:
                raise ConfigError(
                    f"feature: a part takes layer {layer} of {extractor.name}, which has {extractor.num_layers}"
                )

    @property
    def utterance_dim(self) -> int:
        return sum(e.dim for (e, _, _), framed in zip(self.parts, self._framed) if not framed)

    def describe(self) -> dict[str, Any]:
        return {
            "feature": self.name,
            "parts": [
                {"feature": extractor.describe(), "dtype": dtype, "layer": layer}
                for extractor, dtype, layer in self.parts
            ],
        }

    @property
    def frame_rate(self) -> float:
        return next(e.frame_rate for (e, _, _), framed in zip(self.parts, self._framed) if framed)

    @property
    def dim(self) -> int:
        return sum(extractor.dim for extractor, _, _ in self.parts)

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def min_samples(self) -> int:
        return max(extractor.min_samples for extractor, _, _ in self.parts)

    def num_frames(self, num_samples: int) -> int:
        return min(e.num_frames(num_samples) for (e, _, _), framed in zip(self.parts, self._framed) if framed)

    def extract_batch(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``(1, frames, dim)`` joined features per wave, float32 holding each part's store values."""
        computed = [
            [
                (f[layer if layer is not None else 0]).astype(dtype).astype(np.float32)
                for f in extractor.extract_batch(waves)
            ]
            for extractor, dtype, layer in self.parts
        ]
        out = []
        for i in range(len(waves)):
            frames = min(part[i].shape[0] for part, framed in zip(computed, self._framed) if framed)
            blocks = [
                part[i][:frames] if framed else np.repeat(part[i][:1], frames, axis=0)
                for part, framed in zip(computed, self._framed)
            ]
            out.append(np.concatenate(blocks, axis=1)[None])
        return out
