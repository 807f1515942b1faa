"""Typed errors: every registry refuses a bogus name with the nearest-name error of its type,
and a refusal of each domain has that domain's type, so a library caller can tell a bad
config from a damaged store without reading the message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featurestore.errors import (
    AudioError,
    ConfigError,
    CorpusError,
    ModelError,
    RunError,
    SermtlError,
    StoreError,
    nearest,
    unknown_choice,
)

DOMAINS = (ConfigError, CorpusError, AudioError, StoreError, ModelError, RunError)


def test_every_domain_is_a_sermtl_error_and_none_is_another() -> None:
    assert all(issubclass(error, SermtlError) for error in DOMAINS)
    assert not any(issubclass(a, b) for a in DOMAINS for b in DOMAINS if a is not b)


def test_unknown_choice_names_the_choices_and_the_nearest() -> None:
    error = unknown_choice("--by", "speker", ["session", "speaker"])
    assert isinstance(error, ConfigError)
    assert str(error) == "--by: 'speker' is not one of session, speaker (nearest: speaker)"
    assert nearest("zzz", ["session", "speaker"]) == ""
    assert isinstance(unknown_choice("x", 1, ["a"], StoreError), StoreError)


def _corpus(name: str):
    from featurestore.corpora import prepare

    return prepare(name, ".")


def _feature(name: str):
    from featurestore.features import build_extractor

    return build_extractor(name)


def _format(name: str):
    from featurestore.store.base import get_backend

    return get_backend(name)


def _preset(name: str):
    from trainer.config import read_config_file

    return read_config_file(name)


def _protocol(name: str):
    from trainer.protocols import Protocol

    return Protocol(name)


def _experiment(name: str):
    from trainer.experiments import run_experiment

    return run_experiment(name, None)


def _option(name: str):
    from trainer.config import parse_value

    return parse_value(name, "1")


def _functionals(name: str):
    from trainer.baseline import resolve_functionals

    return resolve_functionals(None, name)


@pytest.mark.parametrize(
    "lookup, bogus, near",
    [
        (_corpus, "iemocapp", "iemocap"),
        (_feature, "mfc", "mfcc"),
        (_format, "zar", "zarr"),
        (_preset, "smal-corpus", "small-corpus"),
        (_protocol, "lso", "loso"),
        (_experiment, "tabel3", "table3"),
        (_option, "chanels", "channels"),
        (_functionals, "egemap", "egemaps"),
    ],
    ids=["corpus", "feature", "store format", "preset", "protocol", "experiment", "training option", "functionals"],
)
def test_a_bogus_registry_name_is_a_config_error_naming_the_nearest(lookup, bogus, near) -> None:
    with pytest.raises(ConfigError, match=rf"'{bogus}'.*\(nearest: {near}\)"):
        lookup(bogus)


@pytest.mark.parametrize(
    "title", ["corpora", "features", "store formats", "protocols", "presets", "experiments", "functionals"]
)
def test_every_registry_refuses_a_bogus_name_naming_the_nearest(title: str) -> None:
    from trainer.registries import REGISTRIES

    registry = REGISTRIES[title]
    name = registry.names()[-1]
    bogus = name[:-1]  # one letter short of a registered name
    with pytest.raises(ConfigError, match=rf"^{registry.flag.split()[0]}.*'{bogus}'.*\(nearest: {name}\)"):
        registry.load(bogus)
    assert registry.load(name) is not None


def test_the_registries_listed_are_all_there_are() -> None:
    from trainer.registries import REGISTRIES

    assert sorted(REGISTRIES) == sorted(
        ["corpora", "features", "store formats", "protocols", "presets", "experiments", "functionals"]
    )


def test_each_domain_refuses_with_its_own_type(tmp_path: Path) -> None:
    from featurestore.audio import load_audio
    from featurestore.manifest import Manifest
    from featurestore.store import open_store
    from trainer.checkpoint import load_checkpoint
    from trainer.runfiles import read_results

    ragged = tmp_path / "m.csv"
    ragged.write_text("utt_id,path,emotion,speaker\nu1,a.wav,sad,s1,extra\n")
    with pytest.raises(CorpusError, match="m.csv:2"):
        Manifest.read_csv(ragged)
    with pytest.raises(AudioError, match="gone.wav"):
        load_audio(tmp_path / "gone.wav")
    with pytest.raises(StoreError, match="none.zarr"):
        open_store(tmp_path / "none.zarr")
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="c.pt"):
        load_checkpoint(tmp_path / "c.pt")
    (tmp_path / "results.json").write_text(json.dumps({"wa": 1e308, "uwa": 50, "folds": []}))
    with pytest.raises(RunError, match="results.json: wa"):
        read_results(tmp_path / "results.json")
