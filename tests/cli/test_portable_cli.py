"""Manifests and stores that move: relative audio paths, a moved corpus, manifest and store
that still extract, resume and train; durations measured when a manifest has none."""

from __future__ import annotations

import csv
import json
import shutil

from tests.cli.test_cli import run
from tests.conftest import TINY_TRAINING as TINY
from tests.conftest import write_manifest, write_tone


def test_a_relative_manifest_and_its_store_move_with_the_corpus(tmp_path) -> None:
    rows = []
    for i in range(12):
        path = write_tone(
            tmp_path / "old" / "corpus" / "audio" / f"u{i}.wav", 0.5 + 0.05 * i, freq=140 + 60 * (i % 3), seed=i
        )
        rows.append(
            {
                "utt_id": f"u{i}",
                "path": str(path),
                "emotion": ["angry", "happy", "sad"][i % 3],
                "speaker": f"s{i // 3 % 3}",
            }
        )
    source = write_manifest(tmp_path / "old" / "source.csv", rows)
    manifest = tmp_path / "old" / "corpus" / "manifest.csv"
    run("prepare", "--corpus", "csv", "--root", source, "--relative", "--out", manifest)
    with open(manifest, newline="") as handle:
        assert [r["path"] for r in csv.DictReader(handle)][:2] == ["audio/u0.wav", "audio/u1.wav"]
    store = tmp_path / "old" / "corpus" / "s.zarr"
    run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", store, "--device", "cpu")
    shutil.move(tmp_path / "old" / "corpus", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")
    moved = tmp_path / "new"
    again = run(
        "extract",
        "--manifest",
        moved / "manifest.csv",
        "--feature",
        "mfcc",
        "--store",
        moved / "s.zarr",
        "--device",
        "cpu",
    ).output
    assert "0 stored, 12 already there" in again
    out = tmp_path / "run"
    run(
        "cv",
        "--store",
        moved / "s.zarr",
        "--protocol",
        "group-kfold",
        "--by",
        "speaker",
        "--folds",
        "3",
        "--out",
        out,
        *TINY,
    )
    assert len(json.loads((out / "results.json").read_text())["folds"]) == 3


def test_a_manifest_without_durations_is_batched_by_measured_durations(tmp_path) -> None:
    from featurestore.manifest import Manifest
    from featurestore.pipeline import planned_durations

    rows = [
        {
            "utt_id": f"u{i}",
            "path": str(write_tone(tmp_path / f"u{i}.wav", 0.5 * (i + 1))),
            "emotion": "sad",
            "speaker": "a",
        }
        for i in range(3)
    ]
    rows.append({**rows[0], "utt_id": "seg", "start": 0.1, "end": 0.4})
    rows.append({**rows[0], "utt_id": "gone", "path": str(tmp_path / "missing.wav")})
    durations = planned_durations(Manifest(rows), ["u0", "u1", "u2", "seg", "gone"], batch_seconds=60.0)
    assert durations["u0"] == 0.5 and durations["u2"] == 1.5 and abs(durations["seg"] - 0.3) < 1e-9
    assert durations["gone"] == 60.0  # unmeasurable: a batch of its own
