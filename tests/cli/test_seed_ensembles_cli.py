"""Seed ensembles from the command line: ``cv --repeats`` writes the ensemble of its seeds,
``compare`` pairs it, ``train --all-data --repeats`` makes a model folder of one network
per seed that ``predict``, :class:`~trainer.predict.Predictor` and ``export`` average."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from featurestore.errors import ModelError
from tests.cli.test_cli import run
from tests.conftest import TINY_TRAINING
from trainer.checkpoint import load_checkpoint
from trainer.export import InferenceGraph
from trainer.folds import load_folds
from trainer.folds import test_digest as digest_of
from trainer.loop import load_network
from trainer.predict import Predictor

PROTOCOL = ["--protocol", "group-kfold", "--by", "session", "--folds", "3", "--seed", "4"]


@pytest.fixture(scope="module")
def repeats(iemocap_mfcc_store, tmp_path_factory):
    """``cv --repeats 2`` (seeds 4 and 5) and its printed lines."""
    out = tmp_path_factory.mktemp("ensemble") / "rep"
    printed = run("cv", "--store", iemocap_mfcc_store, *PROTOCOL, "--repeats", "2", "--out", out, *TINY_TRAINING)
    return out, printed.output


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cv_repeats_writes_the_mean_of_the_seeds_predictions(repeats) -> None:
    out, printed = repeats
    summary = json.loads((out / "ensemble.json").read_text())
    assert printed.splitlines()[-1] == (
        f"{out}: ensemble of 2 seeds: WA {summary['wa']['mean']:.2f}, UWA {summary['uwa']['mean']:.2f} "
        f"(%, mean over the seeds' folds); pooled WA {summary['pooled']['wa']:.2f}, UWA {summary['pooled']['uwa']:.2f}"
    )
    saved: dict[str, list[dict[str, str]]] = {}
    for seed in (4, 5):
        for path in sorted((out / f"seed_{seed}").glob("fold_*/predictions.csv")):
            for row in read_csv(path):
                saved.setdefault(row["utt_id"], []).append(row)
    rows = read_csv(out / "ensemble_predictions.csv")
    assert len(rows) == len(saved) == 60 and {row["seeds"] for row in rows} == {"2"}
    classes = [key[2:] for key in rows[0] if key.startswith("p_")]
    for row in rows:
        for c in classes:
            mean = np.mean([float(seed_row.get(f"p_{c}") or 0) for seed_row in saved[row["utt_id"]]])
            assert float(row[f"p_{c}"]) == pytest.approx(mean, abs=1e-12)
    for seed in (4, 5):
        folds, _ = load_folds(out / f"seed_{seed}" / "folds.json")
        result = summary["results"][str(seed)]
        predicted = {row["utt_id"]: (row["true"], row["pred"]) for row in rows}
        for fold, scores in zip(folds, result["folds"]):
            hits = [predicted[u][0] == predicted[u][1] for u in fold.test]
            assert (scores["seed"], scores["fold"], scores["test_digest"]) == (seed, fold.fold, digest_of(fold.test))
            assert scores["n"] == len(fold.test) and scores["wa"] == pytest.approx(100 * np.mean(hits))


def test_compare_pairs_the_ensemble_with_the_seeds_and_the_svm(repeats, iemocap_mfcc_store, tmp_path) -> None:
    out, _ = repeats
    svm = tmp_path / "svm.json"
    run("baseline", "--store", iemocap_mfcc_store, *PROTOCOL, "--repeats", "2", "--out", svm)
    table = run("compare", svm, out / "ensemble.json", out).output
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith(f"| {tmp_path.parent}")}
    for name in (svm, out / "ensemble.json", out):  # 2 seeds and 6 (seed, fold) pairs each
        assert " | 2 | 6 | " in rows[str(name)]
    summary = json.loads(run("compare", out, out / "ensemble.json", "--json").output)
    ensemble = json.loads((out / "ensemble.json").read_text())
    assert summary["runs"][1]["mean"] == pytest.approx(ensemble["uwa"]["mean"])
    assert summary["runs"][1]["std"] == pytest.approx(ensemble["uwa"]["std"]) and summary["runs"][1]["paired"]["n"] == 6
    damaged = tmp_path / "ensemble.json"
    damaged.write_text((out / "ensemble.json").read_text().replace('"members": 2', '"members": "two"'))
    refused = run("compare", out, damaged, ok=False)
    assert refused.exit_code == 1 and f"{damaged}: ensemble.members: expected an integer" in refused.output


def test_train_one_fold_over_seeds_makes_no_ensemble(iemocap_mfcc_store, tmp_path) -> None:
    out = tmp_path / "one"
    printed = run("train", "--store", iemocap_mfcc_store, *PROTOCOL, "--repeats", "2", "--out", out, *TINY_TRAINING)
    assert printed.output.splitlines()[-1] == f"{out}: no seed ensemble until every fold of every seed is finished"
    assert (out / "repeats.json").exists() and not (out / "ensemble.json").exists()


@pytest.fixture(scope="module")
def ensemble_model(iemocap_mfcc_store, tmp_path_factory):
    """``train --all-data --repeats 2`` with an auxiliary task."""
    model = tmp_path_factory.mktemp("model") / "model"
    flags = [*TINY_TRAINING[:-2], "--aux", "expression", "--seed", "4", "--repeats", "2", "--quiet"]
    printed = run("train", "--all-data", "--store", iemocap_mfcc_store, "--out", model, *flags).output
    return model, printed


def test_all_data_repeats_is_a_folder_of_seeds_that_predicts_their_mean(ensemble_model, tmp_path) -> None:
    model, printed = ensemble_model
    assert printed.startswith(f"{model}: 2 networks (seeds 4…5) trained on every row for 1 epochs")
    assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()) == [
        "MODEL_CARD.md",
        "seed_4/checkpoint.pt",
        "seed_4/history.csv",
        "seed_5/checkpoint.pt",
        "seed_5/history.csv",
    ]
    assert "An ensemble of 2 seeds (4, 5)" in (model / "MODEL_CARD.md").read_text()
    seeds = [load_checkpoint(model / f"seed_{s}" / "checkpoint.pt")["train_config"]["seed"] for s in (4, 5)]
    assert seeds == [4, 5]
    rng = np.random.default_rng(1)
    waves = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (0.8, 1.5)]
    ensemble = Predictor.load(model)
    assert len(ensemble.networks) == 2
    members = [Predictor.load(model / f"seed_{s}" / "checkpoint.pt").predict(waves) for s in (4, 5)]
    for i, row in enumerate(ensemble.predict(waves)):
        for key in ("emotion_probs", "expression_probs"):
            for name, p in row[key].items():
                assert p == pytest.approx(np.mean([m[i][key][name] for m in members]), abs=1e-6)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "seed_4").mkdir()
    (copy / "seed_5").mkdir()
    (copy / "seed_4" / "checkpoint.pt").write_bytes((model / "seed_4" / "checkpoint.pt").read_bytes())
    with pytest.raises(ModelError, match=rf"^{re.escape(str(copy))}: seed_5 holds no checkpoint\.pt"):
        Predictor.load(copy)


def test_all_data_repeats_refuses_a_folder_holding_a_model(ensemble_model, iemocap_mfcc_store) -> None:
    model, _ = ensemble_model
    again = run("train", "--all-data", "--store", iemocap_mfcc_store, "--out", model, *TINY_TRAINING, ok=False)
    assert again.exit_code == 1 and f"--out {model} already holds a model (seed_4/checkpoint.pt)" in again.output


def test_the_export_of_an_ensemble_gives_the_eager_mean(ensemble_model, tmp_path) -> None:
    model, _ = ensemble_model
    out = tmp_path / "ensemble.pt"
    run("export", "--checkpoint", model, "--format", "torchscript", "--out", out)
    rng = np.random.default_rng(3)
    features, lengths = rng.standard_normal((3, 317, 40)).astype(np.float32), np.array([317, 120, 45])
    inputs = torch.from_numpy(features), torch.from_numpy(lengths)
    with torch.no_grad():
        exported = [t.numpy() for t in torch.jit.load(str(out))(*inputs)]
        members = [
            [
                t.numpy()
                for t in InferenceGraph(load_network(load_checkpoint(model / f"seed_{s}" / "checkpoint.pt")))(*inputs)
            ]
            for s in (4, 5)
        ]
    np.testing.assert_allclose(exported[0], np.mean([m[0] for m in members], axis=0), atol=1e-5)
    np.testing.assert_allclose(exported[1], np.concatenate([m[1] for m in members], axis=1), atol=1e-5)
    np.testing.assert_allclose(exported[2], np.mean([m[2] for m in members], axis=0), atol=1e-5)
    predictor = Predictor.load(model)  # the eager ensemble, one utterance at a time
    for i, length in enumerate(lengths):
        eager = predictor._row(predictor._outputs([features[i, :length]])[0])
        np.testing.assert_allclose(exported[0][i], list(eager["emotion_probs"].values()), atol=1e-5)
        np.testing.assert_allclose(exported[2][i], list(eager["expression_probs"].values()), atol=1e-5)
    interface = json.loads((tmp_path / "ensemble.pt.json").read_text())
    assert interface["ensemble"]["members"] == 2 and interface["ensemble"]["seeds"] == [4, 5]
    assert interface["outputs"] == ["emotion_probs", "embedding", "aux_probs"]
    assert "An ensemble of 2 networks" in (tmp_path / "ensemble.pt.md").read_text()


def test_the_onnx_export_of_an_ensemble_gives_the_eager_mean_in_onnxruntime(ensemble_model, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, _ = ensemble_model
    out = tmp_path / "ensemble.onnx"
    run("export", "--checkpoint", model, "--format", "onnx", "--out", out)
    session = ort.InferenceSession(str(out))
    assert [o.name for o in session.get_outputs()] == ["emotion_probs", "embedding", "aux_probs"]
    features, lengths = np.random.default_rng(4).standard_normal((2, 150, 40)).astype(np.float32), np.array([150, 70])
    exported = session.run(None, {"features": features, "lengths": lengths})
    graphs = [InferenceGraph(network) for network in Predictor.load(model).networks]
    with torch.no_grad():
        members = [
            [t.numpy() for t in graph(torch.from_numpy(features), torch.from_numpy(lengths))] for graph in graphs
        ]
    np.testing.assert_allclose(exported[0], np.mean([m[0] for m in members], axis=0), atol=1e-5)
    np.testing.assert_allclose(exported[1], np.concatenate([m[1] for m in members], axis=1), atol=1e-5)
    np.testing.assert_allclose(exported[2], np.mean([m[2] for m in members], axis=0), atol=1e-5)


def test_all_data_repeats_from_a_runs_config_quotes_one_networks_estimate(repeats, tmp_path) -> None:
    out, _ = repeats
    model = tmp_path / "from_run"
    printed = run("train", "--all-data", "--config", out / "seed_4" / "config.json", "--repeats", "2", "--out", model)
    assert f"{model}: 2 networks (seeds 4…5)" in printed.output
    card = (model / "MODEL_CARD.md").read_text()
    assert "An ensemble of 2 seeds (4, 5)" in card and "These are one network's figures" in card
    assert len(Predictor.load(model).networks) == 2
