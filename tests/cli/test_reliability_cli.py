"""The bad-input matrix, through the command line.

Every audio item is added to a manifest beside two good utterances already in a store.
Unusual but valid audio is stored. Bad audio makes ``--on-error fail`` (the default) stop
with exit 1 and one line naming the file, leaving the store as it was; ``--on-error skip``
stores the rest and lists the item in the store's report, ``info`` and ``verify``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from featurestore import open_store
from featurestore.synthetic import make_emodb
from tests.cli.test_cli import run
from tests.conftest import write_av, write_manifest, write_tone

GOOD = {"g1": 1.2, "g2": 0.8}


def _samples(path: Path, values, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), np.asarray(values, np.float32), 16000, subtype=subtype)
    return path


def _clipped(path: Path) -> Path:
    t = np.arange(16000) / 16000
    return _samples(path, np.clip(3.0 * np.sin(2 * np.pi * 200 * t), -1.0, 1.0), "PCM_16")


def _mp3(path: Path) -> Path:
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    return write_tone(path, 1.0, subtype="MPEG_LAYER_III")


def _video_only_mp4(path: Path) -> Path:
    av = pytest.importorskip("av")
    frames = (av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24") for _ in range(5))
    return write_av(path, "mpeg4", 10, frames, width=32, height=32, pix_fmt="yuv420p")


def _truncated_header(path: Path) -> Path:
    write_tone(path, 1.0)
    path.write_bytes(path.read_bytes()[:30])
    return path


def _unreadable(path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading")
    write_tone(path, 1.0).chmod(0)
    return path


ACCEPTED: dict[str, tuple[str, Callable[[Path], Path], float]] = {
    "clipped audio": ("clipped.wav", _clipped, 1.0),
    "stereo": ("stereo.wav", lambda p: write_tone(p, 1.0, channels=2), 1.0),
    "8-bit": ("u8.wav", lambda p: write_tone(p, 1.0, subtype="PCM_U8"), 1.0),
    "8 kHz": ("narrow.wav", lambda p: write_tone(p, 1.0, sr=8000), 1.0),
    "48 kHz": ("wide.wav", lambda p: write_tone(p, 1.0, sr=48000), 1.0),
    "MP3": ("tone.mp3", _mp3, 1.0),
    "FLAC": ("tone.flac", lambda p: write_tone(p, 1.0), 1.0),
    "OGG": ("tone.ogg", lambda p: write_tone(p, 1.0, subtype="VORBIS"), 1.0),
    "spaces and non-ASCII in the path": ("a folder/ünï cødé 文字.wav", lambda p: write_tone(p, 1.0), 1.0),
}

REFUSED: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "empty file": ("empty.wav", lambda p: (p.write_bytes(b""), p)[1], "empty audio file (0 bytes)"),
    "zero samples": ("zero.wav", lambda p: _samples(p, np.zeros(0)), "no audio samples in"),
    # the manifest row is the segment 2-3 s of a 0.5 s file
    "segment past the end of the file": ("half-second.wav", lambda p: write_tone(p, 0.5), "no audio samples in"),
    "NaN samples": ("nan.wav", lambda p: _samples(p, [0.1, np.nan] * 800), "NaN or infinite samples in"),
    "inf samples": ("inf.wav", lambda p: _samples(p, [0.1, np.inf] * 800), "NaN or infinite samples in"),
    "MP4 without an audio stream": ("video.mp4", _video_only_mp4, "no audio stream in"),
    "truncated WAV header": ("cut.wav", _truncated_header, "cannot decode audio"),
    "text file named .wav": (
        "notes.wav",
        lambda p: (p.write_text("not audio, just text\n"), p)[1],
        "cannot decode audio",
    ),
    "missing file": ("gone.wav", lambda p: p, "audio file not found"),
    "unreadable permissions": ("locked.wav", _unreadable, "not readable (permissions)"),
}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    """A store holding two good utterances, and their manifest rows."""
    root = tmp_path_factory.mktemp("good")
    rows = [
        {"utt_id": u, "path": str(write_tone(root / f"{u}.wav", s, seed=i)), "emotion": "sad", "speaker": "s1"}
        for i, (u, s) in enumerate(GOOD.items())
    ]
    manifest = write_manifest(root / "good.csv", rows)
    run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", root / "good.zarr")
    return root / "good.zarr", rows


def _with_item(tmp_path: Path, good_store, name: str, make: Callable[[Path], Path]) -> tuple[Path, Path, Path]:
    """A copy of the good store, the item's file, and a manifest with the good rows and the item."""
    store, rows = good_store
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    audio = tmp_path / "audio" / name
    audio.parent.mkdir(parents=True, exist_ok=True)
    audio = make(audio)
    item = {"utt_id": "item", "path": str(audio), "emotion": "sad", "speaker": "s2"}
    if name == "half-second.wav":
        item.update(start="2.0", end="3.0")
    manifest = write_manifest(tmp_path / "m.csv", [*rows, item])
    return copy, audio, manifest


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_unusual_but_valid_audio_is_stored(tmp_path, good_store, case) -> None:
    name, make, seconds = ACCEPTED[case]
    store, _, manifest = _with_item(tmp_path, good_store, name, make)
    result = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", store)
    assert "1 stored, 2 already there, 0 skipped" in result.output
    features = open_store(store).read("item")
    assert abs(features.shape[0] - seconds * 100) <= 3 and np.isfinite(features).all()
    assert "0 problem(s), 0 missing" in run("verify", store).output


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_audio_fails_in_one_line_or_is_skipped_and_listed(tmp_path, good_store, case) -> None:
    name, make, needle = REFUSED[case]
    store, audio, manifest = _with_item(tmp_path, good_store, name, make)
    before = {u: open_store(store).read(u) for u in GOOD}
    failed = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", store, ok=False)
    line = failed.output.strip().splitlines()[-1]
    assert failed.exit_code == 1 and line.startswith("error: ") and needle in line and audio.name in line
    kept = open_store(store)
    assert kept.ids() == list(GOOD)
    for utt_id, features in before.items():
        np.testing.assert_array_equal(kept.read(utt_id), features)

    skipped = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", store, "--on-error", "skip")
    assert "0 stored, 2 already there, 1 skipped" in skipped.output and f"skipped item: {line[7:]}" in skipped.output
    info = run("info", store).output
    assert "2 of 3 manifest rows (1 missing, 1 skipped)" in info and f"skipped   item: {line[7:]}" in info
    verify = run("verify", store, ok=False)
    assert verify.exit_code == 1 and "missing: item" in verify.output and "skipped: item:" in verify.output


def test_shorter_than_the_wav2vec2_receptive_field(tmp_path, good_store) -> None:
    from featurestore.features.random_models import save_random_ssl_model

    model = save_random_ssl_model(tmp_path / "tiny", size="tiny")
    _, audio, manifest = _with_item(tmp_path, good_store, "short.wav", lambda p: _samples(p, np.full(399, 0.1)))
    args = (
        "extract",
        "--manifest",
        manifest,
        "--feature",
        "w2v2",
        "--model",
        model,
        "--store",
        tmp_path / "w.zarr",
        "--device",
        "cpu",
    )
    failed = run(*args, ok=False)
    line = failed.output.strip().splitlines()[-1]
    assert failed.exit_code == 1 and "399 samples is shorter than the w2v2 receptive field (400 samples" in line
    assert audio.name in line
    assert "1 skipped" in run(*args, "--on-error", "skip").output
    assert open_store(tmp_path / "w.zarr").ids() == list(GOOD)


def _duplicate_ids(tmp_path: Path) -> list[str]:
    rows = [
        {"utt_id": "same", "path": str(write_tone(tmp_path / f"{n}.wav", 0.5)), "emotion": "sad", "speaker": "s"}
        for n in ("first", "second")
    ]
    return ["extract", "--manifest", str(write_manifest(tmp_path / "m.csv", rows)), "--feature", "mfcc"]


def _label_outside_the_class_map(tmp_path: Path) -> list[str]:
    root = make_emodb(tmp_path / "emodb", speakers=("03",), texts=("a01",), quirks=False)
    write_tone(root / "wav" / "03a01Xa.wav", 0.5)  # EmoDB has no emotion letter X
    return ["prepare", "--corpus", "emodb", "--root", str(root), "--out", str(tmp_path / "out.csv")]


@pytest.mark.parametrize(
    "make,needles",
    [
        (_duplicate_ids, ["duplicate utterance id 'same'", "second.wav", "first.wav"]),
        (_label_outside_the_class_map, ["03a01Xa.wav", "unknown emotion label 'X'"]),
    ],
    ids=["duplicate utterance ids", "label outside the class map"],
)
def test_bad_manifests_fail_in_one_line(tmp_path, monkeypatch, make, needles) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*make(tmp_path), ok=False)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert all(needle in result.output for needle in needles)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out.csv").exists()  # nothing written


def test_one_process_resumes_an_interrupted_torchrun_extraction_from_its_shards(tmp_path, good_store) -> None:
    from featurestore.distributed import shard_dir

    _, rows = good_store
    manifest = write_manifest(tmp_path / "m.csv", rows)
    shards = shard_dir(tmp_path / "s.zarr")
    shutil.copytree(good_store[0], shards / "rank-0.zarr")  # a shard holding both utterances
    result = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", tmp_path / "s.zarr")
    assert f"{shards}: 2 entries of an interrupted torchrun run taken in" in result.output
    assert "0 stored, 2 already there" in result.output and not shards.exists()
    for utt_id in GOOD:
        np.testing.assert_array_equal(
            open_store(tmp_path / "s.zarr").read(utt_id), open_store(good_store[0]).read(utt_id)
        )
    assert "0 problem(s), 0 missing" in run("verify", tmp_path / "s.zarr").output


def test_verify_lists_a_damaged_entry_and_extract_repair_fixes_it(tmp_path, good_store) -> None:
    import zarr

    store, rows = good_store
    copy = shutil.copytree(store, tmp_path / "s.zarr")
    manifest = write_manifest(tmp_path / "m.csv", rows)
    clean = open_store(store).read("g2")
    group = zarr.open_group(str(copy), mode="r+")
    group["features"][0, int(group["index"][1, 0]) + 2, 0] = np.inf
    verify = run("verify", copy, ok=False)
    assert verify.exit_code == 1 and "problem: g2: NaN or infinite values" in verify.output
    repaired = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", copy, "--repair")
    assert "1 stored, 1 already there, 0 skipped, 1 repaired" in repaired.output
    assert "0 problem(s), 0 missing" in run("verify", copy).output
    np.testing.assert_allclose(open_store(copy).read("g2"), clean, atol=1e-5)
