"""trainer.predict.Predictor: loaded once, arrays at any rate in, the keys of `sermtl predict
--json` out, a run directory as a fold ensemble, embeddings."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from featurestore.errors import AudioError, ModelError
from tests.cli.test_cli import run
from trainer.predict import Predictor

TINY = ["--epochs", "1", "--channels", "16", "--embedding-dim", "8", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(iemocap_mfcc_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("predictor") / "run"
    run(
        "cv",
        "--store",
        iemocap_mfcc_store,
        "--protocol",
        "group-kfold",
        "--by",
        "session",
        "--folds",
        "3",
        "--aux",
        "expression",
        "--out",
        out,
        *TINY,
    )
    return out


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(5)
    waves = []
    for i, seconds in enumerate((0.7, 1.3, 2.1)):
        t = np.arange(int(22050 * seconds)) / 22050
        wave = (0.3 * np.sin(2 * np.pi * (140 + 70 * i) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        sf.write(str(folder / f"r{i}.wav"), wave, 22050, subtype="FLOAT")
        waves.append(wave)
    return folder, waves


def test_predict_on_arrays_equals_the_command_on_files(run_dir, recordings) -> None:
    folder, waves = recordings
    checkpoint = run_dir / "fold_2" / "checkpoint.pt"
    predictor = Predictor.load(checkpoint)
    rows = predictor.predict(waves, sample_rate=22050)
    command = json.loads(run("predict", "--checkpoint", checkpoint, folder, "--json").output)
    assert len(rows) == len(command) == 3
    for ours, theirs in zip(rows, command):
        assert set(theirs) - {"file"} == set(ours) == {"emotion", "emotion_probs", "expression", "expression_probs"}
        assert ours["emotion"] == theirs["emotion"] and ours["expression"] == theirs["expression"]
        for key in ("emotion_probs", "expression_probs"):
            assert ours[key] == pytest.approx(theirs[key], abs=1e-6)
    assert predictor.predict(waves[:1], sample_rate=22050) == rows[:1]  # loaded once, called again


def test_a_run_directory_is_the_mean_of_its_folds(run_dir, recordings) -> None:
    _, waves = recordings
    ensemble = Predictor.load(run_dir)
    assert len(ensemble.networks) == 3
    folds = [Predictor.load(run_dir / f"fold_{k}" / "checkpoint.pt").predict(waves, 22050) for k in (1, 2, 3)]
    for i, row in enumerate(ensemble.predict(waves, 22050)):
        for emotion, p in row["emotion_probs"].items():
            assert p == pytest.approx(np.mean([fold[i]["emotion_probs"][emotion] for fold in folds]), abs=1e-6)
        assert row["emotion"] == max(row["emotion_probs"], key=row["emotion_probs"].get)
    assert ensemble.embed(waves, 22050).shape == (3, 24)
    single = Predictor.load(run_dir / "fold_1" / "checkpoint.pt")
    np.testing.assert_allclose(ensemble.embed(waves, 22050)[:, :8], single.embed(waves, 22050), atol=1e-6)
    table = run("predict", "--checkpoint", run_dir, recordings[0]).output
    assert table.count("angry=") == 3


def test_bad_input_is_one_line(run_dir, tmp_path) -> None:
    predictor = Predictor.load(run_dir / "fold_1" / "checkpoint.pt")
    with pytest.raises(AudioError, match=r"^wave 0:.*got shape \(2, 100\)$"):
        predictor.predict([np.zeros((2, 100), np.float32)])
    with pytest.raises(AudioError, match=r"^wave 1: 100 samples\b.*\bmfcc receptive field"):
        predictor.predict([np.zeros(1600, np.float32), np.zeros(100, np.float32)])
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ModelError, match=rf"^{re.escape(str(tmp_path / 'empty_run'))}: no fold_\*/checkpoint\.pt"):
        Predictor.load(tmp_path / "empty_run")


def test_all_data_model_with_its_card(run_dir, recordings, iemocap_mfcc_store, tmp_path) -> None:
    import statistics

    results = json.loads((run_dir / "results.json").read_text())
    median = round(statistics.median(f["best_epoch"] for f in results["folds"]))
    model = tmp_path / "model"
    out = run("train", "--all-data", "--config", run_dir / "config.json", "--out", model, "--quiet").output
    assert f"{model}: trained on every row for {median} epochs" in out
    card = (model / "MODEL_CARD.md").read_text()
    assert f"WA {results['wa']:.2f} ± {results['std']['wa']:.2f}, UWA {results['uwa']:.2f}" in card
    assert "60 utterances, 10 speakers" in card and "## Intended use and limits" in card
    assert "`channels=16`" in card and f"{median} epochs (the median of the epochs kept" in card
    with open(model / "history.csv") as handle:
        assert len(handle.read().strip().splitlines()) == 1 + median
    rows = Predictor.load(model).predict(recordings[1], sample_rate=22050)
    assert len(rows) == 3 and set(rows[0]) == {"emotion", "emotion_probs", "expression", "expression_probs"}
    again = run("train", "--all-data", "--config", run_dir / "config.json", "--out", model, ok=False)
    assert again.exit_code == 1 and f"--out {model} already holds a model (checkpoint.pt)" in again.output
    explicit = run(
        "train",
        "--all-data",
        "--store",
        iemocap_mfcc_store,
        "--epochs",
        "2",
        "--average-best",
        "2",
        "--aux",
        "none",
        "--out",
        tmp_path / "m2",
        *TINY[2:],
        "--quiet",
    ).output
    card = (tmp_path / "m2" / "MODEL_CARD.md").read_text()
    assert "for 2 epochs" in explicit and "No cross-validation run was named" in card
    assert "no best epochs to average (`average_best=2`): the model keeps its last epoch's weights" in card


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor.load(run_dir / "fold_1" / "checkpoint.pt")


@pytest.mark.parametrize(
    "rate, message",
    [
        (0, r"^wave 0:.* 0 Hz\b.*\b4000\.\.768000 Hz"),
        (1, r"^wave 0:.* 1 Hz\b.*\b4000\.\.768000 Hz"),
        (10**9, r"^wave 0:.* 1000000000 Hz\b.*\b4000\.\.768000 Hz"),
        (16000.0, r"^wave 0: sample_rate\b.*\binteger\b.*got 16000\.0$"),
        ("16k", r"^wave 0: sample_rate\b.*\binteger\b.*got '16k'$"),
        (True, r"^wave 0: sample_rate\b.*\binteger\b.*got True$"),
    ],
)
def test_a_bad_sample_rate_is_one_line_before_any_resampling(predictor, monkeypatch, rate, message) -> None:
    import soxr

    def refuse(*args, **kwargs):
        raise AssertionError("resampled")  # 1 Hz → 16 kHz would allocate gigabytes

    monkeypatch.setattr(soxr, "resample", refuse)
    with pytest.raises(AudioError, match=message) as info:
        predictor.predict([np.zeros(48000, np.float32)], sample_rate=rate)
    assert "\n" not in str(info.value)


def test_bad_waves_are_one_line_as_in_the_cli(predictor) -> None:
    nan = np.zeros(16000, np.float32)
    nan[5] = np.nan
    with pytest.raises(AudioError, match=r"^wave 1: NaN or infinite\b"):
        predictor.predict([np.zeros(16000, np.float32), nan])
    with pytest.raises(AudioError, match=r"^wave 0:.*\(ValueError: could not convert"):
        predictor.predict([["a", "b"]])
    with pytest.raises(AudioError, match=r"^wave 0: 2\.0 s\b.*--max-duration 1 s\b"):
        predictor.predict([np.zeros(8000, np.float32)], sample_rate=4000, max_duration=1)
    default_cap = np.zeros(4000 * 601, np.float32)  # 601 s at 4 kHz: over the CLI's 600 s
    with pytest.raises(AudioError, match=r"^wave 0: 601\.0 s\b.*--max-duration 600 s\b"):
        predictor.embed([default_cap], sample_rate=4000)
    for short in (np.zeros(1, np.float32), np.zeros(0, np.float32)):
        with pytest.raises(AudioError, match=r"^wave 0: [01] samples\b.*\bmfcc receptive field"):
            predictor.predict([short], sample_rate=22050)
    assert len(predictor.predict([np.zeros(8000, np.float32)], sample_rate=4000, max_duration=None)) == 1


def test_a_network_that_does_not_fit_its_features_is_one_line(run_dir, tmp_path) -> None:
    import dataclasses

    from trainer.checkpoint import load_checkpoint, save_checkpoint
    from trainer.network import NetworkConfig, SERNetwork

    checkpoint = load_checkpoint(run_dir / "fold_1" / "checkpoint.pt")
    config = dataclasses.replace(NetworkConfig.from_dict(checkpoint["network"]), input_size=41)
    save_checkpoint(
        tmp_path / "wide.pt",
        {**checkpoint, "network": dataclasses.asdict(config), "state_dict": SERNetwork(config).state_dict()},
    )
    with pytest.raises(
        ModelError, match=rf"^{re.escape(str(tmp_path / 'wide.pt'))}: network\.input_size 41\b.*\bmfcc\b.*\(40 values"
    ):
        Predictor.load(tmp_path / "wide.pt")


def test_model_folders_and_run_directories_with_damage_are_one_line(run_dir, tmp_path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "MODEL_CARD.md").write_text("# Model card\n")
    with pytest.raises(ModelError, match=rf"not found: {re.escape(str(model / 'checkpoint.pt'))}$"):
        Predictor.load(model)
    (model / "checkpoint.pt").write_bytes((run_dir / "fold_1" / "checkpoint.pt").read_bytes()[:700])
    with pytest.raises(ModelError, match=rf"not a sermtl checkpoint: {re.escape(str(model / 'checkpoint.pt'))}: "):
        Predictor.load(model)
    result = run("predict", "--checkpoint", model, tmp_path, ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output and "not a sermtl checkpoint" in result.output
    odd_run = tmp_path / "odd_run"
    for name in ("fold_x", "fold_2"):
        (odd_run / name).mkdir(parents=True)
        (odd_run / name / "checkpoint.pt").write_bytes((run_dir / "fold_2" / "checkpoint.pt").read_bytes())
    assert len(Predictor.load(odd_run).networks) == 1  # fold_x is not a fold
