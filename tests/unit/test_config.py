"""The training configuration: one declaration per option, checked when built, from Python
and from the command line alike."""

from __future__ import annotations

import dataclasses
import doctest

import click
import pytest

import trainer.config
from cli import main
from featurestore.errors import ConfigError
from featurestore.options import declared, field_flag
from trainer.config import TrainConfig, flag, options
from trainer.protocols import Protocol

#: A value each field refuses (one per field: the test below checks none is missing).
BAD_VALUES = {
    "epochs": 0,
    "batch_size": 1,
    "lr": float("inf"),
    "weight_decay": -1.0,
    "dropout": 1.0,
    "alpha0": 1.5,
    "alpha_step": float("nan"),
    "alpha_max": 2.0,
    "aux": "",
    "label": "a\x00b",
    "layer": "top",
    "channels": 12,
    "embedding_dim": 0,
    "margin": -0.1,
    "scale": 0.0,
    "crop_seconds": 0.0,
    "batching": "sorted",
    "input_norm": "utterence",
    "class_weights": "inverse",
    "label_smoothing": 1.0,
    "augment": "mixup",
    "lr_schedule": "step",
    "batchnorm": "batch",
    "average_best": 0,
    "seed": -1,
    "device": "gpu",
}


def test_every_field_has_help_and_a_refused_value() -> None:
    names = [field.name for field, _ in options()]
    assert sorted(names) == sorted(BAD_VALUES), "add the new field's bad value to BAD_VALUES"
    assert all(spec.help for _, spec in options())


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_each_bad_value_is_refused_from_python_naming_the_flag(name: str) -> None:
    with pytest.raises(ConfigError, match=flag(name)) as error:
        TrainConfig.from_dict({name: BAD_VALUES[name]})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_each_bad_value_is_refused_from_the_cli_before_anything_is_written(name: str, tmp_path) -> None:
    from click.testing import CliRunner

    out = tmp_path / "run"
    value = BAD_VALUES[name]
    result = CliRunner().invoke(
        main, ["train", "--store", str(tmp_path / "none.zarr"), "--out", str(out), flag(name), str(value)]
    )
    assert result.exit_code in (1, 2), result.output
    assert flag(name) in result.output or repr(value) in result.output or str(value) in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("command", ["train", "cv"])
def test_the_cli_offers_exactly_the_config_fields(command: str) -> None:
    params = {p.name for p in main.commands[command].params if isinstance(p, click.Option)}
    fields = {field.name for field, _ in options()}
    assert fields <= params
    protocol = {field.name for field, spec in declared(Protocol) if spec.cli}
    assert protocol == {"name", "by", "folds", "valid_fraction", "train_values", "test_values", "path"}
    protocol |= {"stores", "fuse", "config_file", "out", "quiet"}
    extra = {"train": {"fold", "all_data", "repeats", "tensorboard"}, "cv": {"repeats", "tensorboard"}}[command]
    assert params - fields == protocol | extra


@pytest.mark.parametrize("command", ["train", "cv", "sweep", "baseline"])
def test_cli_flags_defaults_help_and_choices_come_from_the_declarations(command: str) -> None:
    params = {p.name: p for p in main.commands[command].params if isinstance(p, click.Option)}
    training = [(f, s) for f, s in options() if command != "baseline" or f.name in ("label", "seed")]
    for field, spec in [*training, *((f, s) for f, s in declared(Protocol) if s.cli)]:
        param = params[field.name]
        assert param.opts == [field_flag(field)] and param.default == field.default
        assert param.help.startswith(spec.help) and param.show_default == spec.show_default
        if spec.choices:
            assert tuple(param.type.choices) == spec.choices
    assert {field.name for field, spec in declared(Protocol) if spec.cli} <= set(params)


def test_defaults_are_the_papers_and_valid() -> None:
    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.lr, config.alpha0, config.alpha_step) == (50, 64, 1e-3, 0.1, 0.05)
    assert config.alpha(0) == pytest.approx(0.1) and config.network.channels == 512


def test_option_names_are_unique_and_nested_options_round_trip() -> None:
    names = [field.name for field, _ in options()]
    assert len(names) == len(set(names))
    config = TrainConfig.from_dict({"channels": 64, "lr": 0.01, "network": {"dropout": 0.5}})
    assert config.network.channels == 64 and config.network.dropout == 0.5 and config.lr == 0.01
    assert TrainConfig.from_dict(config.to_dict()) == config == TrainConfig.from_dict(config.flat())
    assert config.flat()["channels"] == 64 and "network" not in config.flat()


def test_the_config_is_immutable_and_replace_is_checked() -> None:
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"^--lr\b.*got -1\.0$"):
        dataclasses.replace(config, lr=-1.0)


def test_cross_field_checks() -> None:
    with pytest.raises(ConfigError, match=r"--average-best 5\b.*--epochs 3\b"):
        TrainConfig(epochs=3, average_best=5)


def test_from_dict_names_the_nearest_key() -> None:
    with pytest.raises(ConfigError, match=r"'alpah0' \(nearest: alpha0\)"):
        TrainConfig.from_dict({"alpah0": 0.2})
    assert TrainConfig.from_dict({"alpha0": 0.2}).alpha0 == 0.2


def test_the_config_module_needs_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, trainer.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_doctest() -> None:
    result = doctest.testmod(trainer.config)
    assert result.attempted > 0 and result.failed == 0
