"""train / cv / predict from the command line on a tiny generated store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.test_cli import run
from tests.conftest import write_tone

TINY = ["--epochs", "2", "--channels", "16", "--embedding-dim", "8", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture
def store(iemocap_mfcc_store) -> Path:
    return iemocap_mfcc_store


def test_train_exactly_as_documented(store, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("train", "--store", store, "--alpha0", "0.1", *TINY)
    run_dir = tmp_path / "runs" / "iemocap_mfcc-expression-default"
    assert f"{run_dir.relative_to(tmp_path)}: WA" in result.output and "aux accuracy" in result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert f"pooled WA {results['pooled']['wa']:.2f}" in result.output
    assert [f["fold"] for f in results["folds"]] == [1]
    folds = json.loads((run_dir / "folds.json").read_text())
    assert len(folds["folds"]) == 5  # leave-one-session-out chosen from the store's sessions


def test_cv_group_kfold_without_mtl_and_predict(store, tmp_path) -> None:
    out = tmp_path / "run"
    run(
        "cv",
        "--store",
        store,
        "--protocol",
        "group-kfold",
        "--by",
        "session",
        "--folds",
        "3",
        "--aux",
        "none",
        "--out",
        out,
        "--augment",
        "specaugment",
        "--lr-schedule",
        "cosine",
        *TINY,
    )
    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())["train"]
    assert (config["augment"], config["lr_schedule"]) == ("specaugment", "cosine")
    assert len(results["folds"]) == 3 and results["aux_accuracy"] is None
    for key in ("wa", "uwa", "per_class_recall"):
        assert key in results
    wav = write_tone(tmp_path / "audio" / "hello.wav", 1.3, sr=22050)
    table = run("predict", "--checkpoint", out / "fold_1" / "checkpoint.pt", wav).output
    assert "hello.wav" in table and "angry=" in table
    rows = json.loads(
        run("predict", "--checkpoint", out / "fold_2" / "checkpoint.pt", tmp_path / "audio", "--json").output
    )
    assert len(rows) == 1 and sum(rows[0]["emotion_probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_gives_the_probabilities_of_training(store, tmp_path) -> None:
    out = tmp_path / "run"
    run("train", "--store", store, "--out", out, "--fold", "2", *TINY)
    checkpoint = out / "fold_2" / "checkpoint.pt"
    predictions = (out / "fold_2" / "predictions.csv").read_text().splitlines()
    header = predictions[0].split(",")
    first = dict(zip(header, predictions[1].split(",")))
    from featurestore import open_store

    path = open_store(store).manifest[first["utt_id"]]["path"]
    row = json.loads(run("predict", "--checkpoint", checkpoint, path, "--json").output)[0]
    assert row["emotion"] == first["pred"] and "expression" in row
    for name, value in row["emotion_probs"].items():
        assert value == pytest.approx(float(first[f"p_{name}"]), abs=1e-4)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--alpha-max", "1.5"], "--alpha-max must be in [0, 1], got 1.5"),
        (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
        (["--weight-decay", "-0.1"], "--weight-decay must be in [0, inf), got -0.1"),
        (["--aux", "mood"], "has no column 'mood'"),
        (["--protocol", "loso", "--by", "colour"], "colour"),
    ],
)
def test_bad_training_flags(store, tmp_path, args, needle) -> None:
    result = run("train", "--store", store, "--out", tmp_path / "r", *TINY, *args, ok=False)
    assert result.exit_code == 1 and needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before the run directory is written


def test_predict_refuses_other_weights_and_non_checkpoints(store, tmp_path, csv_corpus) -> None:
    from featurestore.features.random_models import save_random_ssl_model

    model = save_random_ssl_model(tmp_path / "tiny", seed=0)
    w2v2 = tmp_path / "w.zarr"
    run("extract", "--manifest", csv_corpus, "--feature", "w2v2", "--model", model, "--store", w2v2, "--device", "cpu")
    out = tmp_path / "run"
    run(
        "train",
        "--store",
        w2v2,
        "--out",
        out,
        "--protocol",
        "group-kfold",
        "--by",
        "speaker",
        "--folds",
        "3",
        "--aux",
        "none",
        *TINY,
    )
    checkpoint = out / "fold_1" / "checkpoint.pt"
    wav = write_tone(tmp_path / "a.wav", 1.0)
    assert "a.wav" in run("predict", "--checkpoint", checkpoint, wav).output
    save_random_ssl_model(model, seed=1)  # the same folder now holds other weights
    refused = run("predict", "--checkpoint", checkpoint, wav, ok=False)
    assert refused.exit_code == 1 and "weights_sha256" in refused.output
    torch.save({"something": 1}, tmp_path / "bogus.pt")
    bogus = run("predict", "--checkpoint", tmp_path / "bogus.pt", wav, ok=False)
    assert bogus.exit_code == 1 and "not a sermtl checkpoint" in bogus.output


def test_baseline_command(store, tmp_path) -> None:
    out = tmp_path / "svm.json"
    result = run("baseline", "--store", store, "--protocol", "loso", "--by", "session", "--out", out)
    assert "SVM on mfcc-stats (loso by session, 5 folds): WA" in result.output
    saved = json.loads(out.read_text())
    assert len(saved["folds"]) == 5
    assert f"pooled WA {saved['pooled']['wa']:.2f}, UWA {saved['pooled']['uwa']:.2f})" in result.output


def test_experiment_command_with_a_given_store(store, tmp_path) -> None:
    out = tmp_path / "exp"
    result = run("experiment", "table1", "--store", f"iemocap:mfcc={store}", "--out", out)
    assert "table1 done" in result.output and (out / "table1" / "table.md").exists()
    bad = run("experiment", "table3", "--root", "nosuch=/x", "--out", out, ok=False)
    assert bad.exit_code == 1 and "not a corpus recipe" in bad.output


def test_cv_repeats_over_seeds_writes_each_run_and_their_mean(store, tmp_path) -> None:
    out = tmp_path / "rep"
    args = (
        "cv",
        "--store",
        store,
        "--protocol",
        "group-kfold",
        "--by",
        "session",
        "--folds",
        "3",
        "--aux",
        "none",
        "--out",
        out,
        "--seed",
        "4",
        "--repeats",
        "2",
        *TINY,
    )
    first = run(*args).output
    runs = {seed: json.loads((out / f"seed_{seed}" / "results.json").read_text()) for seed in (4, 5)}
    assert {json.loads((out / f"seed_{s}" / "config.json").read_text())["train"]["seed"] for s in (4, 5)} == {4, 5}
    summary = json.loads((out / "repeats.json").read_text())
    assert summary["seeds"] == [4, 5] and "aux_accuracy" not in summary
    assert summary["uwa"]["mean"] == pytest.approx(np.mean([r["uwa"] for r in runs.values()]))
    assert summary["pooled_uwa"]["std"] == pytest.approx(np.std([r["pooled"]["uwa"] for r in runs.values()]))
    assert f"UWA {summary['uwa']['mean']:.2f} ± {summary['uwa']['std']:.2f}" in first
    svm_out = tmp_path / "svm.json"
    svm = run(
        "baseline",
        "--store",
        store,
        "--protocol",
        "group-kfold",
        "--by",
        "session",
        "--folds",
        "3",
        "--seed",
        "4",
        "--repeats",
        "2",
        "--out",
        svm_out,
    ).output
    svm_summary = json.loads(svm_out.read_text())
    run(
        "baseline",
        "--store",
        store,
        "--protocol",
        "group-kfold",
        "--by",
        "session",
        "--folds",
        "3",
        "--seed",
        "5",
        "--out",
        tmp_path / "svm5.json",
    )
    single = json.loads((tmp_path / "svm5.json").read_text())
    assert svm_summary["seeds"] == [4, 5] and svm_summary["results"]["5"]["uwa"] == pytest.approx(single["uwa"])
    assert f"over seeds 4, 5: WA {svm_summary['wa']['mean']:.2f} ± {svm_summary['wa']['std']:.2f}" in svm
    done = (out / "seed_5" / "fold_1" / "metrics.json").stat().st_mtime_ns
    assert run(*args).output.splitlines()[-1] == first.splitlines()[-1]  # resumed: nothing retrained
    report = run("report", out).output.strip()
    text = open(report.splitlines()[-1]).read()
    assert "## Repeats" in text and f"{summary['uwa']['mean']:.2f} ± {summary['uwa']['std']:.2f}" in text
    assert (out / "seed_5" / "fold_1" / "metrics.json").stat().st_mtime_ns == done
