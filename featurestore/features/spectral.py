"""Batched log-mel spectra in torch (GPU when available): the stage ``fbank`` stores and
``mfcc`` turns into cepstra.

One recipe, checked against librosa with the same parameters in the tests:

- 16 kHz input, a periodic window of ``win_length`` samples zero-padded to an ``n_fft``
  FFT, hop ``hop_length`` (10 ms), frames centred (``n_fft // 2`` zeros each side), so an
  utterance of ``n`` samples gives ``1 + n // hop_length`` frames (100 a second) for every
  spectral feature alike;
- power spectrum → ``n_mels`` Slaney-style mel bands (``fmin``–``fmax``, area-normalised
  triangles);
- ``10·log10(max(mel, log_floor))`` (no top-dB clipping, which would depend on the
  utterance's loudest frame; no mean/variance normalisation: the trainer normalises).

A batch is computed without padding: the frames of all its utterances are cut from one
signal in which each utterance keeps its own frame grid and centring zeros, then go
through one FFT and one matrix product together. Batching therefore changes no frame's
input, and short utterances cost nothing extra beside long ones. The values can still
differ at about 1e-5 between batch compositions (matrix-product kernels depend on the row
count), so only one-by-one extraction (``--max-batch 1``) is bit-for-bit repeatable
across different batchings, such as a resumed run.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from featurestore.errors import ConfigError, unknown_choice
from featurestore.features.base import FeatureExtractor, device_problem, gpu_absent, resolve_device

WINDOWS = ("hamming", "hann")
#: Frames transformed at once (:func:`frame_slices`): with 400-sample windows in a 512-point
#: FFT, about 15 MB of intermediates, whatever ``--batch-seconds`` is.
SLICE_FRAMES = 4096


@functools.cache
def real_fft() -> Callable[[np.ndarray], np.ndarray]:
    """The real FFT over the last axis of a C-contiguous float32 array, as ``scipy.fft.rfft``
    computes it (complex64, bit for bit): scipy's pocketfft kernel, loaded on its own.

    Importing ``scipy.fft`` also parses the docstrings of its 135 functions, 0.1–0.3 s of an
    ``extract`` that takes about a second on a small corpus; the kernel itself loads in a
    millisecond. Where it cannot be found or loaded (another scipy layout), or gives another
    result than ``scipy.fft.rfft`` on a probe, ``scipy.fft.rfft`` is used instead.
    """
    import importlib.util
    from pathlib import Path

    probe = np.linspace(-1.0, 1.0, 2 * 64, dtype=np.float32).reshape(2, 64)
    try:
        spec = importlib.util.find_spec("scipy")
        folder = Path(spec.origin).parent / "fft" / "_pocketfft"
        library = next(folder.glob("pypocketfft.*"))
        loader = importlib.util.spec_from_file_location("pypocketfft", library)
        kernel = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(kernel)

        def transform(frames: np.ndarray) -> np.ndarray:
            return kernel.r2c(frames, (frames.ndim - 1,), True, 0, None, 1)

        if np.allclose(transform(probe), np.fft.rfft(probe), atol=1e-5):
            return transform
    except Exception:  # any other layout or failure: the public function below
        pass
    import scipy.fft

    return functools.partial(scipy.fft.rfft, axis=-1)


def frame_slices(total: int, size: int = SLICE_FRAMES) -> list[tuple[int, int]]:
    """``(start, stop)`` of the slices ``total`` frames are transformed in: ``size`` frames
    each, the last taking in a remainder shorter than half a slice. No slice is ever short
    (unless the whole batch is), because matrix products of a few rows take another kernel
    path with other rounding: so slicing leaves every value as one product of all rows gives.

    >>> frame_slices(10000, 4096)
    [(0, 4096), (4096, 10000)]
    >>> frame_slices(12000, 4096)
    [(0, 4096), (4096, 8192), (8192, 12000)]
    """
    starts = list(range(0, total, size)) or [0]
    if len(starts) > 1 and total - starts[-1] < size // 2:
        starts.pop()
    return [(lo, hi) for lo, hi in zip(starts, [*starts[1:], total])]


def periodic_window(name: str, length: int) -> np.ndarray:
    """A periodic ``hamming`` or ``hann`` window of ``length`` samples, float32 (as torch's
    ``*_window(periodic=True)`` and librosa's ``get_window`` give)."""
    n = np.arange(length, dtype=np.float64)
    alpha = 0.54 if name == "hamming" else 0.5
    return (alpha - (1.0 - alpha) * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
    """Every parameter that decides log-mel values (``fbank``'s defaults); all of it goes
    into the store."""

    sample_rate: int = 16000
    n_mels: int = 80
    n_fft: int = 512
    win_length: int = 400
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
    normalisation: str = "none"


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(
        freq >= min_log_hz, min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, freq / f_sp
    )


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


def check_spectral_config(config: Any) -> None:
    """One-line errors for parameters the log-mel recipe cannot use."""
    if config.window not in WINDOWS:
        raise unknown_choice("window", config.window, WINDOWS)
    if not 0 < config.win_length <= config.n_fft:
        raise ConfigError(f"win_length {config.win_length} must be in 1..n_fft ({config.n_fft})")
    if config.hop_length < 1:
        raise ConfigError(f"hop_length must be at least 1, got {config.hop_length}")
    if not 0 <= config.fmin < config.fmax <= config.sample_rate / 2:
        raise ConfigError(
            f"mel band edges must satisfy 0 <= fmin < fmax <= {config.sample_rate // 2}, "
            f"got {config.fmin}..{config.fmax}"
        )


class LogMelExtractor(FeatureExtractor):
    """Batched torch log-mel spectra (see the module docstring); subclasses map the log-mel
    frames to what they store with :meth:`from_log_mel`; their ``config_class`` is
    :class:`LogMelConfig` or a subclass of it."""

    config_class: type[LogMelConfig] = LogMelConfig

    def __init__(self, device: str = "auto", **params: Any) -> None:
        self.config = self.config_class(**params)
        check_spectral_config(self.config)
        problem = device_problem(device)
        if problem:
            raise ConfigError(f"--device: {problem}")
        self._device_spec = device

    @classmethod
    def from_description(cls, description: dict[str, Any], device: str = "auto") -> LogMelExtractor:
        fields = cls.config_class.__dataclass_fields__
        return cls(device=device, **{k: v for k, v in description.items() if k in fields})

    @functools.cached_property
    def _on_numpy(self) -> bool:
        """Whether this extractor computes with numpy: on the CPU, where numpy's FFT and
        matrix product are as fast as torch's and a process need not load torch at all."""
        return gpu_absent(self._device_spec)

    @functools.cached_property
    def _kernels(self) -> tuple[Any, Any, Any]:
        """Device (``None`` for numpy), window ``(win_length,)`` and mel matrix
        ``(n_mels, n_fft // 2 + 1)``, built on first use (torch is imported only for a GPU, so
        a CPU run, or a resumed run with nothing left to do, never loads it)."""
        c = self.config
        mel = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)
        window = periodic_window(c.window, c.win_length)
        if self._on_numpy:
            return None, window, mel
        import torch

        device = resolve_device(self._device_spec)
        return device, torch.from_numpy(window).to(device), torch.from_numpy(mel).to(device)

    @property
    def num_layers(self) -> int:
        return 1

    @property
    def min_samples(self) -> int:
        """One whole analysis window: shorter input is mostly padding."""
        return self.config.win_length

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.config.hop_length

    @abc.abstractmethod
    def from_log_mel(self, log_mel: Any) -> Any:
        """What is stored, ``(frames, dim)``, for log-mel frames ``(frames, n_mels)`` (a numpy
        array on the CPU, a torch tensor on a GPU; the result of the same kind)."""

    def extract_batch(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Features of each wave ``(samples,)``, float32 ``(1, frames, dim)``.

        The frames are transformed :data:`SLICE_FRAMES` at a time, so the working set stays
        bounded however long the batch; slicing changes no value (:func:`frame_slices`)."""
        signal, first_frames, counts = self._frame_layout(waves)
        index = np.concatenate([np.arange(f, f + n) for f, n in zip(first_frames, counts)]).astype(np.int64)
        out = np.empty((len(index), self.dim), dtype=np.float32)
        transform = self._numpy_slices if self._on_numpy else self._torch_slices
        for (lo, hi), features in zip(frame_slices(len(index)), transform(signal, index)):
            out[lo:hi] = features
        bounds = np.cumsum([0, *counts])
        return [out[lo:hi][None] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def _numpy_slices(self, signal: np.ndarray, index: np.ndarray) -> Iterator[np.ndarray]:
        """Stored features ``(frames, dim)`` of each slice of frame numbers ``index``, in numpy."""
        rfft = real_fft()  # batched float32 FFTs, 10x numpy's
        c = self.config
        _, window, mel_matrix = self._kernels
        left = (c.n_fft - c.win_length) // 2  # the window's non-zero part, centred in n_fft
        grid = np.lib.stride_tricks.sliding_window_view(signal[left:], c.win_length)[:: c.hop_length]
        for lo, hi in frame_slices(len(index)):
            frames = np.zeros((hi - lo, c.n_fft), np.float32)  # windowed frames, zero-padded to n_fft
            np.multiply(grid[index[lo:hi]], window, out=frames[:, : c.win_length])
            spec = rfft(frames)  # a shift inside n_fft leaves |spec|
            if c.power == 2.0:  # re² + im²: no square root
                power = np.square(spec.real)
                power += np.square(spec.imag)
            else:
                power = np.abs(spec) ** c.power
            del spec
            mel = power @ mel_matrix.T  # (frames, n_mels)
            np.log10(np.maximum(mel, np.float32(c.log_floor), out=mel), out=mel)
            mel *= 10.0
            yield self.from_log_mel(mel)

    def _torch_slices(self, signal: np.ndarray, index: np.ndarray) -> Iterator[np.ndarray]:
        """As :meth:`_numpy_slices`, in torch on the extractor's device (a GPU)."""
        import torch

        c = self.config
        device, window, mel_matrix = self._kernels
        signal_t = torch.from_numpy(signal).to(device, non_blocking=True)
        index_t = torch.from_numpy(index).to(device)
        left = (c.n_fft - c.win_length) // 2
        with torch.inference_mode():
            grid = signal_t[left:].unfold(0, c.win_length, c.hop_length)
            for lo, hi in frame_slices(len(index)):
                spec = torch.fft.rfft(grid.index_select(0, index_t[lo:hi]) * window, n=c.n_fft)
                power = spec.real.square() + spec.imag.square() if c.power == 2.0 else spec.abs().pow(c.power)
                log_mel = 10.0 * torch.log10(torch.clamp(power @ mel_matrix.T, min=c.log_floor))
                yield self.from_log_mel(log_mel).float().cpu().numpy()

    def _frame_layout(self, waves: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int], list[int]]:
        """All waves in one zero-separated signal whose frame grid is every utterance's own.

        Each wave gets its centring zeros and is padded to a multiple of the hop, so the
        signal's frame ``first_frames[i] + k`` is frame ``k`` of wave ``i`` alone; the
        frames of a batch are computed together without padding them to the longest wave.

        Parameters
        ----------
        waves : sequence of numpy.ndarray, each shape (samples,)
            The batch's waves.

        Returns
        -------
        signal : numpy.ndarray, shape (total_samples,)
            float32: each wave in its own whole-hop span, with its centring zeros, then
            ``n_fft`` zeros.
        first_frames : list of int
            Index of each wave's first frame in the signal's frame grid.
        counts : list of int
            Frames of each wave.
        """
        c = self.config
        pad = c.n_fft // 2 if c.center else 0
        hop = c.hop_length
        counts = [max(0, (len(w) + 2 * pad - c.n_fft) // hop + 1) for w in waves]
        spans = [-(-(len(w) + 2 * pad) // hop) * hop for w in waves]  # whole hops per wave
        signal = np.zeros(sum(spans) + c.n_fft, dtype=np.float32)
        first_frames, offset = [], 0
        for wave, span in zip(waves, spans):
            signal[offset + pad : offset + pad + len(wave)] = wave
            first_frames.append(offset // hop)
            offset += span
        return signal, first_frames, counts
