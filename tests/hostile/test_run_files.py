"""Hostile run files, config and grid files: what ``compare``, ``report``, a resumed ``cv``,
``sweep`` and ``train --all-data`` read back, damaged as a careless user or an attacker
would. Every file is checked against its declared shape (:mod:`trainer.runfiles`) before
use: one ``error:`` line naming the file and key, nothing written, bounded memory."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.hostile.conftest import TRAIN, Workspace
from tests.hostile.harness import Argv, Case, case_ids, check_case, invoke
from tests.hostile.test_hostile import _alias_bomb, _resume

#: Peak memory of a refused command: the CLI with torch imported is about 250 MiB.
BOUNDED_MIB = 700


def _edit_json(path: Path, change: Callable[[Any], Any]) -> Path:
    """Rewrite the JSON file at ``path`` with ``change(data)`` (which may edit in place)."""
    data = json.loads(path.read_text())
    new = change(data)
    path.write_text(json.dumps(data if new is None else new))
    return path


def _set(data: dict, dotted: str, value: Any) -> None:
    """``data[a][b]… = value`` for ``dotted`` = ``"a.b…"`` (list indices as numbers)."""
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data[int(key)] if isinstance(data, list) else data[key]
    data[int(keys[-1]) if isinstance(data, list) else keys[-1]] = value


def _run_file(ws: Workspace, name: str, dotted: str, value: Any) -> Path:
    """The workspace's run with ``name`` (``fold_1/metrics.json``…) holding ``value`` at ``dotted``."""
    return _edit_json(ws.run / name, lambda data: _set(data, dotted, value))


def _raw(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _compare(ws: Workspace) -> Argv:
    return ["compare", ws.base["run"], ws.run]


def _svm_results(ws: Workspace, dotted: str, value: Any) -> Path:
    path = ws.tmp / "svm.json"
    result = invoke(["baseline", "--store", ws.base["zarr"], *TRAIN[:6], "--out", path])
    assert result.exit_code == 0, result.output
    return _edit_json(path, lambda data: _set(data, dotted, value))


def _embeddings(ws: Workspace, **arrays: np.ndarray) -> Path:
    path = ws.run / "fold_1" / "embeddings.npz"
    with np.load(path) as saved:
        merged = {**{key: saved[key] for key in saved.files}, **arrays}
    np.savez(path, **merged)
    return path


def _same_embeddings(ws: Workspace) -> Path:
    with np.load(ws.run / "fold_1" / "embeddings.npz") as saved:
        rows = len(saved["ids"])
    return _embeddings(ws, embeddings=np.ones((rows, 8), np.float32))


def _all_data(ws: Workspace, *extra: Any) -> Argv:
    return ["train", "--all-data", "--config", ws.run / "config.json", "--out", ws.tmp / "model", "--quiet", *extra]


def _no(name: str) -> Callable[[Workspace], None]:
    def check(ws: Workspace) -> None:
        assert not (ws.tmp / name).exists(), f"a refused command left {name} behind"

    return check


def _report_says(text: str) -> Callable[[Workspace], None]:
    def check(ws: Workspace) -> None:
        report = (ws.run / "report.md").read_text()
        assert text in report and not re.search(r"\bnan\b", report, re.IGNORECASE), report[-500:]

    return check


def _users_model_folder(ws: Workspace) -> Path:
    (ws.tmp / "model").mkdir()
    return ws.victim("model/notes.txt")


def _retry_all_data_after_repair(ws: Workspace) -> None:
    """The refused ``train --all-data`` left nothing; with the file restored, the same command runs."""
    assert not (ws.tmp / "model").exists() and not list(ws.tmp.glob(".model.partial-*"))
    (ws.run / "results.json").write_text((ws.base["run"] / "results.json").read_text())
    result = invoke(_all_data(ws))
    assert result.exit_code == 0, result.output
    assert (ws.tmp / "model" / "checkpoint.pt").is_file() and (ws.tmp / "model" / "MODEL_CARD.md").is_file()


def _config(ws: Workspace, text: str) -> Path:
    return _raw(ws.tmp / "c.yaml", text)


def _grid(ws: Workspace, settings: list[dict[str, Any]]) -> Argv:
    path = ws.tmp / "grid.json"
    path.write_text(json.dumps(settings))
    return ["sweep", "--store", ws.base["zarr"], "--grid-file", path, *TRAIN, "--out", ws.tmp / "sweep"]


def _bomb_under_protocol(ws: Workspace) -> Path:
    path = _alias_bomb(ws.tmp / "c.yaml")
    path.write_text(path.read_text().replace("lr: *i", "protocol: {name: loso, by: *i}"))
    return path


CASES: list[Case] = [
    # -- compare ---------------------------------------------------------------------------------
    Case(
        "run files",
        "compare on a metrics.json holding 1e308",
        lambda ws: (_run_file(ws, "fold_1/metrics.json", "uwa", 1e308), _compare(ws))[1],
        culprit="metrics.json: uwa: expected a finite number in [0, 100], got 1e+308",
    ),
    Case(
        "run files",
        "compare on a metrics.json holding NaN",
        lambda ws: (_run_file(ws, "fold_2/metrics.json", "uwa", float("nan")), _compare(ws))[1],
        culprit="metrics.json: uwa",
    ),
    Case(
        "run files",
        "compare on a config.json whose train is a list",
        lambda ws: (_run_file(ws, "config.json", "train", [1, 2]), _compare(ws))[1],
        culprit="config.json: train: expected a mapping",
    ),
    Case(
        "run files",
        "compare on SVM results holding 1e308",
        lambda ws: ["compare", ws.base["run"], _svm_results(ws, "folds.0.uwa", 1e308)],
        culprit="svm.json: folds[0].uwa",
    ),
    Case(
        "run files",
        "compare on SVM results whose folds are text",
        lambda ws: ["compare", ws.base["run"], _svm_results(ws, "folds", "x" * 10**6)],
        culprit="svm.json: folds: expected a list",
    ),
    Case(
        "run files",
        "compare on a metrics.json with a ragged confusion matrix",
        lambda ws: (_run_file(ws, "fold_1/metrics.json", "confusion", [[1]]), _compare(ws))[1],
        culprit="metrics.json: confusion",
    ),
    # -- a resumed cv ---------------------------------------------------------------------------
    Case(
        "run files",
        "cv resumed on a folds.json whose fold is 1e400",
        lambda ws: (
            _raw(ws.run / "folds.json", (ws.run / "folds.json").read_text().replace('"fold": 1,', '"fold": 1e400,', 1)),
            _resume(ws),
        )[1],
        culprit="folds.json: folds[0].fold",
    ),
    Case(
        "run files",
        "cv resumed on a config.json whose protocol 'by' is a list",
        lambda ws: (_run_file(ws, "config.json", "protocol.by", ["speaker"]), _resume(ws))[1],
        culprit="config.json",
    ),
    Case(
        "run files",
        "cv resumed on a finished fold whose metrics.json wa is text",
        lambda ws: (_run_file(ws, "fold_3/metrics.json", "wa", "high"), _resume(ws))[1],
        culprit="metrics.json: wa",
    ),
    # -- config and grid files -------------------------------------------------------------------
    Case(
        "config and grid files",
        "--config with a protocol value of the wrong type",
        lambda ws: [
            "cv",
            "--store",
            ws.base["zarr"],
            "--config",
            _config(ws, "protocol: {name: loso, by: [a, b]}\n"),
            "--out",
            ws.tmp / "new_run",
        ],
        culprit="c.yaml: --by: expected text",
        after=_no("new_run"),
    ),
    Case(
        "config and grid files",
        "--config with protocol folds of the wrong type",
        lambda ws: [
            "cv",
            "--store",
            ws.base["zarr"],
            "--config",
            _config(ws, "protocol: {name: kfold, folds: five}\n"),
            "--out",
            ws.tmp / "new_run",
        ],
        culprit="c.yaml",
        after=_no("new_run"),
    ),
    Case(
        "config and grid files",
        "--config giving a key twice",
        lambda ws: [
            "train",
            "--store",
            ws.base["zarr"],
            "--config",
            _config(ws, "lr: 0.01\nepochs: 1\nlr: 0.5\n"),
            "--out",
            ws.tmp / "new_run",
        ],
        culprit="'lr' is given twice (lines 1 and 3)",
        after=_no("new_run"),
    ),
    Case(
        "config and grid files",
        "a YAML alias bomb as a protocol value",
        max_rss_mib=BOUNDED_MIB,
        argv=lambda ws: [
            "cv",
            "--store",
            ws.base["zarr"],
            "--config",
            _bomb_under_protocol(ws),
            "--out",
            ws.tmp / "new_run",
        ],
        culprit="aliases expand to more than",
        after=_no("new_run"),
    ),
    Case(
        "config and grid files",
        "--grid-file varying seed",
        lambda ws: _grid(ws, [{"seed": 1}, {"seed": 2}]),
        culprit="seed is not a setting to sweep (use --repeats)",
        after=_no("sweep"),
    ),
    Case(
        "config and grid files",
        "--grid-file of 20 000 settings",
        lambda ws: _grid(ws, [{"lr": 0.001 + k * 1e-7} for k in range(20_000)]),
        culprit="expected at most 1000 items, got 20000",
        after=_no("sweep"),
    ),
    Case(
        "config and grid files",
        "--grid of 10^6 settings",
        max_rss_mib=BOUNDED_MIB,
        argv=lambda ws: [
            "sweep",
            "--store",
            ws.base["zarr"],
            *TRAIN,
            "--out",
            ws.tmp / "sweep",
            *[
                arg
                for key in ("lr", "dropout", "margin")
                for arg in ("--grid", f"{key}=" + ",".join(f"0.{k:03d}" for k in range(1, 101)))
            ],
        ],
        culprit="1000000 settings, more than the 1000",
        after=_no("sweep"),
    ),
    Case(
        "config and grid files",
        "--grid-file whose setting is a list",
        lambda ws: _grid(ws, [{"lr": 0.01}, [1, 2]]),
        culprit="grid.json: [1]: expected a mapping",
        after=_no("sweep"),
    ),
    Case(
        "config and grid files",
        "--store ''",
        lambda ws: ["cv", "--store", "", "--out", ws.tmp / "new_run"],
        code=2,
        culprit="'--store': an empty path",
        after=_no("new_run"),
    ),
    Case(
        "config and grid files",
        "--out ''",
        lambda ws: ["cv", "--store", ws.base["zarr"], "--out", ""],
        code=2,
        culprit="'--out': an empty path",
    ),
    # -- report ----------------------------------------------------------------------------------
    Case(
        "report",
        "results.json holding 1e308",
        lambda ws: (_run_file(ws, "results.json", "wa", 1e308), ["report", ws.run])[1],
        culprit="results.json: wa",
    ),
    Case(
        "report",
        "results.json holding NaN (Python's json writes it)",
        lambda ws: (_run_file(ws, "results.json", "std.uwa", float("nan")), ["report", ws.run])[1],
        culprit="results.json: std.uwa",
    ),
    Case(
        "report",
        "history.json with epoch 1e9",
        lambda ws: (_run_file(ws, "fold_1/history.json", "0.epoch", 10**9), ["report", ws.run])[1],
        culprit="history.json: [0].epoch",
    ),
    Case(
        "report",
        "config.json training for 10^9 epochs (the α plot would draw each)",
        lambda ws: (_run_file(ws, "config.json", "train.epochs", 10**9), ["report", ws.run])[1],
        culprit="--epochs must be in [1, 10000]",
    ),
    Case(
        "report",
        "embeddings.npz holding NaN",
        lambda ws: (_embeddings(ws, embeddings=np.full((6, 8), np.nan, np.float32)), ["report", ws.run])[1],
        culprit="embeddings.npz: embeddings",
    ),
    Case(
        "report",
        "embeddings.npz with fewer labels than ids",
        lambda ws: (_embeddings(ws, emotion=np.array(["sad"])), ["report", ws.run])[1],
        culprit="embeddings.npz: emotion: expected one text label per id",
    ),
    Case(
        "report",
        "embeddings.npz whose embeddings are text",
        lambda ws: (_embeddings(ws, embeddings=np.array([["a"] * 8] * 6)), ["report", ws.run])[1],
        culprit="embeddings.npz: embeddings: expected a float matrix",
    ),
    Case(
        "report",
        "embeddings.npz that is not a zip",
        lambda ws: (_raw(ws.run / "fold_1" / "embeddings.npz", "PK nope"), ["report", ws.run])[1],
        culprit="embeddings.npz is damaged",
    ),
    Case(
        "report",
        "identical embeddings (t-SNE would crash the process)",
        lambda ws: (_same_embeddings(ws), ["report", ws.run])[1],
        code=0,
        after=_report_says("No t-SNE map: fold 1's test embeddings hold 1 distinct point(s)"),
    ),
    Case(
        "report",
        "--paper holding a list",
        lambda ws: ["report", ws.run, "--paper", _raw(ws.tmp / "p.json", "[1, 2]")],
        culprit="--paper",
    ),
    Case(
        "report",
        "--paper holding 1e308",
        lambda ws: ["report", ws.run, "--paper", _raw(ws.tmp / "p.json", '{"rows": {"run": {"uwa": 1e308}}}')],
        culprit="p.json: rows.run.uwa",
    ),
    # -- train --all-data ------------------------------------------------------------------------
    Case(
        "train --all-data",
        "results.json whose best_epoch is 1e9 (training for ever)",
        lambda ws: (_run_file(ws, "results.json", "folds.0.best_epoch", 10**9), _all_data(ws))[1],
        culprit="results.json: folds[0].best_epoch",
        after=_no("model"),
    ),
    Case(
        "train --all-data",
        "a damaged results.json, then the same command once it is restored",
        lambda ws: (_raw(ws.run / "results.json", '{"wa": '), _all_data(ws, "--epochs", "1"))[1],
        culprit="results.json",
        after=_retry_all_data_after_repair,
    ),
    Case(
        "train --all-data",
        "--out a folder of the user's",
        lambda ws: (_users_model_folder(ws), _all_data(ws))[1],
        culprit="is not an empty folder",
        after=lambda ws: (ws.tmp / "model" / "notes.txt").read_text() == "precious notes\n" or pytest.fail(),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_hostile_run_files(case: Case, ws: Workspace, monkeypatch) -> None:
    monkeypatch.chdir(ws.tmp)
    check_case(case, ws)
