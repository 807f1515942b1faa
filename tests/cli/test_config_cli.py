"""Config files on the command line: a run's own config.json reproduces it, presets are
found by name, flags override the file, and bad files are one line that writes nothing."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import run

TINY = ["--epochs", "1", "--channels", "8", "--embedding-dim", "8", "--batch-size", "8", "--device", "cpu"]
FOLDS = ["--protocol", "group-kfold", "--by", "speaker", "--folds", "2"]


def test_a_runs_config_json_reproduces_its_results_exactly(iemocap_mfcc_store, tmp_path) -> None:
    first = tmp_path / "run"
    run("cv", "--store", iemocap_mfcc_store, *FOLDS, *TINY, "--alpha0", "0.2", "--out", first)
    again = tmp_path / "again"
    run("cv", "--config", first / "config.json", "--out", again)
    assert json.loads((again / "results.json").read_text()) == json.loads((first / "results.json").read_text())
    saved, again_saved = (
        json.loads((first / "config.json").read_text()),
        json.loads((again / "config.json").read_text()),
    )
    # the first run chose its input normalisation (auto) and says why; the second was given that choice
    assert saved.pop("decisions")["input_norm"]["auto"] == saved["train"]["network"]["input_norm"]
    assert again_saved == saved
    # flags override the file: another alpha0 is another run
    third = tmp_path / "third"
    run("cv", "--config", first / "config.json", "--alpha0", "0.3", "--out", third)
    assert json.loads((third / "config.json").read_text())["train"]["alpha0"] == 0.3


def test_a_yaml_file_and_a_preset(iemocap_mfcc_store, tmp_path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(
        "epochs: 1\nbatch_size: 8\nnetwork:\n  channels: 8\n  embedding_dim: 8\n"
        "protocol:\n  name: group-kfold\n  by: speaker\n  folds: 2\n"
    )
    out = tmp_path / "run"
    run("train", "--store", iemocap_mfcc_store, "--config", config, "--device", "cpu", "--out", out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["network"]["channels"] == 8 and saved["protocol"]["name"] == "group-kfold"
    preset = tmp_path / "preset"
    run(
        "train",
        "--store",
        iemocap_mfcc_store,
        "--config",
        "tiny",
        *FOLDS,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        preset,
    )
    assert json.loads((preset / "config.json").read_text())["train"]["network"]["channels"] == 32


def test_the_small_corpus_preset_resolves_to_its_measured_settings(iemocap_mfcc_store, tmp_path) -> None:
    from trainer.config import TrainConfig, read_config_file

    preset = read_config_file("small-corpus")
    config = TrainConfig.from_dict(preset.train)
    assert (
        config.network.input_norm,
        config.batch_size,
        config.network.channels,
        config.epochs,
        config.average_best,
    ) == ("auto", 16, 64, 15, 3)
    assert config.aux == "auto" and config.lr_schedule == "constant"  # left as the defaults
    assert preset.fuse == ("fbank", "egemaps-functionals")  # the store's siblings, fused
    out = tmp_path / "run"
    run(
        "train",
        "--store",
        iemocap_mfcc_store,
        "--config",
        "small-corpus",
        "--fuse",
        "none",  # this store has no fbank and functionals beside it
        *FOLDS,
        "--epochs",
        "3",
        "--device",
        "cpu",
        "--out",
        out,
    )
    identity = json.loads((out / "config.json").read_text())
    saved = identity["train"]
    # auto: half of this synthetic corpus's speakers speak most emotions, not more than half
    assert identity["decisions"]["input_norm"]["auto"] == "global"
    assert (saved["network"]["input_norm"], saved["batch_size"], saved["epochs"], saved["average_best"]) == (
        "global",
        16,
        3,
        3,
    )
    assert json.loads((out / "fold_1" / "metrics.json").read_text())["averaged_epochs"] == [1, 2, 3]


@pytest.mark.parametrize(
    "text, message",
    [
        ("chanels: 128\n", "unknown key 'chanels' (nearest: channels)"),
        ("network:\n  chanels: 128\n", "unknown option 'chanels' (nearest: channels)"),
        ("channels: 12\n", "--channels must be in [8, 8192], a multiple of 8, got 12"),
        (
            "input_norm: utterence\n",
            "--input-norm: 'utterence' is not one of auto, global, utterance, speaker (nearest: utterance)",
        ),
        ("protocol:\n  name: loso\n  bye: speaker\n", "unknown protocol key 'bye' (nearest: by)"),
        (
            "protocol:\n  name: lsoo\n",
            "--protocol: 'lsoo' is not one of loso, kfold, group-kfold, split, file (nearest: loso)",
        ),
        ("[1, 2", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping of options"),
    ],
)
def test_a_bad_config_file_is_one_line_and_writes_nothing(iemocap_mfcc_store, tmp_path, text, message) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = run("cv", "--store", iemocap_mfcc_store, "--config", config, "--out", tmp_path / "run", ok=False)
    assert result.exit_code == 1 and message in result.output, result.output
    assert str(config) in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_no_store_anywhere_and_no_such_preset(tmp_path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"epochs": 1}')
    result = run("cv", "--config", config, "--out", tmp_path / "run", ok=False)
    assert "--store is required" in result.output and not (tmp_path / "run").exists()
    result = run("cv", "--store", "x.zarr", "--config", "nosuch", ok=False)
    assert "--config (no such file, nor a preset): 'nosuch' is not one of paper, small-corpus, tiny" in result.output
