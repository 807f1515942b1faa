"""Shared fixtures: small generated audio in real layouts, and the real corpora when present."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Training flags of the CLI tests that only need a run to exist: one epoch of a tiny network
#: on the CPU, without the auxiliary task.
TINY_TRAINING = "--epochs 1 --channels 16 --embedding-dim 8 --batch-size 8 --device cpu --aux none".split()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repo; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def write_tone(
    path: Path,
    seconds: float,
    sr: int = 16000,
    freq: float = 220.0,
    channels: int = 1,
    subtype: str = "PCM_16",
    seed: int = 0,
) -> Path:
    """A tone plus a little noise, written with soundfile (format from the suffix)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), sr, subtype=subtype)
    return path


def write_av(path: Path, codec: str, rate: int, frames, **stream_attrs) -> Path:
    """A media file of ``frames`` (PyAV frames) encoded with ``codec`` at ``rate``."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        for name, value in stream_attrs.items():
            setattr(stream, name, value)
        for frame in frames:
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV manifest of ``rows`` (columns from the rows, in order of first appearance)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def csv_corpus(tmp_path: Path) -> Path:
    """A CSV manifest of 12 wavs (3 speakers, 4 emotions, two expressions, 0.4-2.5 s) with relative paths."""
    root = tmp_path / "corpus"
    emotions = ["angry", "happy", "neutral", "sad"]
    rows = []
    for i in range(12):
        seconds = 0.4 + 0.19 * i
        rel = Path("audio") / f"utt {i:02d}.wav"
        write_tone(root / rel, seconds, freq=150 + 40 * (i % 4), seed=i)
        rows.append(
            {
                "utt_id": f"u{i:02d}",
                "path": str(rel),
                "emotion": emotions[i % 4],
                "speaker": f"spk{i % 3}",
                "expression": "acted" if i % 2 else "spontaneous",
                "gender": "F" if i % 3 else "M",
                "take": str(i),
            }
        )
    return write_manifest(root / "manifest.csv", rows)


@pytest.fixture
def manifest(csv_corpus: Path):
    """``csv_corpus`` as a :class:`~featurestore.manifest.Manifest`, each row's duration read
    from its audio header (modules with a ``manifest`` fixture of their own use theirs)."""
    from featurestore.audio import audio_duration
    from featurestore.manifest import Manifest

    rows = Manifest.read_csv(csv_corpus).to_records()
    for row in rows:
        row["duration"] = audio_duration(row["path"])
    return Manifest(rows)


@pytest.fixture(scope="session")
def iemocap_mfcc_store(tmp_path_factory) -> Path:
    """MFCC store of a 5-session synthetic IEMOCAP (60 utterances, 10 speakers), built once.

    Tests read it; a test that writes must copy it first.
    """
    import warnings

    from featurestore.corpora import prepare
    from featurestore.features.mfcc import MFCCExtractor
    from featurestore.pipeline import extract_to_store
    from featurestore.synthetic import make_iemocap

    root = tmp_path_factory.mktemp("iemocap_corpus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = prepare("iemocap", make_iemocap(root, utts_per_dialog=8, quirks=False))
    path = root / "cache" / "iemocap_mfcc.zarr"
    extract_to_store(manifest, MFCCExtractor(device="cpu"), path, progress=False)
    return path
