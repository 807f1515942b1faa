"""Audio loading: any file, rate and channel count to 16 kHz mono float32.

WAV/FLAC/OGG (and MP3 where libsndfile supports it) are read with soundfile, which can
seek to a segment without decoding the whole file; anything else (MP4/M4A video or audio,
or a file soundfile refuses) is decoded with PyAV, which bundles FFmpeg. Resampling uses
soxr (high quality). Channels are averaged.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from featurestore.errors import SermtlError
from featurestore.hf_audio import is_reference

TARGET_SR = 16000
#: Sampling rates accepted from a file's header; anything outside is refused as not audio
#: (a header claiming 1 Hz would turn a few kilobytes into hours of samples).
SAMPLE_RATE_RANGE = (4000, 768000)
#: Longest audio (file or segment) decoded by default, in seconds (``--max-duration``).
DEFAULT_MAX_DURATION = 600.0
_SIGNATURE_BYTES = 4096
_SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"}


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise SermtlError(f"audio file not found: {path}")
    if not path.is_file():
        raise SermtlError(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        raise SermtlError(f"audio file not readable (permissions): {path}")
    if path.stat().st_size == 0:
        raise SermtlError(f"empty audio file (0 bytes): {path}")


def check_audio_size(path: Path | str, sr: int, seconds: float | None, max_duration: float | None) -> None:
    """Refuse a sampling rate outside :data:`SAMPLE_RATE_RANGE` and audio longer than
    ``max_duration`` seconds (as ``--max-duration``), before anything is decoded or
    resampled: from a file's header, or from an array's length and rate (``Predictor``)."""
    low, high = SAMPLE_RATE_RANGE
    if not low <= sr <= high:
        raise SermtlError(f"{path}: sampling rate {sr} Hz is outside {low}..{high} Hz; not decoded")
    if max_duration is not None and seconds is not None and seconds > max_duration:
        raise SermtlError(f"{path}: {seconds:.1f} s of audio is longer than --max-duration {max_duration:g} s; not decoded")


def _read_soundfile(path: Path, start: float | None, end: float | None,
                    max_duration: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as handle:
        sr = handle.samplerate
        check_audio_size(path, sr, None, max_duration)
        first = int(round((start or 0.0) * sr))
        last = handle.frames if end is None else min(handle.frames, int(round(end * sr)))
        check_audio_size(path, sr, max(0, last - first) / sr, max_duration)
        handle.seek(min(first, handle.frames))
        data = handle.read(max(0, last - first), dtype="float32", always_2d=True)
    return data.mean(axis=1), sr


def _declared_samples(stream, sr: int) -> int | None:
    """Samples the container says the stream holds, when it says."""
    if stream.duration is None or stream.time_base is None:
        return None
    return int(round(float(stream.duration * stream.time_base) * sr))


def _read_pyav(source: Path | BinaryIO, label: str, start: float | None, end: float | None,
               max_duration: float | None) -> tuple[np.ndarray, int]:
    """Decode ``source`` (a path or a file object; ``label`` names it in errors) with FFmpeg."""
    import av

    try:
        container = av.open(source if hasattr(source, "read") else str(source))
    except Exception as exc:  # PyAV raises many FFmpeg error types
        raise SermtlError(f"cannot decode audio: {label} ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.audio:
            raise SermtlError(f"no audio stream in {label}")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate or stream.rate
        declared = _declared_samples(stream, sr)
        check_audio_size(label, sr or 0, None, max_duration)
        if declared is not None:
            first, last = int(round((start or 0.0) * sr)), declared if end is None else min(declared, int(round(end * sr)))
            check_audio_size(label, sr, max(0, last - first) / sr, max_duration)
        # Resample inside FFmpeg to planar float so every codec gives the same layout.
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sr)
        pieces = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray()[0])
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray()[0])
        except Exception as exc:
            raise SermtlError(f"cannot decode audio: {label} ({type(exc).__name__}: {exc})") from None
    wave = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    if declared is not None:
        wave = wave[:declared]  # drop the codec's end padding (AAC fills its last 1024-sample frame)
    first = int(round((start or 0.0) * sr))
    last = len(wave) if end is None else int(round(end * sr))
    return wave[first:last], sr


def decode_audio_bytes(data: bytes, label: str) -> tuple[np.ndarray, int]:
    """Encoded audio held in memory (a dataset's bytes) as mono float32 at its own rate:
    libsndfile first, FFmpeg for anything it refuses. ``label`` names the source in errors."""
    import soundfile as sf

    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return wave.mean(axis=1), int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not something libsndfile knows: let FFmpeg try
    return _read_pyav(io.BytesIO(data), label, None, None, None)


def _read_native(path: Path, start: float | None, end: float | None,
                 max_duration: float | None) -> tuple[np.ndarray, int]:
    """The file's samples (the segment ``start``..``end``), mono, at its own rate."""
    _check_readable(path)
    wave = sr = None
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            wave, sr = _read_soundfile(path, start, end, max_duration)
        except sf.LibsndfileError:
            wave = None  # not something libsndfile knows: let FFmpeg try
    if wave is None:
        wave, sr = _read_pyav(path, str(path), start, end, max_duration)
    return wave, sr


def load_audio_file_native(path: Path) -> tuple[np.ndarray, int]:
    """A whole file's samples, mono, at its own rate (for audio a dataset names by path)."""
    return _read_native(Path(path), None, None, None)


def _read_reference(reference: str, start: float | None, end: float | None,
                    max_duration: float | None) -> tuple[np.ndarray, int]:
    """A dataset reference's samples (:mod:`featurestore.hf_audio`), cut to the segment."""
    from featurestore.hf_audio import read_reference

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
    (:mod:`featurestore.hf_audio` references). Raises :class:`SermtlError` naming the file
    when it is missing, unreadable, empty, not audio, declares a sampling rate outside
    :data:`SAMPLE_RATE_RANGE`, is longer than ``max_duration`` seconds (``None``: no cap),
    holds no samples in the segment, or holds NaN/inf samples.
    """
    if start is not None and start < 0:
        raise SermtlError(f"segment start {start} < 0 for {path}")
    if start is not None and end is not None and end <= start:
        raise SermtlError(f"segment end {end} <= start {start} for {path}")
    if is_reference(path):
        wave, sr = _read_reference(str(path), start, end, max_duration)
    else:
        path = Path(path)
        wave, sr = _read_native(path, start, end, max_duration)
    if wave.size == 0:
        raise SermtlError(f"no audio samples in {path}" + (f" between {start}s and {end}s" if start or end else ""))
    if not np.isfinite(wave).all():
        raise SermtlError(f"NaN or infinite samples in {path}")
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
    _check_readable(path)
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
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
                raise SermtlError(f"no audio stream in {path}")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except SermtlError:
        raise
    except Exception as exc:
        raise SermtlError(f"cannot read audio header: {path} ({type(exc).__name__}: {exc})") from None
    return len(load_audio(path)) / TARGET_SR


def audio_signature(path: str | os.PathLike) -> int | None:
    """A fast content signature of an audio file: a 63-bit hash of its size and its first
    and last 4 KiB (a header holds the data size, so a re-recorded or re-encoded file
    with the same name almost surely differs). ``None`` when the file cannot be read. For
    a dataset reference, a hash of the referenced audio itself."""
    if is_reference(path):
        from featurestore.hf_audio import reference_signature

        return reference_signature(str(path))
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest = hashlib.blake2b(str(size).encode(), digest_size=8)
            digest.update(handle.read(_SIGNATURE_BYTES))
            if size > 2 * _SIGNATURE_BYTES:
                handle.seek(size - _SIGNATURE_BYTES)
            digest.update(handle.read(_SIGNATURE_BYTES))
    except OSError:
        return None
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)
