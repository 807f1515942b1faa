"""MFCC against librosa with the same parameters, batching invariance, recorded config."""

from __future__ import annotations

import numpy as np
import pytest

from featurestore.features import build_extractor
from featurestore.features.mfcc import MFCCExtractor

librosa = pytest.importorskip("librosa")


def librosa_mfcc(wave: np.ndarray, c) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=wave,
        sr=c.sample_rate,
        n_fft=c.n_fft,
        win_length=c.win_length,
        hop_length=c.hop_length,
        window=c.window,
        center=c.center,
        pad_mode="constant",
        n_mels=c.n_mels,
        fmin=c.fmin,
        fmax=c.fmax,
        power=c.power,
        htk=c.mel_scale == "htk",
        norm=c.mel_norm,
    )
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=c.log_floor, top_db=None)
    return librosa.feature.mfcc(S=log_mel, n_mfcc=c.n_mfcc, dct_type=c.dct_type, norm=c.dct_norm, lifter=c.lifter).T


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(40000) / 16000
    speechy = (0.4 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return [
        speechy,
        0.05 * rng.standard_normal(16000).astype(np.float32),
        0.2 * rng.standard_normal(8123).astype(np.float32),
        np.zeros(4000, np.float32),
    ]


def test_matches_librosa(waves) -> None:
    extractor = MFCCExtractor(device="cpu")
    for wave, ours in zip(waves, extractor.extract_batch(waves)):
        reference = librosa_mfcc(wave, extractor.config)
        assert ours.shape == (1, *reference.shape) == (1, 1 + len(wave) // 160, 40)
        np.testing.assert_allclose(ours[0], reference, atol=2e-3, rtol=1e-4)


def test_other_parameters_also_match_librosa(waves) -> None:
    extractor = MFCCExtractor(device="cpu", n_mels=40, n_mfcc=13, fmin=20.0, fmax=7600.0, n_fft=320)
    ours = extractor.extract_batch(waves[:1])[0][0]
    np.testing.assert_allclose(ours, librosa_mfcc(waves[0], extractor.config), atol=2e-3, rtol=1e-4)


def test_batched_equals_one_by_one(waves) -> None:
    extractor = MFCCExtractor(device="cpu")
    batched = extractor.extract_batch(waves)
    for wave, together in zip(waves, batched):
        alone = extractor.extract_batch([wave])[0]
        np.testing.assert_allclose(together, alone, atol=1e-4)


def test_100_frames_per_second_and_every_parameter_recorded() -> None:
    extractor = build_extractor("mfcc", device="cpu")
    assert extractor.num_frames(16000 * 7) == 701
    described = extractor.describe()
    for key in (
        "n_mfcc",
        "n_mels",
        "fmin",
        "fmax",
        "log_floor",
        "dct_type",
        "dct_norm",
        "window",
        "win_length",
        "hop_length",
        "normalisation",
    ):
        assert key in described
    assert described["feature"] == "mfcc" and described["win_length"] == 320 and described["hop_length"] == 160
    assert extractor.fingerprint() != MFCCExtractor(device="cpu", n_mels=40).fingerprint()
    assert extractor.fingerprint() == MFCCExtractor(device="cpu").fingerprint()
