"""Hostile models: crafted checkpoints' metadata, model folders and ``export --out``.

A checkpoint is checked against the network it declares before any network is built, so a
2 KiB file declaring a million classes is one line in bounded memory, and class names or
tensors that do not fit the network are one line naming the file and the key. ``export``
never replaces another command's file or its own input. ``Predictor`` cases (arrays in
Python, not files) are unit tests in ``tests/cli/test_predictor.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.hostile.conftest import Workspace
from tests.hostile.harness import Argv, Case, case_ids, check_case, invoke
from tests.hostile.test_hostile import _predict_with

#: A normal ``predict`` of one file with the base run's checkpoint peaked at about 380 MiB
#: (torch and the MFCC extractor imported); a crafted size must not add more than ~300 MiB
#: (before the checks, a million classes reached 3.2 GB).
PREDICT_RSS_MIB = 700


# -- builders --------------------------------------------------------------------------------
def _edited(ws: Workspace, **change: Any) -> Path:
    """The base checkpoint with its top-level keys (``network``, ``emotions``…) changed."""
    checkpoint = torch.load(ws.checkpoint, weights_only=True)
    for key, value in change.items():
        checkpoint[key] = value(checkpoint[key]) if callable(value) else value
    path = ws.tmp / "edited.pt"
    torch.save(checkpoint, path)
    return path


def _with_tensor(ws: Workspace, key: str, tensor: torch.Tensor) -> Path:
    return _edited(ws, state_dict=lambda state: {**state, key: tensor})


def _model_folder(ws: Workspace, checkpoint: bytes | None) -> Path:
    """A ``train --all-data`` model folder whose ``checkpoint.pt`` holds ``checkpoint`` (absent: None)."""
    folder = ws.tmp / "model"
    folder.mkdir()
    (folder / "MODEL_CARD.md").write_text("# Model card\n")
    (folder / "history.csv").write_text("epoch,loss\n1,0.5\n")
    if checkpoint is not None:
        (folder / "checkpoint.pt").write_bytes(checkpoint)
    return folder


def _export(ws: Workspace, out: Path) -> Argv:
    return ["export", "--checkpoint", ws.checkpoint, "--format", "torchscript", "--out", out]


def _exported_once(ws: Workspace) -> Argv:
    argv = _export(ws, ws.tmp / "model.pt")
    assert invoke(argv).exit_code == 0
    return argv


def _unchanged(*names: str) -> Any:
    """``after``: the run's files ``names`` are as in the base run, and no export file appeared."""

    def check(ws: Workspace) -> None:
        fold = ws.run / "fold_1"
        for name in names:
            assert (fold / name).read_bytes() == (ws.base["run"] / "fold_1" / name).read_bytes(), f"{name} changed"
        assert sorted(p.name for p in fold.iterdir()) == sorted(p.name for p in (ws.base["run"] / "fold_1").iterdir())

    return check


def _nothing_written(name: str) -> Any:
    def check(ws: Workspace) -> None:
        assert not list(ws.tmp.glob(name + "*")), f"{name} written"

    return check


def _marked_export(ws: Workspace) -> None:
    assert json.loads((ws.tmp / "model.pt.json").read_text())["written_by"] == "sermtl export"
    assert (ws.tmp / "model.pt").stat().st_size > 0 and (ws.tmp / "model.pt.md").is_file()


CASES = [
    # -- checkpoint metadata -----------------------------------------------------------------
    Case(
        "models",
        "a checkpoint declaring a million classes",
        lambda ws: _predict_with(ws, _edited(ws, network=lambda n: {**n, "num_emotions": 10**6})),
        culprit="network.num_emotions",
        max_rss_mib=PREDICT_RSS_MIB,
    ),
    Case(
        "models",
        "a checkpoint declaring a 10^9-wide input",
        lambda ws: _predict_with(ws, _edited(ws, network=lambda n: {**n, "input_size": 10**9})),
        culprit="network.input_size",
        max_rss_mib=PREDICT_RSS_MIB,
    ),
    Case(
        "models",
        "a checkpoint declaring the widest channels with small tensors",
        lambda ws: _predict_with(
            ws, _edited(ws, network=lambda n: {**n, "options": {**n["options"], "channels": 8192}})
        ),
        culprit="state_dict.",
        max_rss_mib=PREDICT_RSS_MIB,
    ),
    Case(
        "models",
        "class names that are numbers",
        lambda ws: _predict_with(ws, _edited(ws, emotions=[0, 1, 2, 3])),
        culprit="emotions[0]: expected text",
    ),
    Case(
        "models",
        "fewer class names than the network's outputs",
        lambda ws: _predict_with(ws, _edited(ws, emotions=lambda e: e[:2])),
        culprit="emotions: 2 class names, but network.num_emotions is 4",
    ),
    Case(
        "models",
        "auxiliary classes that do not match the auxiliary head",
        lambda ws: _predict_with(ws, _edited(ws, aux=lambda a: {**a, "classes": a["classes"] + ["extra"]})),
        culprit="aux.classes: 3 class names, but network.num_aux is 2",
    ),
    Case(
        "models",
        "no auxiliary classes for a network with an auxiliary head",
        lambda ws: _predict_with(ws, _edited(ws, aux=None)),
        culprit="aux.classes: 0 class names",
    ),
    Case(
        "models",
        "a state_dict tensor of the wrong shape",
        lambda ws: _predict_with(ws, _with_tensor(ws, "emotion_head.weight", torch.zeros(4, 9))),
        culprit="state_dict.emotion_head.weight: expected shape (4, 8), got (4, 9)",
    ),
    Case(
        "models",
        "a state_dict tensor holding NaN",
        lambda ws: _predict_with(ws, _with_tensor(ws, "emotion_head.weight", torch.full((4, 8), float("nan")))),
        culprit="state_dict.emotion_head.weight: holds NaN",
    ),
    Case(
        "models",
        "a class name of a megabyte",
        lambda ws: _predict_with(ws, _edited(ws, emotions=lambda e: ["x" * 2**20] + e[1:])),
        culprit="emotions[0]",
    ),
    Case(
        "models",
        "a layer index beyond any model's layers",
        lambda ws: _predict_with(ws, _edited(ws, layer=10**6)),
        culprit="layer",
    ),
    # -- model folders -----------------------------------------------------------------------
    Case(
        "models",
        "a model folder whose checkpoint is cut short",
        lambda ws: _predict_with(ws, _model_folder(ws, ws.checkpoint.read_bytes()[:900])),
        culprit="model/checkpoint.pt",
    ),
    Case(
        "models",
        "a model folder without its checkpoint",
        lambda ws: _predict_with(ws, _model_folder(ws, None)),
        culprit="model/checkpoint.pt",
    ),
    Case(
        "models",
        "export of a model folder whose checkpoint is damaged",
        lambda ws: ["export", "--checkpoint", _model_folder(ws, b"\0" * 64), "--out", ws.tmp / "m.onnx"],
        culprit="model/checkpoint.pt",
        after=_nothing_written("m.onnx"),
    ),
    # -- export --out ------------------------------------------------------------------------
    Case(
        "models",
        "export --out onto a fold's metrics (metrics.json)",
        lambda ws: _export(ws, ws.run / "fold_1" / "metrics"),
        culprit="metrics.json",
        after=_unchanged("metrics.json", "checkpoint.pt"),
    ),
    Case(
        "models",
        "export --out naming the input checkpoint",
        lambda ws: _export(ws, ws.checkpoint),
        culprit="is the input checkpoint",
        after=_unchanged("checkpoint.pt"),
    ),
    Case("models", "export again to the same --out", _exported_once, code=0, after=_marked_export),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_models(case: Case, ws: Workspace, monkeypatch) -> None:
    monkeypatch.chdir(ws.tmp)
    check_case(case, ws)
