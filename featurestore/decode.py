"""Decoding audio at its own rate: files (soundfile, or PyAV for what libsndfile refuses)
and encoded bytes held in memory, with the checks made before anything is decoded.

The layer under :mod:`featurestore.audio` (which resamples to 16 kHz and reads dataset
references) and :mod:`featurestore.hf_audio` (which reads audio inside a saved dataset).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from featurestore.errors import AudioError

#: Sampling rates accepted from a file's header; anything outside is refused as not audio
#: (a header claiming 1 Hz would turn a few kilobytes into hours of samples).
SAMPLE_RATE_RANGE = (4000, 768000)
_SIGNATURE_BYTES = 4096
#: How long (ns) a file must have been left unchanged before its :func:`stat_key` is recorded
#: (:func:`settled`): well above any file system's timestamp granularity.
SETTLED_NS = 2_000_000_000
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au"}


def check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioError(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        raise AudioError(f"audio file not readable (permissions): {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"empty audio file (0 bytes): {path}")


def check_audio_size(path: Path | str, sr: int, seconds: float | None, max_duration: float | None) -> None:
    """Refuse a sampling rate outside :data:`SAMPLE_RATE_RANGE` and audio longer than
    ``max_duration`` seconds (as ``--max-duration``), before anything is decoded or
    resampled: from a file's header, or from an array's length and rate (``Predictor``)."""
    low, high = SAMPLE_RATE_RANGE
    if not low <= sr <= high:
        raise AudioError(f"{path}: sampling rate {sr} Hz is outside {low}..{high} Hz; not decoded")
    if max_duration is not None and seconds is not None and seconds > max_duration:
        raise AudioError(
            f"{path}: {seconds:.1f} s of audio is longer than --max-duration {max_duration:g} s; not decoded"
        )


def _read_soundfile(
    path: Path, start: float | None, end: float | None, max_duration: float | None
) -> tuple[np.ndarray, int]:
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


def _read_pyav(
    source: Path | BinaryIO, label: str, start: float | None, end: float | None, max_duration: float | None
) -> tuple[np.ndarray, int]:
    """Decode ``source`` (a path or a file object; ``label`` names it in errors) with FFmpeg:
    mono float32 samples ``(samples,)`` of the segment, and the sampling rate."""
    import av

    try:
        container = av.open(source if hasattr(source, "read") else str(source))
    except Exception as exc:  # PyAV raises many FFmpeg error types
        raise AudioError(f"cannot decode audio: {label} ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"no audio stream in {label}")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate or stream.rate
        declared = _declared_samples(stream, sr)
        check_audio_size(label, sr or 0, None, max_duration)
        if declared is not None:
            first, last = (
                int(round((start or 0.0) * sr)),
                declared if end is None else min(declared, int(round(end * sr))),
            )
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
            raise AudioError(f"cannot decode audio: {label} ({type(exc).__name__}: {exc})") from None
    wave = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    if declared is not None:
        wave = wave[:declared]  # drop the codec's end padding (AAC fills its last 1024-sample frame)
    first = int(round((start or 0.0) * sr))
    last = len(wave) if end is None else int(round(end * sr))
    return wave[first:last], sr


def decode_audio_bytes(data: bytes, label: str) -> tuple[np.ndarray, int]:
    """Encoded audio held in memory (a dataset's bytes) as mono float32 samples ``(samples,)``
    and its own rate: libsndfile first, FFmpeg for anything it refuses. ``label`` names the
    source in errors."""
    import soundfile as sf

    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return wave.mean(axis=1), int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass  # not something libsndfile knows: let FFmpeg try
    return _read_pyav(io.BytesIO(data), label, None, None, None)


def read_native(
    path: Path, start: float | None, end: float | None, max_duration: float | None
) -> tuple[np.ndarray, int]:
    """The file's samples ``(samples,)`` (the segment ``start``..``end``), mono float32, and
    its own rate."""
    check_readable(path)
    wave = sr = None
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            wave, sr = _read_soundfile(path, start, end, max_duration)
        except sf.LibsndfileError:
            wave = None  # not something libsndfile knows: let FFmpeg try
    if wave is None:
        wave, sr = _read_pyav(path, str(path), start, end, max_duration)
    return wave, sr


def load_audio_file_native(path: Path) -> tuple[np.ndarray, int]:
    """A whole file's samples ``(samples,)``, mono float32, and its own rate (for audio a
    dataset names by path)."""
    return read_native(Path(path), None, None, None)


def stat_key(info: os.stat_result) -> int:
    """A 63-bit hash of what the file system says about a file's state: its size,
    modification and change times (nanoseconds) and inode.

    Any write to the file moves its change time (``st_ctime_ns``), which no user call can
    set back (``touch -d`` and ``cp -p`` set the modification time only, and move the
    change time too), and a file put in its place by a rename has another inode; so while
    the key stays the same, the content has not been written to since.
    """
    fields = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    digest = hashlib.blake2b(repr(fields).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def current_stat_key(path: str | os.PathLike) -> int | None:
    """:func:`stat_key` of the file at ``path`` now (one ``stat`` call, nothing read);
    ``None`` when it is not a regular file that can be looked at."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat_key(info) if stat.S_ISREG(info.st_mode) else None


def settled(info: os.stat_result, now_ns: int | None = None) -> bool:
    """Whether the file has not been changed for :data:`SETTLED_NS` (by its modification
    and change times): only then does its :func:`stat_key` vouch for its content. A file
    written twice within one tick of the file system's clock keeps the times of the first
    write, so the key of a file changed just now could also name the content of a write
    still to come in that tick."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return now_ns - max(info.st_mtime_ns, info.st_ctime_ns) >= SETTLED_NS


def _signature_of_open_file(handle: BinaryIO, size: int) -> int:
    digest = hashlib.blake2b(str(size).encode(), digest_size=8)
    digest.update(handle.read(_SIGNATURE_BYTES))
    if size > 2 * _SIGNATURE_BYTES:
        handle.seek(size - _SIGNATURE_BYTES)
    digest.update(handle.read(_SIGNATURE_BYTES))
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def file_identity(path: str | os.PathLike) -> tuple[int | None, int | None]:
    """The file's content signature (:func:`file_signature`) and the :func:`stat_key` of
    the state it was read in, both from one open file.

    Returns
    -------
    tuple[int | None, int | None]
        ``(signature, key)``; the key is ``None`` while the file is not :func:`settled`
        (it is then not worth recording), both are ``None`` when the file cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            signature = _signature_of_open_file(handle, info.st_size)
    except (OSError, ValueError):
        return None, None
    return signature, stat_key(info) if settled(info) else None


def file_signature(path: str | os.PathLike) -> int | None:
    """A fast content signature of an audio file: a 63-bit hash of its size and its first
    and last 4 KiB (a header holds the data size, so a re-recorded or re-encoded file
    with the same name almost surely differs). ``None`` when the file cannot be read."""
    return file_identity(path)[0]
