"""sermtl export: TorchScript and ONNX graphs that give the eager model's outputs, with
their interface file and model card; refused checkpoints in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.cli.test_cli import run
from trainer.checkpoint import load_checkpoint
from trainer.export import InferenceGraph
from trainer.loop import load_network

TINY = ["--epochs", "1", "--channels", "16", "--embedding-dim", "8", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(iemocap_mfcc_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    run("train", "--store", iemocap_mfcc_store, "--aux", "expression", "--out", out, *TINY, "--quiet")
    return out / "fold_1" / "checkpoint.pt"


def eager_outputs(checkpoint, features, lengths):
    graph = InferenceGraph(load_network(load_checkpoint(checkpoint)))
    with torch.no_grad():
        return [t.numpy() for t in graph(torch.from_numpy(features), torch.from_numpy(lengths))]


def batch():
    rng = np.random.default_rng(3)
    return rng.standard_normal((3, 317, 40)).astype(np.float32), np.array([317, 120, 45], dtype=np.int64)


def test_torchscript_gives_the_eager_outputs(checkpoint, tmp_path) -> None:
    out = tmp_path / "model.pt"
    printed = run("export", "--checkpoint", checkpoint, "--format", "torchscript", "--out", out).output
    assert f"{out} (torchscript" in printed
    features, lengths = batch()
    traced = torch.jit.load(str(out))
    with torch.no_grad():
        exported = [t.numpy() for t in traced(torch.from_numpy(features), torch.from_numpy(lengths))]
    for ours, theirs in zip(exported, eager_outputs(checkpoint, features, lengths)):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    interface = json.loads((tmp_path / "model.pt.json").read_text())
    assert (
        interface["outputs"] == ["emotion_probs", "embedding", "aux_probs"]
        and interface["feature"]["feature"] == "mfcc"
    )
    assert "## Intended use and limits" in (tmp_path / "model.pt.md").read_text()


def test_onnx_gives_the_eager_outputs_in_onnxruntime(checkpoint, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "model.onnx"
    run("export", "--checkpoint", checkpoint, "--format", "onnx", "--out", out)
    session = ort.InferenceSession(str(out))
    assert [i.name for i in session.get_inputs()] == ["features", "lengths"]
    for features, lengths in (batch(), (batch()[0][:1, :90], np.array([90], dtype=np.int64))):  # other batch and length
        exported = session.run(None, {"features": features, "lengths": lengths})
        for ours, theirs in zip(exported, eager_outputs(checkpoint, features, lengths)):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_refused_checkpoints_are_one_line(checkpoint, tmp_path) -> None:
    ckpt = load_checkpoint(checkpoint)
    ckpt["network"]["input_size"] = 41  # as if from a version with other shapes
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    result = run("export", "--checkpoint", other, "--format", "torchscript", "--out", tmp_path / "x.pt", ok=False)
    message = f"not a sermtl checkpoint: {other}: state_dict.feature_mean: expected shape (41,), got (40,)"
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "x.pt").exists()
    import shutil

    two_folds = tmp_path / "run"
    for k in (1, 2):
        (two_folds / f"fold_{k}").mkdir(parents=True)
        shutil.copy(checkpoint, two_folds / f"fold_{k}" / "checkpoint.pt")
    result = run("export", "--checkpoint", two_folds, "--out", tmp_path / "y.onnx", ok=False)
    assert result.exit_code == 1 and "a run directory holds 2 folds; export one fold's checkpoint.pt" in result.output


def _files(folder) -> dict:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_export_never_replaces_another_commands_file_or_its_checkpoint(checkpoint, tmp_path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run_dir)
    fold, before = run_dir / "fold_1", _files(run_dir)
    assert (fold / "metrics.json").is_file()
    (fold / "link.pt").symlink_to(fold / "checkpoint.pt")
    (fold / "notes").write_text("mine\n")
    (fold / "notes.md").write_text("mine\n")
    refusals = {
        fold / "metrics": f"--out {fold / 'metrics'}: {fold / 'metrics.json'} already exists and was not "
        "written by an export",
        fold / "checkpoint.pt": f"--out {fold / 'checkpoint.pt'} is the input checkpoint",
        fold / "link.pt": f"--out {fold / 'link.pt'} is the input checkpoint",
        fold / "notes": f"{fold / 'notes'} already exists and was not written by an export",
    }
    for out, message in refusals.items():
        result = run(
            "export", "--checkpoint", fold / "checkpoint.pt", "--format", "torchscript", "--out", out, ok=False
        )
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
    assert _files(run_dir) == {
        **before,
        fold / "link.pt": before[fold / "checkpoint.pt"],
        fold / "notes": b"mine\n",
        fold / "notes.md": b"mine\n",
    }  # nothing written or changed


def test_exporting_again_to_the_same_out_replaces_the_previous_export(checkpoint, tmp_path) -> None:
    out = tmp_path / "model.pt"
    for _ in range(2):
        run("export", "--checkpoint", checkpoint, "--format", "torchscript", "--out", out)
    assert json.loads((tmp_path / "model.pt.json").read_text())["written_by"] == "sermtl export"
    (tmp_path / "model.pt.json").write_text(json.dumps({"written_by": "someone else"}))
    result = run("export", "--checkpoint", checkpoint, "--format", "torchscript", "--out", out, ok=False)
    assert result.exit_code == 1 and f"{out} already exists and was not written by an export" in result.output
