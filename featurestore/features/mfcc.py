"""40-d MFCC in torch, batched (GPU when available).

The paper's baseline: 40 coefficients, 20 ms Hamming window, 10 ms hop. The paper says
nothing more, so the rest follows librosa's defaults, which a test checks against
``librosa.feature.mfcc`` with the same parameters:

- 16 kHz input, window 320 samples (20 ms, periodic Hamming) zero-padded to a 512-point
  FFT, hop 160 samples (10 ms), frames centred (``n_fft // 2`` zeros each side), so an
  utterance of ``n`` samples gives ``1 + n // 160`` frames (100 a second);
- power spectrum → 64 Slaney-style mel bands (0–8 kHz, area-normalised triangles);
- ``10·log10(max(mel, 1e-10))`` (no top-dB clipping, which would depend on the utterance's
  loudest frame);
- DCT-II with orthonormal scaling, first 40 coefficients, no liftering, no mean/variance
  normalisation (the trainer normalises).

Zero padding inside a batch does not change any valid frame: every frame of an utterance
sees the same zeros past its end that it would see alone.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from featurestore.features.base import FeatureExtractor, resolve_device


@dataclasses.dataclass(frozen=True)
class MFCCConfig:
    """Every parameter that decides the MFCC values; all of it goes into the store."""

    sample_rate: int = 16000
    n_mfcc: int = 40
    n_mels: int = 64
    n_fft: int = 512
    win_length: int = 320
    hop_length: int = 160
    window: str = "hamming"
    center: bool = True
    fmin: float = 0.0
    fmax: float = 8000.0
    mel_scale: str = "slaney"
    mel_norm: str = "slaney"
    power: float = 2.0
    log_floor: float = 1e-10
    log: str = "10*log10"
    dct_type: int = 2
    dct_norm: str = "ortho"
    lifter: int = 0
    normalisation: str = "none"


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(freq >= min_log_hz, min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, freq / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape ``(n_mels, n_fft // 2 + 1)``."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]
    return weights.astype(np.float32)


def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II basis, shape ``(n_mfcc, n_mels)``."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi / n_mels * (n + 0.5) * k) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


class MFCCExtractor(FeatureExtractor):
    """Batched torch MFCC; see the module docstring for the exact recipe.

    >>> import numpy as np
    >>> ex = MFCCExtractor(device="cpu")
    >>> ex.extract_batch([np.zeros(16000, np.float32)])[0].shape
    (1, 101, 40)
    """

    name = "mfcc"

    def __init__(self, device: str = "auto", **params) -> None:
        self.config = MFCCConfig(**params)
        self._device_spec = device

    @functools.cached_property
    def _kernels(self) -> tuple["torch.device", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:  # noqa: F821
        """Device, window, mel matrix and DCT matrix, built on first use (torch is imported
        only then, so a resumed run with nothing left to do never loads it)."""
        import torch

        c = self.config
        device = resolve_device(self._device_spec)
        window = torch.hamming_window(c.win_length, periodic=True, device=device)
        mel = torch.from_numpy(mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)).to(device)
        dct = torch.from_numpy(dct_matrix(c.n_mfcc, c.n_mels)).to(device)
        return device, window, mel, dct

    @property
    def dim(self) -> int:
        return self.config.n_mfcc

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def min_samples(self) -> int:
        return 1

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.config.hop_length

    def extract_batch(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        c = self.config
        device, window, mel_matrix, dct = self._kernels
        lengths = [len(w) for w in waves]
        batch = torch.zeros(len(waves), max(lengths), dtype=torch.float32)
        for row, wave in enumerate(waves):
            batch[row, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
        batch = batch.to(device, non_blocking=True)
        with torch.inference_mode():
            pad = c.n_fft // 2 if c.center else 0
            spec = torch.stft(
                torch.nn.functional.pad(batch, (pad, pad)),
                n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                window=window, center=False, return_complex=True,
            )
            power = spec.abs().pow(c.power)  # (B, freq, frames)
            mel = torch.matmul(mel_matrix, power)  # (B, n_mels, frames)
            log_mel = 10.0 * torch.log10(torch.clamp(mel, min=c.log_floor))
            mfcc = torch.matmul(dct, log_mel).transpose(1, 2)  # (B, frames, n_mfcc)
            mfcc = mfcc.float().cpu().numpy()
        return [mfcc[row, : self.num_frames(n)][None] for row, n in enumerate(lengths)]
