"""The fbank and openSMILE features against their reference implementations, on real
speech from ../shared/data and on generated audio: values, frame grids, fingerprints,
rebuilding from a store's description, and the one-line errors."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from featurestore.audio import load_audio
from featurestore.errors import AudioError, ConfigError, SermtlError
from featurestore.features import FEATURES, build_extractor, extractor_from_description, feature_class

librosa = pytest.importorskip("librosa")
opensmile = pytest.importorskip("opensmile")

LLD_FEATURES = ("egemaps", "compare")
FUNCTIONAL_FEATURES = {"egemaps-functionals": ("eGeMAPSv02", 88), "compare-functionals": ("ComParE_2016", 6373)}


@pytest.fixture(scope="module")
def speech(shared_data) -> list[np.ndarray]:
    """Three real utterances at 16 kHz: Urdu (44.1 kHz source, resampled) and RAVDESS."""
    files = [
        sorted((shared_data / "urdu" / "Angry").glob("*.wav"))[0],
        sorted((shared_data / "urdu" / "Sad").glob("*.wav"))[1],
        sorted((shared_data / "ravdess_subset" / "Actor_01").glob("*.wav"))[0],
    ]
    return [load_audio(str(path)) for path in files]


@pytest.fixture(scope="module")
def generated() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(23456) / 16000
    return [
        (0.3 * np.sin(2 * np.pi * 160 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32),
        0.1 * rng.standard_normal(961).astype(np.float32),
        np.zeros(5000, np.float32),
    ]


def librosa_fbank(wave: np.ndarray, c) -> np.ndarray:
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
        norm="slaney",
    )
    return librosa.power_to_db(mel, ref=1.0, amin=c.log_floor, top_db=None).T


def test_fbank_matches_librosa_on_real_speech(speech, generated) -> None:
    extractor = build_extractor("fbank", device="cpu")
    waves = speech + generated
    for wave, ours in zip(waves, extractor.extract_batch(waves)):
        reference = librosa_fbank(wave, extractor.config)
        assert ours.shape == (1, *reference.shape) == (1, 1 + len(wave) // 160, 80)
        np.testing.assert_allclose(ours[0], reference, atol=2e-3, rtol=1e-4)


def test_fbank_other_parameters_match_librosa(speech) -> None:
    extractor = build_extractor("fbank", device="cpu", n_mels=40, window="hann", win_length=512, fmin=50.0, fmax=7000.0)
    np.testing.assert_allclose(
        extractor.extract_batch(speech[:1])[0][0], librosa_fbank(speech[0], extractor.config), atol=2e-3, rtol=1e-4
    )


@pytest.mark.parametrize("name", LLD_FEATURES)
def test_llds_are_opensmiles_own_values_on_the_mfcc_grid(name, speech, generated) -> None:
    extractor = build_extractor(name)
    mfcc = build_extractor("mfcc", device="cpu")
    for wave in speech + generated[:2]:
        table = extractor.process(wave)
        rows = table.to_numpy(dtype=np.float32)
        stored = extractor.extract_batch([wave])[0][0]
        assert stored.shape[0] == mfcc.extract_batch([wave])[0].shape[1] == 1 + len(wave) // 160
        shift = {"egemaps": 1, "compare": 3}[name]
        assert extractor.shift(table) == shift
        np.testing.assert_array_equal(stored[shift : shift + len(rows)], rows)
        np.testing.assert_array_equal(stored[:shift], np.repeat(rows[:1], shift, axis=0))  # edges repeat
        np.testing.assert_array_equal(
            stored[shift + len(rows) :], np.repeat(rows[-1:], len(stored) - shift - len(rows), axis=0)
        )
    assert extractor.dim == {"egemaps": 25, "compare": 65}[name]


@pytest.mark.parametrize("name", list(FUNCTIONAL_FEATURES))
def test_functionals_are_opensmiles_own(name, speech) -> None:
    feature_set, dim = FUNCTIONAL_FEATURES[name]
    reference = opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set), feature_level=opensmile.FeatureLevel.Functionals
    )
    extractor = build_extractor(name)
    stored = extractor.extract_batch(speech[:2])
    for wave, ours in zip(speech, stored):
        assert ours.shape == (1, 1, dim)
        np.testing.assert_array_equal(ours[0, 0], reference.process_signal(wave, 16000).to_numpy(np.float32)[0])
    assert extractor.num_frames(10 * 16000) == 1 and extractor.frame_rate == 0.0


@pytest.mark.parametrize("name", [*LLD_FEATURES, *FUNCTIONAL_FEATURES])
def test_opensmile_fingerprint_records_version_and_set(name) -> None:
    extractor = build_extractor(name)
    described = extractor.describe()
    assert described["opensmile_version"] == opensmile.__version__
    assert described["feature_set"] in ("eGeMAPSv02", "ComParE_2016")
    assert described["feature_level"] in ("LowLevelDescriptors", "Functionals")
    assert len({build_extractor(n).fingerprint() for n in (*LLD_FEATURES, *FUNCTIONAL_FEATURES)}) == 4
    assert extractor_from_description(described).fingerprint() == extractor.fingerprint()
    with pytest.raises(ConfigError, match=rf"opensmile 0\.0\.1\b.*\b{re.escape(opensmile.__version__)}\b"):
        extractor_from_description({**described, "opensmile_version": "0.0.1"})


@pytest.mark.parametrize("name", list(FEATURES))
def test_every_feature_is_one_registered_class_that_rebuilds_from_its_description(name, tmp_path) -> None:
    cls = feature_class(name)
    assert cls.name == name
    if name == "w2v2":  # needs a model folder: covered in test_wav2vec2.py
        return
    extractor = build_extractor(name, device="cpu")
    assert extractor_from_description(extractor.describe(), device="cpu").describe() == extractor.describe()


@pytest.mark.parametrize("name", [*LLD_FEATURES, *FUNCTIONAL_FEATURES])
def test_audio_shorter_than_opensmiles_window_is_one_line(name) -> None:
    extractor = build_extractor(name)
    extractor.check_length(960, "ok")
    with pytest.raises(AudioError, match=r"^u1: 959 samples\b.*\(960 samples = 60 ms\)$"):
        extractor.check_length(959, "u1")


def test_opensmile_missing_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opensmile", None)
    with pytest.raises(SermtlError, match=r"pip install 'sermtl\[opensmile\]'"):
        build_extractor("egemaps")


def test_mfcc_fingerprint_is_unchanged_so_existing_stores_stay_valid() -> None:
    """The MFCC config became a subclass of the log-mel config: same fields, same values,
    same fingerprint as the stores written before."""
    assert build_extractor("mfcc", device="cpu").fingerprint() == "00fddfd86a2942bb"
