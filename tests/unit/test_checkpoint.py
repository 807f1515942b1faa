"""Checkpoints are read as data: a pickle that would run code is refused and runs nothing."""

from __future__ import annotations

import os

import pytest
import torch

from featurestore.errors import SermtlError
from trainer.checkpoint import load_checkpoint, save_checkpoint


class WritesAFile:
    """Unpickled, it calls ``os.system`` to create a file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _checkpoint(**extra) -> dict:
    return {"network": {"input_size": 4, "num_emotions": 2}, "state_dict": {"w": torch.zeros(2)},
            "emotions": ["a", "b"], "feature": {"feature": "mfcc"}, "layer": None, "label": "emotion", **extra}


def test_a_checkpoint_round_trips(tmp_path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, _checkpoint(aux={"column": "expression", "classes": ["acted", "spont"]}))
    loaded = load_checkpoint(path)
    assert loaded["emotions"] == ["a", "b"] and torch.equal(loaded["state_dict"]["w"], torch.zeros(2))


def test_a_pickle_that_runs_os_system_is_refused_and_runs_nothing(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(_checkpoint(payload=WritesAFile(marker)), path)
    with pytest.raises(SermtlError, match="evil.pt: it holds objects other than tensors and plain data") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    ({"state_dict": {"w": [1, 2]}}, "not tensors"),
    ({"emotions": []}, "class names"),
    ({"aux": {"column": 3}}, "'aux' is malformed"),
    ({"network": None}, "'network' missing"),
])
def test_a_checkpoint_of_the_wrong_shape_is_refused(tmp_path, change, message) -> None:
    path = tmp_path / "odd.pt"
    torch.save(_checkpoint(**change), path)
    with pytest.raises(SermtlError, match=message):
        load_checkpoint(path)


def test_not_a_dict_and_missing_file(tmp_path) -> None:
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(SermtlError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(SermtlError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
