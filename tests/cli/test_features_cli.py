"""fbank and openSMILE stores from the command line, the SVM on their functionals, and
--input-norm speaker end to end, with the one-line errors of each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store
from tests.cli.test_cli import run
from tests.conftest import write_manifest, write_tone

pytest.importorskip("opensmile")
TINY = ["--epochs", "1", "--channels", "16", "--embedding-dim", "8", "--batch-size", "16", "--device", "cpu"]
FOLDS = ["--protocol", "group-kfold", "--by", "speaker", "--folds", "3"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """fbank, egemaps and egemaps-functionals stores of one 18-utterance corpus (3 speakers)."""
    root = tmp_path_factory.mktemp("corpus")
    emotions = ["angry", "happy", "sad"]
    rows = []
    for i in range(18):
        path = write_tone(root / f"u{i:02d}.wav", 0.5 + 0.07 * i, sr=22050, freq=120 + 60 * (i % 3), seed=i)
        rows.append({"utt_id": f"u{i:02d}", "path": str(path), "emotion": emotions[i % 3], "speaker": f"s{i // 6}"})
    manifest = write_manifest(root / "manifest.csv", rows)
    stores = {}
    for feature in ("fbank", "egemaps", "egemaps-functionals"):
        stores[feature] = root / f"{feature}.zarr"
        result = run(
            "extract", "--manifest", manifest, "--feature", feature, "--store", stores[feature], "--device", "cpu"
        )
        assert "18 stored" in result.output
        assert "0 problem(s), 0 missing" in run("verify", stores[feature]).output
    return stores


def test_frame_stores_line_up_and_functionals_are_one_vector(stores) -> None:
    fbank, egemaps, functionals = (open_store(stores[f]) for f in ("fbank", "egemaps", "egemaps-functionals"))
    assert (fbank.dim, egemaps.dim, functionals.dim) == (80, 25, 88)
    for utt_id in fbank.ids():
        assert fbank.num_frames(utt_id) == egemaps.num_frames(utt_id) and functionals.num_frames(utt_id) == 1
    assert egemaps.attrs["feature"]["feature_set"] == "eGeMAPSv02" and functionals.attrs["frame_rate"] == 0
    assert egemaps.attrs["dtype"] == "float32"


def test_svm_on_egemaps_functionals_and_speaker_normalised(stores, tmp_path) -> None:
    out = tmp_path / "svm.json"
    result = run("baseline", "--store", stores["egemaps-functionals"], *FOLDS, "--out", out)
    assert "SVM on egemaps (group-kfold by speaker, 3 folds): WA" in result.output
    saved = json.loads(out.read_text())
    assert saved["functionals"] == "egemaps" and saved["input_norm"] == "global" and len(saved["folds"]) == 3
    same = run("baseline", "--store", stores["egemaps-functionals"], "--functionals", "egemaps", *FOLDS).output
    assert same.split(": ", 1)[1] == result.output.split(": ", 1)[1]
    speaker = run("baseline", "--store", stores["fbank"], "--input-norm", "speaker", *FOLDS).output
    assert "SVM on mfcc-stats, speaker-normalised (group-kfold by speaker, 3 folds): WA" in speaker


@pytest.mark.parametrize(
    "store, args, message",
    [
        (
            "fbank",
            ["--functionals", "egemaps"],
            "--functionals egemaps: store {} holds fbank; make a store of egemaps "
            "functionals with: sermtl extract --feature egemaps-functionals …",
        ),
        (
            "egemaps-functionals",
            ["--functionals", "mfcc-stats"],
            "--functionals mfcc-stats: store {} holds one "
            "egemaps-functionals vector per utterance, not frames; "
            "use --functionals egemaps",
        ),
        (
            "egemaps-functionals",
            ["--functionals", "compare"],
            "--functionals compare: store {} holds egemaps-functionals",
        ),
    ],
)
def test_functionals_that_do_not_match_the_store_are_one_line(stores, store, args, message) -> None:
    result = run("baseline", "--store", stores[store], *args, *FOLDS, ok=False)
    assert result.exit_code == 1 and result.output.count("error:") == 1 and "Traceback" not in result.output
    assert message.format(stores[store]) in result.output


def test_the_network_refuses_a_store_of_one_vector_per_utterance(stores, tmp_path) -> None:
    result = run("cv", "--store", stores["egemaps-functionals"], *FOLDS, "--out", tmp_path / "r", *TINY, ok=False)
    assert result.exit_code == 1 and "holds one vector per utterance (egemaps-functionals), not frames" in result.output
    assert not (tmp_path / "r").exists()


def test_cv_and_predict_with_speaker_normalisation_on_egemaps(stores, tmp_path) -> None:
    out = tmp_path / "run"
    run("cv", "--store", stores["egemaps"], *FOLDS, "--input-norm", "speaker", "--aux", "none", "--out", out, *TINY)
    assert json.loads((out / "config.json").read_text())["train"]["network"]["input_norm"] == "speaker"
    files = [write_tone(tmp_path / "new" / f"{i}.wav", 1.0, freq=150 + 50 * i, seed=i) for i in range(3)]
    rows = json.loads(run("predict", "--checkpoint", out / "fold_1" / "checkpoint.pt", *files, "--json").output)
    assert len(rows) == 3 and all(np.isclose(sum(r["emotion_probs"].values()), 1.0, atol=1e-5) for r in rows)


def test_audio_shorter_than_opensmiles_window_is_one_line(tmp_path) -> None:
    short = write_tone(tmp_path / "short.wav", 0.05)
    manifest = write_manifest(
        tmp_path / "m.csv", [{"utt_id": "x", "path": str(short), "emotion": "sad", "speaker": "a"}]
    )
    result = run("extract", "--manifest", manifest, "--feature", "egemaps", "--store", tmp_path / "s.zarr", ok=False)
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert (
        f"x ({short}): 800 samples is shorter than the egemaps receptive field (960 samples = 60 ms)" in result.output
    )


def test_values_beyond_float16_are_refused_not_stored_as_infinity(tmp_path) -> None:
    import soundfile as sf

    loud = tmp_path / "loud.wav"
    sf.write(str(loud), np.clip(np.random.default_rng(0).normal(0, 0.5, 16000), -1, 1).astype(np.float32), 16000)
    manifest = write_manifest(
        tmp_path / "m.csv", [{"utt_id": "x", "path": str(loud), "emotion": "sad", "speaker": "a"}]
    )
    store = tmp_path / "s.zarr"
    result = run(
        "extract", "--manifest", manifest, "--feature", "compare", "--dtype", "float16", "--store", store, ok=False
    )
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "exceed float16's range; extract with --dtype float32" in result.output
    run("extract", "--manifest", manifest, "--feature", "compare", "--store", tmp_path / "s32.zarr")
    assert np.abs(open_store(tmp_path / "s32.zarr").read("x")).max() > 65504
