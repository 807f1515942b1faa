"""Training you can watch: history.csv after every epoch, a line per finished fold, plain
progress lines in logs, TQDM_DISABLE and --quiet, and the test embeddings of each fold."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.cli.test_cli import run

TINY = ["--epochs", "3", "--channels", "16", "--embedding-dim", "8", "--batch-size", "16", "--device", "cpu"]
FOLDS = ["--protocol", "group-kfold", "--by", "session", "--folds", "3"]


def test_history_csv_grows_after_every_epoch(iemocap_mfcc_store, tmp_path, monkeypatch) -> None:
    import trainer.cv

    seen = []
    real = trainer.cv.write_history_csv

    def watching(path, history):
        real(path, history)
        with open(path, newline="") as handle:
            seen.append([row["epoch"] for row in csv.DictReader(handle)])
        assert not (path.parent / "metrics.json").exists()  # written while the fold trains

    monkeypatch.setattr(trainer.cv, "write_history_csv", watching)
    out = tmp_path / "run"
    run("train", "--store", iemocap_mfcc_store, *FOLDS, "--aux", "expression", "--out", out, *TINY)
    assert seen == [["1"], ["1", "2"], ["1", "2", "3"]]
    with open(out / "fold_1" / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    history = json.loads((out / "fold_1" / "history.json").read_text())
    assert [float(r["valid_uwa"]) for r in rows] == pytest.approx([h["valid_uwa"] for h in history])
    assert list(rows[0]) == ["epoch", "alpha", "train_loss", "valid_loss", "valid_uwa"] and float(
        rows[1]["alpha"]
    ) == pytest.approx(0.15)


def test_each_fold_saves_its_test_embeddings(iemocap_mfcc_store, tmp_path) -> None:
    out = tmp_path / "run"
    run("train", "--store", iemocap_mfcc_store, *FOLDS, "--aux", "expression", "--out", out, *TINY)
    saved = np.load(out / "fold_1" / "embeddings.npz")
    with open(out / "fold_1" / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    assert list(saved["ids"]) == [p["utt_id"] for p in predictions]
    assert list(saved["emotion"]) == [p["true"] for p in predictions]
    assert saved["embeddings"].shape == (len(predictions), 8) and np.isfinite(saved["embeddings"]).all()
    assert set(saved["aux"]) == {"acted", "spontaneous"}


def test_logs_get_plain_lines_and_a_line_per_fold(iemocap_mfcc_store, tmp_path) -> None:
    out = tmp_path / "run"
    result = run("cv", "--store", iemocap_mfcc_store, *FOLDS, "--aux", "none", "--out", out, *TINY)
    assert "\r" not in result.output and "\x1b[" not in result.output  # not a terminal: no cursor codes
    metrics = [json.loads((out / f"fold_{k}" / "metrics.json").read_text()) for k in (1, 2, 3)]
    for k, m in enumerate(metrics, 1):
        assert f"{out} fold {k}: WA {m['wa']:.2f}, UWA {m['uwa']:.2f} (best epoch {m['best_epoch']})" in result.output
    assert "folds:" in result.output and "fold 1:" in result.output  # the bars, as lines


def test_tqdm_disable_drops_the_bars_and_quiet_drops_everything_but_results(iemocap_mfcc_store, tmp_path) -> None:
    no_bars = run(
        "cv",
        "--store",
        iemocap_mfcc_store,
        *FOLDS,
        "--aux",
        "none",
        "--out",
        tmp_path / "a",
        *TINY,
        env={"TQDM_DISABLE": "1"},
    ).output
    assert "epoch/s" not in no_bars and "s/epoch" not in no_bars and "folds:" not in no_bars
    assert f"{tmp_path / 'a'} fold 2: WA" in no_bars
    quiet = run(
        "cv", "--store", iemocap_mfcc_store, *FOLDS, "--aux", "none", "--out", tmp_path / "b", *TINY, "--quiet"
    ).output
    assert quiet.strip().splitlines() == [
        line for line in quiet.strip().splitlines() if line.startswith(f"{tmp_path / 'b'}: WA")
    ]
    assert len(quiet.strip().splitlines()) == 1


def test_report_maps_the_embeddings_and_marks_the_epoch_kept(iemocap_mfcc_store, tmp_path) -> None:
    out = tmp_path / "run"
    run("cv", "--store", iemocap_mfcc_store, *FOLDS, "--aux", "expression", "--out", out, *TINY, "--quiet")
    report = tmp_path / "report"
    run("report", out, "--out", report)
    text = (report / "report.md").read_text()
    assert "### Embeddings" in text and "t-SNE of fold 1's test-utterance emotion embeddings" in text
    assert (report / "figures" / "run_tsne.png").stat().st_size > 10_000
    (out / "fold_1" / "embeddings.npz").write_bytes(b"not a zip")
    damaged = run("report", out, "--out", tmp_path / "again", ok=False)
    assert damaged.exit_code == 1 and f"{out / 'fold_1' / 'embeddings.npz'} is damaged" in damaged.output


def test_training_curves_show_the_validation_loss_and_the_epoch_kept(tmp_path, monkeypatch) -> None:
    import trainer.plots

    history = [
        {"epoch": e, "train_loss": 1.0 / e, "valid_loss": 1.2 / e, "valid_uwa": 40 + e, "alpha": 0.0} for e in (1, 2, 3)
    ]
    drawn = []
    real_save = trainer.plots._save

    def keep(figure, path):
        axes = figure.axes
        drawn.append(
            (
                [ax.get_ylabel() for ax in axes],
                axes[0].get_title(),
                [line.get_xydata().tolist() for line in axes[2].lines],
            )
        )
        return real_save(figure, path)

    monkeypatch.setattr(trainer.plots, "_save", keep)
    trainer.plots.plot_training_curves([history], tmp_path / "c.png", "run", chosen=[2])
    labels, title, uwa_lines = drawn[0]
    assert labels == ["train loss", "valid loss", "valid UWA (%)"] and "the epoch kept" in title
    assert uwa_lines[1] == [[2.0, 42.0]]  # the star sits on epoch 2's validation UWA


def test_report_shows_the_learned_layer_weights_of_a_weighted_run(csv_corpus, tmp_path) -> None:
    from featurestore.features.random_models import save_random_ssl_model
    from trainer.runs import learned_layer_weights

    model = save_random_ssl_model(tmp_path / "ssl")
    store = tmp_path / "w2v2.zarr"
    run(
        "extract",
        "--manifest",
        csv_corpus,
        "--feature",
        "w2v2",
        "--model",
        model,
        "--layers",
        "all",
        "--store",
        store,
        "--device",
        "cpu",
        "--quiet",
    )
    out = tmp_path / "run"
    run(
        "cv",
        "--store",
        store,
        "--protocol",
        "group-kfold",
        "--by",
        "speaker",
        "--folds",
        "3",
        "--aux",
        "none",
        "--layer",
        "weighted",
        "--out",
        out,
        *TINY[2:],
        "--epochs",
        "2",
        "--quiet",
    )
    names, weights = learned_layer_weights(out)
    assert len(weights) == 3 and all(abs(sum(w) - 1) < 1e-5 for w in weights) and names[0] == "hidden state 0"
    assert any(abs(w[0] - 1 / len(w)) > 1e-6 for w in weights)  # learned: no longer the uniform start
    run("report", out, "--out", tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert (
        "### Learned layer weights (`--layer weighted`)" in text
        and (tmp_path / "report" / "figures" / "run_layers.png").is_file()
    )


def test_tensorboard_logs_every_epoch(iemocap_mfcc_store, tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run(
        "train",
        "--store",
        iemocap_mfcc_store,
        *FOLDS,
        "--aux",
        "expression",
        "--out",
        out,
        *TINY,
        "--tensorboard",
        "--quiet",
    )
    events = EventAccumulator(str(out / "tensorboard" / "fold_1"))
    events.Reload()
    assert {"train_loss", "valid_uwa", "valid_loss", "alpha"} <= set(events.Tags()["scalars"])
    history = json.loads((out / "fold_1" / "history.json").read_text())
    assert [e.value for e in events.Scalars("valid_uwa")] == pytest.approx([h["valid_uwa"] for h in history], abs=1e-4)
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    missing = run(
        "train", "--store", iemocap_mfcc_store, *FOLDS, "--out", tmp_path / "r2", *TINY, "--tensorboard", ok=False
    )
    assert missing.exit_code == 1 and "pip install 'sermtl[tensorboard]'" in missing.output
