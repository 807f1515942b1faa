"""The feature-extractor interface and the device helper shared by all extractors."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from featurestore.errors import AudioError, ConfigError

_DEVICE_SPEC = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_problem(spec: Any) -> str | None:
    """Why ``spec`` is not a device name sermtl takes (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``, ``mps``), or ``None`` when it is one. Needs no torch."""
    if isinstance(spec, str) and _DEVICE_SPEC.match(spec):
        return None
    return f"{spec!r} is not a device (auto, cpu, cuda, cuda:N, mps)"


def gpu_absent(spec: str) -> bool:
    """Whether ``spec`` means the CPU on this machine, told without importing torch: ``cpu``,
    or ``auto`` where no GPU driver is present (no NVIDIA device node on Linux; macOS may
    have MPS, so there only ``cpu`` counts)."""
    if spec == "cpu":
        return True
    return (
        spec == "auto"
        and sys.platform.startswith("linux")
        and not any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd"))
    )


def resolve_device(spec: str = "auto") -> torch.device:  # noqa: F821
    """``auto`` → CUDA when available, else CPU; otherwise the named device.

    Asking for CUDA on a machine without it falls back to CPU with a warning, so a
    command line written for a GPU machine still runs elsewhere.
    """
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(spec)
    if problem:
        raise ConfigError(f"--device: {problem}")
    device = torch.device(spec)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {spec!r}: MPS is not available on this machine")
    if device.type == "cuda" and not torch.cuda.is_available():
        import warnings

        warnings.warn(f"--device {spec}: CUDA is not available, using the CPU", stacklevel=2)
        return torch.device("cpu")
    return device


class FeatureExtractor(abc.ABC):
    """Turns 16 kHz mono waves into frame features.

    Subclasses set :attr:`name`, keep their parameters in a frozen dataclass
    ``self.config``, and implement :meth:`extract_batch`. What a store records about the
    features is :meth:`describe`; two extractors with the same :meth:`fingerprint` give
    the same features.
    """

    name: ClassVar[str]
    config: Any
    #: Storage dtype and padded audio seconds per batch when the user names none.
    default_dtype: ClassVar[str] = "float32"
    default_batch_seconds: ClassVar[float] = 600.0

    @classmethod
    def from_description(cls, description: dict[str, Any], device: str = "auto") -> FeatureExtractor:
        """The extractor that gives the features a store's ``attrs["feature"]`` describes."""
        raise ConfigError(f"cannot rebuild a feature extractor for feature {cls.name!r}")

    @property
    def frame_rate(self) -> float:
        """Frames per second of audio, measured on one minute of input (0: one frame per
        utterance, whatever its length)."""
        return self.num_frames(60 * 16000) / 60.0

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Feature dimension per frame."""

    @property
    @abc.abstractmethod
    def num_layers(self) -> int:
        """Number of stored layers (1 for MFCC)."""

    @property
    def utterance_dim(self) -> int:
        """How many of the last values of each frame are one utterance-level vector, repeated
        (a fusion's functionals, :mod:`featurestore.features.fusion`); 0 for every single feature."""
        return 0

    @property
    @abc.abstractmethod
    def min_samples(self) -> int:
        """Shortest input (in samples) that gives at least one frame."""

    @abc.abstractmethod
    def num_frames(self, num_samples: int) -> int:
        """Frames produced for an input of ``num_samples`` samples."""

    @abc.abstractmethod
    def extract_batch(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Features of each wave.

        Parameters
        ----------
        waves : sequence of numpy.ndarray, each shape (samples,)
            16 kHz mono float32 waves, of any lengths.

        Returns
        -------
        list of numpy.ndarray, each shape (layers, frames, dim)
            float32 features, one array per wave, ``frames = num_frames(samples)``.
        """

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable record of everything that decides the features."""
        return {"feature": self.name, **dataclasses.asdict(self.config)}

    def fingerprint(self) -> str:
        """Short hash of :meth:`describe`; stores refuse to mix fingerprints."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_length(self, num_samples: int, utt_id: str) -> None:
        """Raise a one-line error when an input is too short for even one frame."""
        if num_samples < self.min_samples:
            raise AudioError(
                f"{utt_id}: {num_samples} samples is shorter than the {self.name} receptive field "
                f"({self.min_samples} samples = {self.min_samples / 16000 * 1000:.0f} ms)"
            )
