"""openSMILE feature sets (the ``opensmile`` package): eGeMAPSv02 and ComParE_2016.

Two kinds per set, each its own registered feature:

- ``egemaps`` / ``compare``: frame-level low-level descriptors (25 and 65 per frame),
  placed on the frame grid of the spectral features (``1 + n // 160`` frames, frame ``k``
  centred at ``k`` · 10 ms), so a frame store of any feature lines up with ``mfcc``.
  openSMILE's row ``r`` covers the analysis window that starts at ``r`` · 10 ms; it is
  stored as frame ``r + shift``, where ``shift`` is the window centre of row 0 in hops
  (1 for eGeMAPS' 20 ms frames, 3 for ComParE's 60 ms frames). The frames before the
  first row and after the last (where openSMILE's longest, 60 ms, window does not fit)
  repeat the nearest row. Between them the stored values are openSMILE's own.
- ``egemaps-functionals`` / ``compare-functionals``: openSMILE's utterance-level
  functionals (88 and 6373 values), stored as one frame per utterance, for
  ``sermtl baseline --functionals egemaps|compare``.

The store's fingerprint records the opensmile version, the feature set and the level.
Values are float32 and reach 1e6 and more (ComParE energies), so these features are stored
as float32 by default. Audio shorter than 60 ms (openSMILE's longest window) is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from featurestore.errors import ConfigError, SermtlError
from featurestore.features.base import FeatureExtractor

#: openSMILE's longest analysis window (60 ms at 16 kHz): shorter audio gives no frame.
MIN_SAMPLES = 960
HOP = 160


def _opensmile():
    try:
        import opensmile
    except ImportError:
        raise SermtlError(
            "the egemaps and compare features need the opensmile package: pip install 'sermtl[opensmile]'"
        ) from None
    return opensmile


@dataclasses.dataclass(frozen=True)
class OpenSmileConfig:
    """What decides the values: the set, the level and the opensmile version."""

    feature_set: str
    feature_level: str
    opensmile_version: str
    sample_rate: int = 16000


class OpenSmileExtractor(FeatureExtractor):
    """One openSMILE feature set at one level; subclasses name the set and the level."""

    feature_set: str
    feature_level: str

    def __init__(self, device: str = "auto", opensmile_version: str | None = None) -> None:
        installed = _opensmile().__version__
        if opensmile_version not in (None, installed):
            raise ConfigError(
                f"the store was made with opensmile {opensmile_version}; opensmile {installed} is installed"
            )
        self.config = OpenSmileConfig(self.feature_set, self.feature_level, installed)

    @classmethod
    def from_description(cls, description: dict[str, Any], device: str = "auto") -> OpenSmileExtractor:
        return cls(device=device, opensmile_version=description.get("opensmile_version"))

    @functools.cached_property
    def smile(self):
        """The ``opensmile.Smile`` of this set and level (built once)."""
        opensmile = _opensmile()
        return opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, self.feature_set),
            feature_level=getattr(opensmile.FeatureLevel, self.feature_level),
        )

    @property
    def dim(self) -> int:
        return len(self.smile.feature_names)

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def min_samples(self) -> int:
        return MIN_SAMPLES

    def process(self, wave: np.ndarray) -> pandas.DataFrame:  # noqa: F821
        """openSMILE's own output for one 16 kHz wave ``(samples,)``: a ``(rows, dim)`` table
        indexed by start and end time."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "segment too short": refused before
            return self.smile.process_signal(np.asarray(wave, dtype=np.float32), self.config.sample_rate)

    def extract_batch(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Features of each wave ``(samples,)``, float32 ``(1, frames, dim)``."""
        return [self.to_frames(self.process(wave), len(wave))[None] for wave in waves]

    def to_frames(self, table: pandas.DataFrame, num_samples: int) -> np.ndarray:  # noqa: F821
        """What is stored, float32 ``(frames, dim)``, of openSMILE's output ``table`` for a
        wave of ``num_samples``."""
        raise NotImplementedError


class LowLevelDescriptors(OpenSmileExtractor):
    """Frame-level LLDs on the spectral features' 10 ms grid (module docstring)."""

    feature_level = "LowLevelDescriptors"

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // HOP

    @staticmethod
    def shift(table: pandas.DataFrame) -> int:  # noqa: F821
        """Hops from the grid's frame 0 to the centre of openSMILE's first row."""
        start, end = (table.index.get_level_values(level)[0].total_seconds() for level in (0, 1))
        return int(round((start + end) / 2 * 16000 / HOP))

    def to_frames(self, table, num_samples):
        rows = table.to_numpy(dtype=np.float32)
        frames = self.num_frames(num_samples)
        before = min(self.shift(table), frames - 1)
        after = max(0, frames - before - len(rows))
        return np.pad(rows, ((before, after), (0, 0)), mode="edge")[:frames]


class Functionals(OpenSmileExtractor):
    """Utterance-level functionals, one stored frame per utterance."""

    feature_level = "Functionals"

    def num_frames(self, num_samples: int) -> int:
        return 1

    @property
    def frame_rate(self) -> float:
        return 0.0

    def to_frames(self, table, num_samples):
        return table.to_numpy(dtype=np.float32)[:1]


class EGeMAPS(LowLevelDescriptors):
    """eGeMAPSv02 low-level descriptors: 25 per 10 ms frame."""

    name = "egemaps"
    feature_set = "eGeMAPSv02"


class ComParE(LowLevelDescriptors):
    """ComParE_2016 low-level descriptors: 65 per 10 ms frame."""

    name = "compare"
    feature_set = "ComParE_2016"


class EGeMAPSFunctionals(Functionals):
    """eGeMAPSv02 functionals: 88 per utterance."""

    name = "egemaps-functionals"
    feature_set = "eGeMAPSv02"


class ComParEFunctionals(Functionals):
    """ComParE_2016 functionals: 6373 per utterance."""

    name = "compare-functionals"
    feature_set = "ComParE_2016"
