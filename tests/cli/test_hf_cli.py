"""A Hugging Face dataset saved to disk as a corpus: audio as bytes or arrays at any rate,
read from the dataset at extraction time, with resume, verify and one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from tests.cli.test_cli import run
from tests.conftest import TINY_TRAINING as TINY

datasets = pytest.importorskip("datasets")
EMOTIONS = ["angry", "happy", "sad"]


def tone(seconds: float, rate: int, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * noise).astype(np.float32)


def wav_bytes(wave: np.ndarray, rate: int, format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=format)
    return buffer.getvalue()


def audio_dataset(n: int, rate: int, offset: int = 0, broken: int | None = None):
    """An ``Audio`` column of encoded bytes (FLAC at ``rate``), ClassLabel emotions, speakers."""
    audio = [
        {
            "bytes": b"not audio at all"
            if i == broken
            else wav_bytes(tone(0.6 + 0.05 * i, rate, 140 + 70 * (i % 3), i + offset), rate, "FLAC"),
            "path": None,
        }
        for i in range(n)
    ]
    table = datasets.Dataset.from_dict(
        {"audio": audio, "emotion": [i % 3 for i in range(n)], "speaker": [f"s{(i // 3) % 3}" for i in range(n)]},
        features=datasets.Features(
            {
                "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                "emotion": datasets.ClassLabel(names=EMOTIONS),
                "speaker": datasets.Value("string"),
            }
        ),
    )
    return table.cast_column("audio", datasets.Audio())  # an Audio column as save_to_disk stores it


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    base = tmp_path_factory.mktemp("hf")
    datasets.DatasetDict({"train": audio_dataset(12, 22050), "test": audio_dataset(6, 44100, offset=50)}).save_to_disk(
        str(base / "bytes_ds")
    )
    arrays = {
        "wave": [{"array": tone(0.7, 8000, 200 + 40 * i, i).tolist(), "sampling_rate": 8000} for i in range(6)],
        "label": ["Angry", "Sad", "Happy"] * 2,
        "who": ["a", "b", "c"] * 2,
    }
    datasets.Dataset.from_dict(arrays).save_to_disk(str(base / "array_ds"))
    return base


def test_prepare_extract_verify_and_cv_on_a_saved_datasetdict(saved, tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    result = run(
        "prepare",
        "--corpus",
        "hf",
        "--root",
        saved / "bytes_ds",
        "--option",
        "label=emotion",
        "--option",
        "speaker=speaker",
        "--out",
        manifest,
    )
    assert "18 utterances" in result.output
    from featurestore.manifest import Manifest

    rows = Manifest.read_csv(manifest)
    assert rows["train-4"]["emotion"] == "happy" and rows["test-2"]["split"] == "test"
    assert rows["train-0"]["duration"] == pytest.approx(0.6, abs=1e-3) and rows["train-0"]["path"].startswith("hf:")
    store = tmp_path / "s.zarr"
    run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", store, "--device", "cpu")
    again = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", store, "--device", "cpu").output
    assert "0 stored, 18 already there" in again  # resumed: the dataset's audio signatures match
    assert "0 problem(s), 0 missing" in run("verify", store).output
    from featurestore import open_store
    from featurestore.audio import load_audio
    from featurestore.features import build_extractor

    expected = build_extractor("mfcc", device="cpu").extract_batch([load_audio(rows["test-1"]["path"])])[0][0]
    np.testing.assert_allclose(open_store(store).read("test-1"), expected, atol=1e-4)
    out = tmp_path / "run"
    run("cv", "--store", store, "--protocol", "group-kfold", "--by", "speaker", "--folds", "3", "--out", out, *TINY)
    assert len(json.loads((out / "results.json").read_text())["folds"]) == 3


def test_arrays_at_any_rate_and_named_columns(saved, tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    run(
        "prepare",
        "--corpus",
        "hf",
        "--root",
        saved / "array_ds",
        "--option",
        "label=label",
        "--option",
        "speaker=who",
        "--option",
        "audio=wave",
        "--out",
        manifest,
    )
    from featurestore.audio import load_audio
    from featurestore.manifest import Manifest

    rows = Manifest.read_csv(manifest)
    assert rows["array_ds-1"]["emotion"] == "sad" and rows["array_ds-1"]["speaker"] == "b"
    wave = load_audio(rows["array_ds-0"]["path"])
    assert len(wave) == round(0.7 * 16000)  # 8 kHz arrays resampled to 16 kHz


def test_bad_datasets_are_one_line(saved, tmp_path) -> None:
    result = run(
        "prepare",
        "--corpus",
        "hf",
        "--root",
        saved / "bytes_ds",
        "--option",
        "label=mood",
        "--out",
        tmp_path / "m.csv",
        ok=False,
    )
    assert (
        result.exit_code == 1
        and "--option label=mood:" in result.output
        and "has no such column (columns: audio, emotion, speaker)" in result.output
    )
    result = run("prepare", "--corpus", "hf", "--root", tmp_path, "--out", tmp_path / "m.csv", ok=False)
    assert result.exit_code == 1 and "not a dataset saved with save_to_disk" in result.output
    broken = tmp_path / "broken_ds"
    audio_dataset(4, 16000, broken=2).save_to_disk(str(broken))
    manifest = tmp_path / "b.csv"
    prepared = run("prepare", "--corpus", "hf", "--root", broken, "--out", manifest)
    assert "1 unreadable audio file(s)" in prepared.output
    failed = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", tmp_path / "b.zarr", ok=False)
    assert (
        failed.exit_code == 1
        and failed.output.count("error:") == 1
        and "cannot decode audio: the audio bytes of hf:" in failed.output
    )
    skipped = run(
        "extract", "--manifest", manifest, "--feature", "mfcc", "--store", tmp_path / "b.zarr", "--on-error", "skip"
    )
    assert "3 stored" in skipped.output and "1 skipped" in skipped.output


def test_unlabelled_rows_are_counted_and_any_saved_format_reads_back(tmp_path) -> None:
    labelled = audio_dataset(6, 16000)
    unlabelled = audio_dataset(3, 16000, offset=9).cast_column("emotion", datasets.Value("int64"))
    unlabelled = unlabelled.map(lambda row: {"emotion": -1}).cast_column("emotion", datasets.ClassLabel(names=EMOTIONS))
    folder = tmp_path / "numpy_ds"
    datasets.DatasetDict({"train": labelled, "test": unlabelled}).with_format("numpy").save_to_disk(str(folder))
    manifest = tmp_path / "m.csv"
    result = run("prepare", "--corpus", "hf", "--root", folder, "--out", manifest)
    assert "numpy_ds: 3 row(s) without a label (ClassLabel -1), left out" in result.output
    from featurestore.manifest import Manifest

    rows = Manifest.read_csv(manifest)
    assert rows.ids() == [f"train-{i}" for i in range(6)]
    assert rows.column("emotion") == EMOTIONS * 2 and rows.column("speaker") == ["s0"] * 3 + ["s1"] * 3
    assert rows["train-5"]["duration"] == pytest.approx(0.85, abs=1e-3)  # audio bytes read back through the format
    stored = run(
        "extract", "--manifest", manifest, "--feature", "mfcc", "--store", tmp_path / "s.zarr", "--device", "cpu"
    )
    assert "6 stored" in stored.output


def test_bad_labels_and_rates_are_one_line_naming_the_row(tmp_path) -> None:
    rates = [
        {"array": tone(0.5, 16000, 200, i).tolist(), "sampling_rate": rate} for i, rate in enumerate([16000, 1_000_000])
    ]
    datasets.Dataset.from_dict(
        {"audio": rates, "emotion": ["sad", "angry"], "speaker": ["a", "b"]},
        features=datasets.Features(
            {
                "audio": {
                    "array": datasets.Sequence(datasets.Value("float32")),
                    "sampling_rate": datasets.Value("int64"),
                },
                "emotion": datasets.Value("string"),
                "speaker": datasets.Value("string"),
            }
        ),
    ).save_to_disk(str(tmp_path / "ds"))
    manifest = tmp_path / "m.csv"
    prepared = run("prepare", "--corpus", "hf", "--root", tmp_path / "ds", "--out", manifest)
    assert (
        "1 unreadable audio file(s)" in prepared.output
        and "sampling_rate 1000000 is not a whole number of Hz in 4000..768000" in prepared.output
    )
    failed = run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", tmp_path / "s.zarr", ok=False)
    assert (
        failed.exit_code == 1
        and failed.output.count("error:") == 1
        and "#-/audio/1: sampling_rate 1000000" in failed.output
    )
    datasets.Dataset.from_dict({"audio": rates, "emotion": ["sad", "angry"], "speaker": [["a"], ["b"]]}).save_to_disk(
        str(tmp_path / "ds2")
    )
    result = run("prepare", "--corpus", "hf", "--root", tmp_path / "ds2", "--out", manifest, ok=False)
    assert (
        result.exit_code == 1
        and f"hf: {tmp_path / 'ds2'} row 0, column 'speaker' must be text or an integer, got ['a']" in result.output
    )
