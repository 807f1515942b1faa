"""Log-mel filterbank energies (``fbank``), batched in torch.

The log-mel stage of :mod:`featurestore.features.spectral`, stored as it is: 80 Slaney
mel bands (0–8 kHz) of the power spectrum of a 400-sample (25 ms) periodic Hamming
window in a 512-point FFT, hop 160 (10 ms), centred frames, ``10·log10(max(mel, 1e-10))``.
This equals ``librosa.power_to_db(librosa.feature.melspectrogram(y, sr=16000, n_fft=512,
hop_length=160, win_length=400, window="hamming", n_mels=80, fmax=8000), ref=1.0,
amin=1e-10, top_db=None)`` (checked in the tests), and gives the same frame grid as
``mfcc``: ``1 + n // 160`` frames for ``n`` samples.
"""

from __future__ import annotations

from typing import Any

from featurestore.features.spectral import LogMelExtractor


class FbankExtractor(LogMelExtractor):
    """80-band log-mel filterbank; see the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> FbankExtractor(device="cpu").extract_batch([np.zeros(16000, np.float32)])[0].shape
    (1, 101, 80)
    """

    name = "fbank"

    @property
    def dim(self) -> int:
        return self.config.n_mels

    def from_log_mel(self, log_mel: Any) -> Any:
        """The log-mel frames ``(frames, n_mels)`` themselves."""
        return log_mel
