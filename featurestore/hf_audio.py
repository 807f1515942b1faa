"""Audio that lives inside a Hugging Face dataset saved with ``save_to_disk``.

A manifest row names such audio with a reference in its ``path`` column::

    hf:<dataset folder, URL-quoted>#<split>/<column>/<row>

(``split`` is ``-`` for a plain ``Dataset``). :func:`featurestore.audio.load_audio`,
``audio_signature`` and ``audio_duration`` accept these references beside file paths, so
extraction, resume, ``verify`` and ``--repair`` work the same for both. The audio column may
hold decoded arrays (``{"array", "sampling_rate"}``), encoded bytes (an ``Audio`` column, read
undecoded: ``{"bytes", "path"}``, decoded with soundfile, or PyAV for other containers) or
file paths. ``datasets`` is imported only when such a reference is read, and read back as
plain Python values whatever format (``set_format("numpy")``, ``"torch"``) it was saved with.
An array that is not one or two dimensions of numbers, or a ``sampling_rate`` that is not a
whole number of Hz in :data:`featurestore.decode.SAMPLE_RATE_RANGE`, is one line naming the
reference (its dataset, split, column and row).
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.decode import SAMPLE_RATE_RANGE, decode_audio_bytes, file_signature, load_audio_file_native
from featurestore.errors import AudioError, SermtlError, describe_error, quote

PREFIX = "hf:"
_LOCK = threading.Lock()


def is_reference(path: Any) -> bool:
    """Whether ``path`` is a dataset reference, not a file path."""
    return isinstance(path, str) and path.startswith(PREFIX)


def make_reference(folder: str | Path, split: str | None, column: str, row: int) -> str:
    """The reference of row ``row`` of ``column`` in split ``split`` of the dataset at ``folder``."""
    quoted = urllib.parse.quote(str(Path(folder).resolve()), safe="/")
    return f"{PREFIX}{quoted}#{split or '-'}/{urllib.parse.quote(column, safe='')}/{row}"


def parse_reference(reference: str) -> tuple[str, str | None, str, int]:
    """``(folder, split, column, row)`` of a reference; one line when it is malformed."""
    try:
        folder, _, rest = reference[len(PREFIX) :].rpartition("#")
        split, column, row = rest.split("/")
        return urllib.parse.unquote(folder), None if split == "-" else split, urllib.parse.unquote(column), int(row)
    except ValueError:
        raise AudioError(f"{reference!r} is not a dataset reference (hf:<folder>#<split>/<column>/<row>)") from None


def load_dataset_folder(folder: str | Path):
    """``datasets.load_from_disk(folder)``: a ``Dataset`` or ``DatasetDict``, one line when it
    is not one (or ``datasets`` is missing)."""
    try:
        import datasets
    except ImportError:
        raise SermtlError("Hugging Face datasets need the datasets package: pip install 'sermtl[hf]'") from None
    try:
        return datasets.load_from_disk(str(folder))
    except Exception as exc:  # datasets raises many types for a folder it cannot read
        raise AudioError(f"{folder}: not a dataset saved with save_to_disk ({describe_error(exc)})") from None


@functools.lru_cache(maxsize=8)
def _table(folder: str, split: str | None, column: str):
    """The split's ``column``, with ``Audio`` columns left undecoded (opened once per process)."""
    loaded = load_dataset_folder(folder)
    if split is not None:
        if split not in loaded:
            raise AudioError(f"{folder}: no split {split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[split]
    elif hasattr(loaded, "keys") and not hasattr(loaded, "features"):
        raise AudioError(f"{folder} holds splits ({', '.join(loaded)}); the reference names none")
    loaded = loaded.with_format(None)  # saved after set_format("numpy"/"torch"): plain values
    if column not in loaded.column_names:
        raise AudioError(f"{folder}: no column {column!r} (columns: {', '.join(loaded.column_names)})")
    feature = loaded.features[column]
    if type(feature).__name__ == "Audio" and getattr(feature, "decode", False):
        import datasets

        loaded = loaded.cast_column(column, datasets.Audio(decode=False))
    return loaded.select_columns([column])


def _value(reference: str) -> Any:
    folder, split, column, row = parse_reference(reference)
    with _LOCK:  # the first open of a dataset is not thread-safe; reads after it are cheap
        table = _table(folder, split, column)
    if not 0 <= row < len(table):
        raise AudioError(f"{reference}: row {row} is outside the split's {len(table)} rows")
    return table[row][column]


def _samples(array: Any, reference: str) -> np.ndarray:
    """A dataset's audio array as float32 samples (one or two dimensions), one line otherwise."""
    try:
        samples = np.asarray(array)
    except (ValueError, TypeError):  # rows of different lengths
        samples = None
    if samples is None or samples.dtype.kind not in "iuf" or samples.ndim not in (1, 2):
        raise AudioError(f"{reference}: the audio array is not one or two dimensions of numbers ({quote(array, 80)})")
    return samples.astype(np.float32)


def _sampling_rate(value: Any, reference: str) -> int:
    """A dataset's ``sampling_rate``, checked against :data:`featurestore.decode.SAMPLE_RATE_RANGE`."""
    low, high = SAMPLE_RATE_RANGE
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
        or not low <= value <= high
    ):
        raise AudioError(f"{reference}: sampling_rate {quote(value)} is not a whole number of Hz in {low}..{high}")
    return int(value)


def read_reference(reference: str) -> tuple[np.ndarray, int]:
    """``(wave, sampling rate)`` of a reference: ``wave`` mono float32 ``(samples,)`` at the
    stored rate."""
    value = _value(reference)
    if isinstance(value, dict) and value.get("array") is not None:
        wave = _samples(value["array"], reference)
        wave = wave.mean(axis=0) if wave.ndim == 2 and wave.shape[0] < wave.shape[1] else wave
        wave = wave.mean(axis=1) if wave.ndim == 2 else wave
        return wave, _sampling_rate(value.get("sampling_rate"), reference)
    if isinstance(value, dict) and value.get("bytes"):
        return decode_audio_bytes(value["bytes"], f"the audio bytes of {reference}")
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, str) and path:
        return load_audio_file_native(Path(path))
    raise AudioError(f"{reference}: holds no audio (neither an array, bytes nor a path)")


def reference_signature(reference: str) -> int | None:
    """A 63-bit content hash of the referenced audio (its bytes, array or file), ``None``
    when it cannot be read."""
    try:
        value = _value(reference)
        array = value.get("array") if isinstance(value, dict) else None
        samples = None if array is None else _samples(array, reference)
    except SermtlError:
        return None
    digest = hashlib.blake2b(digest_size=8)
    if samples is not None:
        digest.update(samples.tobytes())
        digest.update(str(value.get("sampling_rate")).encode())
    elif isinstance(value, dict) and value.get("bytes"):
        digest.update(value["bytes"])
    else:
        path = value.get("path") if isinstance(value, dict) else value
        return file_signature(path) if isinstance(path, str) and path else None
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)
