"""Audio loading: any file, rate and channel count to 16 kHz mono float32.

WAV/FLAC/OGG (and MP3 where libsndfile supports it) are read with soundfile, which can
seek to a segment without decoding the whole file; anything else (MP4/M4A video or audio,
or a file soundfile refuses) is decoded with PyAV, which bundles FFmpeg. Resampling uses
soxr (high quality). Channels are averaged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featurestore.decode import (
    SAMPLE_RATE_RANGE,
    SOUNDFILE_SUFFIXES,
    check_audio_size,
    check_readable,
    current_stat_key,
    decode_audio_bytes,
    file_identity,
    load_audio_file_native,
    read_native,
)
from featurestore.errors import AudioError, SermtlError
from featurestore.hf_audio import is_reference, read_reference, reference_signature

__all__ = [
    "DEFAULT_MAX_DURATION",
    "SAMPLE_RATE_RANGE",
    "TARGET_SR",
    "audio_duration",
    "audio_exists",
    "audio_identity",
    "audio_signature",
    "audio_stat_key",
    "check_audio_size",
    "decode_audio_bytes",
    "load_audio",
    "load_audio_file_native",
]

TARGET_SR = 16000
#: Longest audio (file or segment) decoded by default, in seconds (``--max-duration``).
DEFAULT_MAX_DURATION = 600.0


def _read_reference(
    reference: str, start: float | None, end: float | None, max_duration: float | None
) -> tuple[np.ndarray, int]:
    """A dataset reference's samples ``(samples,)`` (:mod:`featurestore.hf_audio`), cut to the
    segment, and their sampling rate."""
    wave, sr = read_reference(reference)
    check_audio_size(Path(reference), sr, len(wave) / sr if sr else None, None)
    first = int(round((start or 0.0) * sr))
    last = len(wave) if end is None else min(len(wave), int(round(end * sr)))
    check_audio_size(Path(reference), sr, max(0, last - first) / sr, max_duration)
    return wave[first:last], sr


def load_audio(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    target_sr: int = TARGET_SR,
    max_duration: float | None = DEFAULT_MAX_DURATION,
) -> np.ndarray:
    """Load ``path`` (optionally the segment ``start``..``end`` seconds) as mono float32 at ``target_sr``.

    ``path`` is a file, or audio inside a saved Hugging Face dataset
    (:mod:`featurestore.hf_audio` references).

    Returns
    -------
    numpy.ndarray, shape (samples,)
        Contiguous float32 samples at ``target_sr``.

    Raises
    ------
    SermtlError
        Naming the file, when it is missing, unreadable, empty, not audio, declares a
        sampling rate outside :data:`SAMPLE_RATE_RANGE`, is longer than ``max_duration``
        seconds (``None``: no cap), holds no samples in the segment, or holds NaN/inf
        samples.
    """
    if start is not None and start < 0:
        raise AudioError(f"segment start {start} < 0 for {path}")
    if start is not None and end is not None and end <= start:
        raise AudioError(f"segment end {end} <= start {start} for {path}")
    if is_reference(path):
        wave, sr = _read_reference(str(path), start, end, max_duration)
    else:
        path = Path(path)
        wave, sr = read_native(path, start, end, max_duration)
    if wave.size == 0:
        raise AudioError(f"no audio samples in {path}" + (f" between {start}s and {end}s" if start or end else ""))
    if not np.isfinite(wave).all():
        raise AudioError(f"NaN or infinite samples in {path}")
    if sr != target_sr:
        import soxr

        wave = soxr.resample(wave, sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(wave, dtype=np.float32)


def audio_exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` names audio that can be looked at: a file, or a dataset reference."""
    return is_reference(path) or Path(path).is_file()


def audio_duration(path: str | os.PathLike) -> float:
    """Length of the file in seconds, read from its header (no full decode where possible;
    a dataset reference is decoded)."""
    if is_reference(path):
        wave, sr = _read_reference(str(path), None, None, None)
        return len(wave) / sr
    path = Path(path)
    check_readable(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            info = sf.info(str(path))
            check_audio_size(path, info.samplerate, None, None)
            return info.frames / info.samplerate
        except sf.LibsndfileError:
            pass
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"no audio stream in {path}")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except SermtlError:
        raise
    except Exception as exc:
        raise AudioError(f"cannot read audio header: {path} ({type(exc).__name__}: {exc})") from None
    return len(load_audio(path)) / TARGET_SR


def audio_identity(path: str | os.PathLike) -> tuple[int | None, int | None]:
    """The content signature of audio (:func:`audio_signature`) and, for a file, the
    :func:`featurestore.decode.stat_key` of the state it was signed in (``None`` for a
    dataset reference, for a file changed within the last seconds, and when unreadable).

    A store records both for each entry, so that a later run sees with one ``stat`` that
    the file was not written since, and hashes it only when its key differs.
    """
    if is_reference(path):
        return reference_signature(str(path)), None
    return file_identity(path)


def audio_signature(path: str | os.PathLike) -> int | None:
    """A fast content signature of audio: of a file, :func:`featurestore.decode.file_signature`
    (its size and first and last 4 KiB); of a dataset reference, a hash of the referenced
    audio itself. ``None`` when it cannot be read."""
    return audio_identity(path)[0]


def audio_stat_key(path: str | os.PathLike) -> int | None:
    """The :func:`featurestore.decode.stat_key` of an audio file now (one ``stat``, nothing
    read); ``None`` for a dataset reference and for a file that is absent or not a file."""
    return None if is_reference(path) else current_stat_key(path)
