"""Audio loading: formats, rates, channels, segments and bad files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featurestore.audio import audio_duration, decode_audio_bytes, load_audio, load_audio_file_native
from featurestore.errors import AudioError
from tests.conftest import write_av, write_tone


@pytest.mark.parametrize(
    "suffix,subtype", [(".wav", "PCM_16"), (".wav", "PCM_U8"), (".flac", "PCM_16"), (".ogg", "VORBIS")]
)
@pytest.mark.parametrize("sr", [8000, 16000, 44100, 48000])
def test_any_format_and_rate_becomes_16k_mono(tmp_path: Path, suffix: str, subtype: str, sr: int) -> None:
    path = write_tone(tmp_path / f"a{suffix}", 1.5, sr=sr, freq=440.0, channels=2, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 24000) <= 2
    assert abs(audio_duration(path) - 1.5) < 1e-3
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440.0) < 5  # the tone survived resampling


def _write_aac_mp4(path: Path, sr: int, seconds: float) -> Path:
    """A stereo 330 Hz tone as AAC in MP4 (a container libsndfile cannot read)."""
    av = pytest.importorskip("av")
    t = np.arange(int(sr * seconds)) / sr
    tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)

    def frames():
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(
                np.stack([tone[start : start + 1024]] * 2), format="fltp", layout="stereo"
            )
            frame.sample_rate = sr
            yield frame

    return write_av(path, "aac", sr, frames(), layout="stereo")


def test_mp4_audio_is_decoded(tmp_path: Path) -> None:
    seconds = 1.2
    path = _write_aac_mp4(tmp_path / "clip.mp4", 44100, seconds)
    wave = load_audio(path)
    assert abs(audio_duration(path) - seconds) < 0.03  # AAC frames are 1024 samples
    assert abs(len(wave) / 16000 - audio_duration(path)) < 0.001  # decoder end padding trimmed
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 330.0) < 5


@pytest.mark.parametrize("suffix", [".flac", ".mp4"])
def test_encoded_bytes_decode_like_their_file(tmp_path: Path, suffix: str) -> None:
    if suffix == ".mp4":
        path = _write_aac_mp4(tmp_path / "clip.mp4", 44100, 0.8)
    else:
        path = write_tone(tmp_path / "clip.flac", 0.8, sr=22050, channels=2)
    wave, rate = decode_audio_bytes(path.read_bytes(), "the bytes of row 3")
    native, native_rate = load_audio_file_native(path)
    assert rate == native_rate and wave.dtype == np.float32 and wave.ndim == 1
    # A file object has no duration for FFmpeg to trim the AAC end padding by.
    np.testing.assert_allclose(wave[: len(native)], native, atol=1e-6)
    with pytest.raises(AudioError, match=r"^cannot decode\b.*\bthe bytes of row 3 \("):
        decode_audio_bytes(b"not audio at all", "the bytes of row 3")


def test_segment_start_end(tmp_path: Path) -> None:
    sr = 16000
    ramp = np.arange(3 * sr, dtype=np.float32) / (3 * sr)
    path = tmp_path / "ramp.wav"
    sf.write(str(path), ramp, sr, subtype="FLOAT")
    segment = load_audio(path, start=1.0, end=1.5)
    np.testing.assert_array_equal(segment, ramp[sr : sr + sr // 2])


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: p, "not found"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty audio file"),
        (lambda p: (p.write_text("this is not audio"), p)[1], "cannot decode"),
        (lambda p: (sf.write(str(p), np.zeros(0, np.float32), 16000), p)[1], "no audio samples"),
        (lambda p: (sf.write(str(p), np.array([0.1, np.nan] * 100, np.float32), 16000, subtype="FLOAT"), p)[1], "NaN"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path / "bad file é.wav")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert needle in message and "bad file é.wav" in message and "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "locked.wav", 0.5)
    path.chmod(0)
    with pytest.raises(AudioError, match=rf"not readable\b.*{re.escape(str(path))}$"):
        load_audio(path)
