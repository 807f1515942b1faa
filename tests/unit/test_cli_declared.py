"""Every option of every command is generated from a declaration (no hand-written flag), and
what the commands do is a library call a Python user can make: the declarations check
their values when built, and the library functions behind the commands give what the
command line gives."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import click
import numpy as np
import pytest

from cli import main
from featurestore.commandline import DeclaredOption
from featurestore.errors import ConfigError
from featurestore.options import field_flag, kind

#: Options click adds to every command or group itself.
CLICK_OWN = {"help", "version"}


def _options() -> list[tuple[str, click.Option]]:
    return [
        (name, param)
        for name, command in main.commands.items()
        for param in command.params
        if isinstance(param, click.Option) and param.name not in CLICK_OWN
    ]


def test_every_option_of_every_command_is_made_from_a_declaration() -> None:
    found = _options()
    assert len(found) > 100  # every command's options, the training options many times over
    for command, param in found:
        where = f"{command} {param.opts[0]}"
        assert isinstance(param, DeclaredOption), f"{where} is written by hand"
        field = param.declaration
        spec = field.metadata["spec"]
        plain, _ = kind(field)
        assert param.opts[0] == field_flag(field) and param.name == field.name, where
        assert param.help.startswith(spec.help), where
        assert param.required == spec.required, where
        assert param.is_flag == (plain is bool) and param.multiple == (plain is tuple), where
        assert param.default == (None if plain is tuple else field.default), where
        if spec.choices:
            assert list(param.type.choices) == list(spec.choices), where


def test_a_flag_declared_twice_means_two_different_things() -> None:
    """The same flag may name different options of different commands (``--out`` is a run
    directory, a model folder, a report folder …), but never two copies of one option."""
    by_flag: dict[str, set] = defaultdict(set)
    for _, param in _options():
        by_flag[param.opts[0]].add(param.declaration)
    for flag, fields in by_flag.items():
        helps = [field.metadata["spec"].help for field in fields]
        assert len(set(helps)) == len(helps), f"{flag}: twin declarations"


@pytest.mark.parametrize(
    "build, culprit",
    [
        (lambda: _extract(feature="mfc"), "--feature"),
        (lambda: _extract(workers=0), "--workers"),
        (lambda: _extract(on_error="ignore"), "--on-error"),
        (lambda: _extract(batch_seconds=0.0), "--batch-seconds"),
        (lambda: _extract(device="gpu"), "--device"),
        (lambda: _source(corpus="iemocapp"), "--corpus"),
        (lambda: _run(repeats=0), "--repeats"),
        (lambda: _run(fold=0), "--fold"),
        (lambda: _sweep(grids=("lr=0.1",), grid_file="grid.yaml"), "--grid"),
        (lambda: _svm(c=0.0), "--c"),
        (lambda: _svm(input_norm="speakers"), "--input-norm"),
        (lambda: _model(device="gpu"), "--device"),
        (lambda: _export(format="tflite"), "--format"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_declaration_refuses_a_bad_value_naming_its_flag(build, culprit: str) -> None:
    with pytest.raises(ConfigError, match=f"^{culprit}"):
        build()


def _extract(**values):
    from featurestore.extract_options import ExtractOptions

    return ExtractOptions(**{"feature": "mfcc", **values})


def _source(**values):
    from featurestore.corpora.source import CorpusSource

    return CorpusSource(**values)


def _run(**values):
    from trainer.run_options import RunOptions

    return RunOptions(**values)


def _sweep(**values):
    from trainer.run_options import SweepOptions

    return SweepOptions(**values)


def _svm(**values):
    from trainer.baseline import SvmOptions

    return SvmOptions(**values)


def _model(**values):
    from trainer.model_options import ModelSource

    return ModelSource(checkpoint="model", **values)


def _export(**values):
    from trainer.model_options import ExportOptions

    return ExportOptions(out="model.onnx", **values)


def test_resolve_run_lets_the_flags_given_win_over_the_config_file(tmp_path: Path) -> None:
    from trainer.run_options import resolve_run

    config = tmp_path / "run.yaml"
    config.write_text(
        "store: cache/a.zarr\nprotocol: {name: group-kfold, by: speaker, folds: 4}\nlr: 0.01\nepochs: 7\n"
    )
    run = resolve_run(None, str(config), {"lr": 0.1, "folds": 3})
    assert run.store == "cache/a.zarr"
    assert (run.config.lr, run.config.epochs) == (0.1, 7)
    assert (run.protocol.name, run.protocol.by, run.protocol.folds) == ("group-kfold", "speaker", 3)
    assert resolve_run("b.zarr", None, {"path": "folds.json"}).protocol.name == "file"
    assert resolve_run("b.zarr", None, {}).protocol is None  # the store's default
    with pytest.raises(ConfigError, match="^--by/--folds"):
        resolve_run("b.zarr", None, {"folds": 3})
    with pytest.raises(ConfigError, match="^--store"):
        resolve_run(None, None, {})


def test_extract_corpus_from_python_matches_the_command_line(csv_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from featurestore.corpora.source import CorpusSource
    from featurestore.extract_options import ExtractOptions
    from featurestore.extraction import describe_extraction, extract_corpus, store_path_for
    from featurestore.store.reader import open_store

    monkeypatch.setenv("SERMTL_CACHE", str(tmp_path / "cache"))
    options = ExtractOptions(feature="mfcc", device="cpu")
    assert store_path_for("manifest", options) == tmp_path / "cache" / "manifest_mfcc.zarr"
    report = extract_corpus(CorpusSource(manifest=str(csv_corpus)), options, progress=False)
    assert report.stored == 12 and "12 stored" in describe_extraction(report)
    by_cli = tmp_path / "cli.zarr"
    done = CliRunner().invoke(
        main,
        [
            "extract",
            "--manifest",
            str(csv_corpus),
            "--feature",
            "mfcc",
            "--device",
            "cpu",
            "--store",
            str(by_cli),
            "-q",
        ],
    )
    assert done.exit_code == 0, done.output
    with open_store(report.store) as ours, open_store(by_cli) as theirs:
        assert ours.ids() == theirs.ids()
        for utt_id in ours.ids():
            assert np.array_equal(ours.read(utt_id), theirs.read(utt_id))
    again = extract_corpus(CorpusSource(manifest=str(csv_corpus)), options, progress=False)
    assert (again.stored, again.already_done) == (0, 12)


def test_sermtl_list_shows_every_registry() -> None:
    from click.testing import CliRunner

    from trainer.registries import REGISTRIES

    done = CliRunner().invoke(main, ["list"])
    assert done.exit_code == 0, done.output
    for title, registry in REGISTRIES.items():
        assert f"{title}:" in done.output and ", ".join(registry.names()) in done.output


def test_the_declarations_are_frozen_records_a_run_can_save() -> None:
    from trainer.baseline import SvmOptions

    options = SvmOptions(c=2.0, input_norm="speaker")
    assert json.loads(json.dumps(dataclasses.asdict(options))) == {
        "c": 2.0,
        "functionals": None,
        "input_norm": "speaker",
        "out": None,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.c = 3.0  # type: ignore[misc]
