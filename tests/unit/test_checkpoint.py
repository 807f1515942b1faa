"""Checkpoints are read as data: a pickle that would run code is refused and runs nothing,
and a checkpoint's metadata and tensors are checked against the network it declares before
any network is built (one line naming the file and the key)."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
import torch

import trainer.checkpoint
from featurestore.errors import ModelError
from trainer.checkpoint import expected_shapes, load_checkpoint, save_checkpoint
from trainer.config import NetworkOptions
from trainer.limits import MAX_CLASSES
from trainer.network import MAX_INPUT_LAYERS, MAX_INPUT_SIZE, NetworkConfig, SERNetwork


class WritesAFile:
    """Unpickled, it calls ``os.system`` to create a file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _checkpoint(**extra) -> dict:
    """A checkpoint laid out as ``train_fold`` writes it, of a tiny real network (2 emotions,
    2 auxiliary classes)."""
    network = SERNetwork(
        NetworkConfig(input_size=40, num_emotions=2, num_aux=2, options=NetworkOptions(channels=16, embedding_dim=8))
    )
    return {
        "network": dataclasses.asdict(network.config),
        "state_dict": network.state_dict(),
        "emotions": ["angry", "sad"],
        "aux": {"column": "expression", "classes": ["acted", "spont"]},
        "feature": {"feature": "mfcc"},
        "layer": None,
        "label": "emotion",
        "store_dtype": "float32",
        **extra,
    }


def _network(**change) -> dict:
    return {**_checkpoint()["network"], **change}


def _options(**change) -> dict:
    network = _checkpoint()["network"]
    return {**network, "options": {**network["options"], **change}}


def _tensors(**change) -> dict:
    return {**_checkpoint()["state_dict"], **change}


def test_a_checkpoint_round_trips(tmp_path) -> None:
    path = tmp_path / "c.pt"
    written = _checkpoint()
    save_checkpoint(path, written)
    loaded = load_checkpoint(path)
    assert loaded["emotions"] == ["angry", "sad"] and loaded["aux"]["classes"] == ["acted", "spont"]
    assert torch.equal(loaded["state_dict"]["emotion_head.weight"], written["state_dict"]["emotion_head.weight"])


def test_the_flat_network_layout_of_older_versions_still_loads(tmp_path) -> None:
    network = _checkpoint()["network"]
    flat = {**{k: v for k, v in network.items() if k != "options"}, **network["options"]}
    save_checkpoint(tmp_path / "old.pt", _checkpoint(network=flat))
    assert NetworkConfig.from_dict(load_checkpoint(tmp_path / "old.pt")["network"]).options.channels == 16


def test_a_pickle_that_runs_os_system_is_refused_and_runs_nothing(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(_checkpoint(payload=WritesAFile(marker)), path)
    with pytest.raises(ModelError, match=rf"{re.escape(str(path))}: .*other than tensors and plain data") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"state_dict": _tensors(**{"encoder.conv.weight": [1, 2]})},
            "state_dict.encoder.conv.weight: expected a tensor",
        ),
        ({"emotions": []}, "emotions: expected at least 1 item(s), got 0"),
        ({"emotions": [0, 1]}, "emotions[0]: expected text of at most 256 characters, got 0"),
        ({"emotions": ["angry"]}, "emotions: 1 class names, but network.num_emotions is 2"),
        ({"emotions": ["sad", "sad"]}, "emotions: the class name 'sad' appears 2 times"),
        ({"aux": {"column": 3, "classes": ["acted", "spont"]}}, "aux.column: expected text"),
        (
            {"aux": {"column": "expression", "classes": ["acted"]}},
            "aux.classes: 1 class names, but network.num_aux is 2",
        ),
        ({"aux": None}, "aux.classes: 0 class names, but network.num_aux is 2"),
        ({"network": None}, "network: expected a mapping"),
        (
            {"network": _network(num_emotions=10**6)},
            f"network.num_emotions: expected an integer in [1, {MAX_CLASSES}], got 1000000",
        ),
        ({"network": _network(num_aux=2.5)}, "network.num_aux: expected an integer"),
        ({"network": _network(input_size=10**9)}, f"network.input_size: expected an integer in [1, {MAX_INPUT_SIZE}]"),
        (
            {"network": _network(input_layers=10**4)},
            f"network.input_layers: expected an integer in [1, {MAX_INPUT_LAYERS}]",
        ),
        ({"network": _options(channels=7)}, "network.options: --channels must be in [8, 8192], a multiple of 8, got 7"),
        ({"network": _options(bogus=1)}, "network.options: unknown key 'bogus'"),
        ({"network": _options(chanels=64)}, "network.options: unknown key 'chanels' (nearest: channels)"),
        ({"network": _options(input_norm="x" * 10**6)}, "network.options.input_norm: expected a finite number or text"),
        (
            {"state_dict": _tensors(**{"emotion_head.weight": torch.zeros(3, 8)})},
            "state_dict.emotion_head.weight: expected shape (2, 8), got (3, 8)",
        ),
        (
            {"state_dict": {k: v for k, v in _tensors().items() if k != "feature_mean"}},
            "state_dict.feature_mean: missing",
        ),
        ({"state_dict": _tensors(**{"extra.weight": torch.zeros(1)})}, "state_dict: unknown key 'extra.weight'"),
        ({"state_dict": _tensors(feature_std=torch.full((40,), float("nan")))}, "state_dict.feature_std: holds NaN"),
        ({"layer": 99}, "layer: expected an integer in [0, 63] or one of weighted, got 99"),
        ({"store_dtype": "int8"}, "store_dtype: expected one of float16, float32, got 'int8'"),
        ({"feature": {"feature": None}}, "feature.feature: expected text"),
    ],
)
def test_a_checkpoint_of_the_wrong_shape_is_one_line_naming_file_and_key(tmp_path, change, message) -> None:
    path = tmp_path / "odd.pt"
    torch.save(_checkpoint(**change), path)
    with pytest.raises(ModelError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"not a sermtl checkpoint: {path}: ") and message in str(error.value)
    assert "\n" not in str(error.value) and len(str(error.value)) < 500


def test_sizes_are_checked_before_any_network_is_built(tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr(trainer.checkpoint, "SERNetwork", refuse)
    torch.save(
        _checkpoint(network=_network(num_emotions=10**6), emotions=[str(i) for i in range(10**6)]), tmp_path / "huge.pt"
    )
    with pytest.raises(
        ModelError, match=rf"{re.escape(str(tmp_path / 'huge.pt'))}: network\.num_emotions\b.*\[1, 1000\], got 1000000$"
    ):
        load_checkpoint(tmp_path / "huge.pt")


def test_expected_shapes_of_the_largest_network_allocate_nothing() -> None:
    largest = NetworkConfig(
        MAX_INPUT_SIZE, MAX_CLASSES, MAX_CLASSES, MAX_INPUT_LAYERS, NetworkOptions(channels=8192, embedding_dim=8192)
    )
    shapes = expected_shapes(largest)  # several GB if it were allocated
    assert shapes["emotion_head.weight"] == (MAX_CLASSES, 8192) and shapes["feature_mean"] == (64, MAX_INPUT_SIZE)


def test_not_a_dict_a_folder_and_a_missing_file(tmp_path) -> None:
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ModelError, match=rf"{re.escape(str(tmp_path / 'list.pt'))}: holds a list\b"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(ModelError, match=rf"not found: {re.escape(str(tmp_path / 'none.pt'))}$"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(ModelError, match=rf"{re.escape(str(tmp_path / 'folder.pt'))}: not a regular file"):
        load_checkpoint(tmp_path / "folder.pt")
