"""Hostile input through the importers: Hugging Face datasets, lhotse manifests, EmoBox
metadata and fold folders, CSV manifests. Each input once gave a silent wrong label, a
traceback or unbounded memory; now it is refused in one line naming the file, row or field
(or, for ``ClassLabel`` -1, skipped and counted). The harness is :mod:`tests.hostile.harness`.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import write_tone
from tests.hostile.conftest import TRAIN, Workspace
from tests.hostile.harness import Argv, Case, case_ids, check_case

NAMES = ["angry", "happy", "sad"]


# -- Hugging Face datasets -------------------------------------------------------------------
def _hf(
    ws: Workspace,
    labels: list[Any] | None = None,
    label_type: str | None = None,
    rates: list[Any] | None = None,
    rate_type: str = "int64",
    arrays: list[Any] | None = None,
    array_type: str = "float32",
    test_labels: list[int] | None = None,
    fmt: str | None = None,
) -> Path:
    """A four-row dataset saved to ``ws.tmp/ds``: 0.3 s arrays, ``ClassLabel`` emotions (or
    ``label_type`` values), speakers; ``test_labels`` adds a test split, ``fmt`` a
    ``set_format``. The ``ClassLabel`` is saved with nine names, then its saved names are
    cut to three (as a hand-edited file would), so indices up to 8 can be planted."""
    datasets = pytest.importorskip("datasets")
    tones = [(0.2 * np.sin(np.arange(4800) * 0.05 * (i + 1))).tolist() for i in range(4)]
    features = datasets.Features(
        {
            "audio": {
                "array": datasets.Sequence(datasets.Value(array_type)),
                "sampling_rate": datasets.Value(rate_type),
            },
            "emotion": datasets.ClassLabel(names=[f"c{i}" for i in range(9)])
            if label_type is None
            else datasets.Value(label_type),
            "speaker": datasets.Value("string"),
        }
    )

    def table(emotions: list[Any]):
        audio = [{"array": a, "sampling_rate": r} for a, r in zip(arrays or tones, rates or [16000] * 4)]
        made = datasets.Dataset.from_dict(
            {"audio": audio, "emotion": emotions, "speaker": ["a", "b", "a", "b"]}, features=features
        )
        return made.with_format(fmt) if fmt else made

    folder = ws.tmp / "ds"
    train = table([0, 1, 2, 0] if labels is None else labels)
    (datasets.DatasetDict({"train": train, "test": table(test_labels)}) if test_labels else train).save_to_disk(
        str(folder)
    )
    for info_file in folder.rglob("dataset_info.json") if label_type is None else ():
        info = json.loads(info_file.read_text())
        info["features"]["emotion"]["names"] = NAMES
        info_file.write_text(json.dumps(info))
    return folder


def _prepare_hf(ws: Workspace, folder: Path) -> Argv:
    return ["prepare", "--corpus", "hf", "--root", folder, "--out", ws.tmp / "m.csv"]


def _extract_hf(ws: Workspace, folder: Path) -> Argv:
    return [
        "extract",
        "--corpus",
        "hf",
        "--root",
        folder,
        "--feature",
        "mfcc",
        "--store",
        ws.tmp / "hf.zarr",
        "--device",
        "cpu",
    ]


def _manifest(ws: Workspace) -> list[dict[str, str]]:
    with open(ws.tmp / "m.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _labelled_as(expected: dict[str, str]):
    """An ``after`` check: the manifest's rows are exactly ``utt_id -> emotion`` of ``expected``."""

    def check(ws: Workspace) -> None:
        assert {row["utt_id"]: row["emotion"] for row in _manifest(ws)} == expected

    return check


def _nothing_written(ws: Workspace) -> None:
    assert not (ws.tmp / "m.csv").exists(), "a manifest was written"


FOUR = {"ds-0": "angry", "ds-1": "happy", "ds-2": "sad", "ds-3": "angry"}

HF_CASES = [
    Case(
        "importers",
        "hf: ClassLabel -1 in a row and in a whole test split (skipped and counted)",
        lambda ws: _prepare_hf(ws, _hf(ws, labels=[0, -1, 2, 0], test_labels=[-1] * 4)),
        code=0,
        after=_labelled_as({"train-0": "angry", "train-2": "sad", "train-3": "angry"}),
    ),
    Case(
        "importers",
        "hf: ClassLabel index 7 of 3 names",
        lambda ws: _prepare_hf(ws, _hf(ws, labels=[0, 7, 2, 0])),
        culprit="row 1, column 'emotion': class index 7 is outside its ClassLabel's 3 names",
        after=_nothing_written,
    ),
    Case(
        "importers",
        "hf: dataset saved after set_format('numpy')",
        lambda ws: _prepare_hf(ws, _hf(ws, fmt="numpy")),
        code=0,
        after=_labelled_as(FOUR),
    ),
    Case(
        "importers",
        "hf: dataset saved after set_format('torch')",
        lambda ws: _prepare_hf(ws, _hf(ws, fmt="torch")),
        code=0,
        after=_labelled_as(FOUR),
    ),
    Case(
        "importers",
        "hf: a binary label column",
        lambda ws: _prepare_hf(ws, _hf(ws, labels=["ang".encode("utf-16")] * 4, label_type="binary")),
        culprit="row 0, column 'emotion' must be text or an integer, got b'\\xff\\xfea",
        after=_nothing_written,
    ),
    Case(
        "importers",
        "hf: a fractional float label",
        lambda ws: _prepare_hf(ws, _hf(ws, labels=[0.0, 1.5, 2.0, 0.0], label_type="float64")),
        culprit="row 1, column 'emotion' must be text or an integer, got 1.5",
        after=_nothing_written,
    ),
    Case(
        "importers",
        "hf: a null sampling_rate",
        lambda ws: _extract_hf(ws, _hf(ws, rates=[16000, None, 16000, 16000])),
        culprit="#-/audio/1: sampling_rate None is not a whole number of Hz in 4000..768000",
    ),
    Case(
        "importers",
        "hf: sampling_rate '16k'",
        lambda ws: _extract_hf(ws, _hf(ws, rates=["16k"] * 4, rate_type="string")),
        culprit="sampling_rate '16k' is not a whole number of Hz",
    ),
    Case(
        "importers",
        "hf: audio arrays of strings",
        lambda ws: _extract_hf(ws, _hf(ws, arrays=[["a", "b"]] * 4, array_type="string")),
        culprit="the audio array is not one or two dimensions of numbers",
    ),
]


# -- lhotse manifests ------------------------------------------------------------------------
def _write_jsonl_gz(path: Path, items: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(item) + "\n" for item in items)
    return path


def _recording(ws: Workspace) -> dict[str, Any]:
    audio = write_tone(ws.tmp / "lh" / "rec0.wav", 1.0)
    return {
        "id": "rec0",
        "sources": [{"type": "file", "channels": [0], "source": str(audio)}],
        "sampling_rate": 16000,
        "num_samples": 16000,
        "duration": 1.0,
    }


def _supervision(**fields: Any) -> dict[str, Any]:
    return {
        "id": "sup0",
        "recording_id": "rec0",
        "start": 0.1,
        "duration": 0.5,
        "channel": 0,
        "speaker": "spk0",
        "custom": {"emotion": "angry"},
        **fields,
    }


def _lhotse(ws: Workspace, **fields: Any) -> Argv:
    """``prepare`` of a recordings + supervisions folder: one 1 s recording, one supervision."""
    folder = ws.tmp / "lh" / "manifests"
    _write_jsonl_gz(folder / "x_recordings.jsonl.gz", [_recording(ws)])
    _write_jsonl_gz(folder / "x_supervisions.jsonl.gz", [_supervision(**fields)])
    return ["prepare", "--corpus", "lhotse", "--root", folder, "--out", ws.tmp / "m.csv"]


def _other_file(ws: Workspace) -> str:
    return str(write_tone(ws.tmp / "lh" / "other.wav", 1.0, freq=500))


def _cut_without_recording(ws: Workspace) -> Argv:
    cut = {
        "id": "cut0",
        "start": 0.0,
        "duration": 0.5,
        "channel": 0,
        "supervisions": [_supervision()],
        "type": "MonoCut",
    }
    return [
        "prepare",
        "--corpus",
        "lhotse",
        "--root",
        _write_jsonl_gz(ws.tmp / "cuts.jsonl.gz", [cut]),
        "--out",
        ws.tmp / "m.csv",
    ]


def _line_bomb(ws: Workspace) -> Argv:
    """1 MB of gzip expanding to one 1 GiB line (gzip members of 16 MiB, concatenated)."""
    member = gzip.compress(b"a" * 16 * 2**20, compresslevel=9)
    path = ws.tmp / "cuts.jsonl.gz"
    with open(path, "wb") as handle:
        handle.write(gzip.compress(b'{"id": "'))
        for _ in range(64):
            handle.write(member)
    return ["prepare", "--corpus", "lhotse", "--root", path, "--out", ws.tmp / "m.csv"]


def _lhotse_case(name: str, argv, culprit: str, **kwargs: Any) -> Case:
    def needs_lhotse(ws: Workspace) -> Argv:
        pytest.importorskip("lhotse")
        return argv(ws)

    return Case("importers", f"lhotse: {name}", needs_lhotse, culprit=culprit, after=_nothing_written, **kwargs)


LHOTSE_CASES = [
    _lhotse_case(
        "custom field 'path' naming another file",
        lambda ws: _lhotse(ws, custom={"emotion": "angry", "path": _other_file(ws)}),
        "supervision sup0: custom field 'path' is named like the manifest's own column 'path'",
    ),
    _lhotse_case(
        "custom field 'utt_id'",
        lambda ws: _lhotse(ws, custom={"emotion": "angry", "utt_id": "u00"}),
        "supervision sup0: custom field 'utt_id' is named like",
    ),
    _lhotse_case(
        "custom fields ' start' and 'end' (padded to slip past the check)",
        lambda ws: _lhotse(ws, custom={"emotion": "angry", " start": 0, "end": 0.2}),
        "supervision sup0: custom field ' start' is named like the manifest's own column 'start'",
    ),
    _lhotse_case(
        "custom field 'emotion' beside label=mood",
        lambda ws: [*_lhotse(ws, custom={"mood": "sad", "emotion": "angry"}), "--option", "label=mood"],
        "custom field 'emotion' is named like",
    ),
    _lhotse_case(
        "a supervision running past its recording's end",
        lambda ws: _lhotse(ws, start=0.5, duration=1.0),
        "supervision sup0 spans 0.500..1.500 s (1.000 s), outside its recording rec0 (1.000 s long",
    ),
    _lhotse_case(
        "a supervision starting before 0", lambda ws: _lhotse(ws, start=-0.5), "supervision sup0 spans -0.500..0.000 s"
    ),
    _lhotse_case(
        "a list-valued label",
        lambda ws: _lhotse(ws, custom={"emotion": ["angry", "sad"]}),
        "supervision sup0: custom field 'emotion' must be text or an integer, got ['angry', 'sad']",
    ),
    _lhotse_case(
        "a dict-valued custom field",
        lambda ws: _lhotse(ws, custom={"emotion": "sad", "intensity": {"a": 1}}),
        "custom field 'intensity' must be a single value",
    ),
    _lhotse_case(
        "a boolean label",
        lambda ws: _lhotse(ws, custom={"emotion": True}),
        "custom field 'emotion' must be text or an integer, got True",
    ),
    _lhotse_case("a cut without a recording", _cut_without_recording, "cut cut0 has no recording"),
    _lhotse_case(
        "1 MB of gzip expanding to one 1 GiB line",
        _line_bomb,
        "cuts.jsonl.gz, line 1: longer than the 1 MiB a line may hold",
        max_rss_mib=700,
    ),
]


# -- EmoBox ----------------------------------------------------------------------------------
def _emobox(ws: Workspace, second: dict[str, Any], *options: str) -> Argv:
    """``prepare`` of EmoBox metadata of two rows (absolute wav paths); ``second`` overrides
    fields of the second row."""
    rows = [
        {
            "key": f"eb-s{i}_00",
            "wav": str(write_tone(ws.tmp / "eb_audio" / f"s{i}.wav", 0.5)),
            "emo": "ang",
            "length": 0.5,
            "dataset": "eb",
        }
        for i in range(2)
    ]
    rows[1].update(second)
    meta = ws.tmp / "eb" / "eb.jsonl"
    meta.parent.mkdir()
    meta.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ["prepare", "--corpus", "emobox", "--root", meta.parent, *options, "--out", ws.tmp / "m.csv"]


SPEAKERS = ("--option", r"speaker_pattern=eb-(s\d)_")


def _fold_folders(ws: Workspace, names: list[str]) -> Argv:
    """``cv --folds-file`` of EmoBox fold folders ``names`` over the base store's u00..u17."""
    ids = [f"u{i:02d}" for i in range(18)]
    for name in names:
        k = int(name.split("_")[1])
        test = set(ids[(k - 1) % 3 :: 3])
        for part, keys in (("train", [u for u in ids if u not in test]), ("test", sorted(test))):
            path = ws.tmp / "folds" / name / f"x_{part}_fold_{k}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"key": u}) + "\n" for u in keys))
    return ["cv", "--store", ws.base["zarr"], "--folds-file", ws.tmp / "folds", *TRAIN[6:], "--out", ws.tmp / "new_run"]


def _no_run(ws: Workspace) -> None:
    assert not (ws.tmp / "new_run").exists(), "a run was started"


EMOBOX_CASES = [
    Case(
        "importers",
        'emobox: "length": true',
        lambda ws: _emobox(ws, {"length": True}, *SPEAKERS),
        culprit="eb.jsonl, line 2: 'length' must be a finite positive number of seconds, got True",
        after=_nothing_written,
    ),
    Case(
        "importers",
        'emobox: "length": "0.5"',
        lambda ws: _emobox(ws, {"length": "0.5"}, *SPEAKERS),
        culprit="eb.jsonl, line 2: 'length' must be",
        after=_nothing_written,
    ),
    Case(
        "importers",
        "emobox: no speaker_pattern (extract would refuse the manifest)",
        lambda ws: _emobox(ws, {}),
        culprit="eb.jsonl, line 1: no speaker (EmoBox's metadata names none); give --option speaker_pattern=",
        after=_nothing_written,
    ),
    Case(
        "importers",
        "emobox: a key the speaker_pattern does not match",
        lambda ws: _emobox(ws, {"key": "other-1"}, *SPEAKERS),
        culprit="eb.jsonl, line 2: key 'other-1' does not match speaker_pattern",
        after=_nothing_written,
    ),
    Case(
        "importers",
        "emobox folds: fold_1, fold_2 and fold_02",
        lambda ws: _fold_folders(ws, ["fold_1", "fold_2", "fold_02"]),
        culprit="2 folders for fold 2 (fold_02, fold_2); keep one",
        after=_no_run,
    ),
    Case(
        "importers",
        "emobox folds: fold_01 alone",
        lambda ws: _fold_folders(ws, ["fold_01", "fold_2", "fold_3"]),
        culprit="fold_01: fold folders are named fold_1, fold_2, ... (no leading zeros)",
        after=_no_run,
    ),
    Case(
        "importers",
        "emobox folds: fold_1 and fold_3 (a gap)",
        lambda ws: _fold_folders(ws, ["fold_1", "fold_3"]),
        culprit="folds are numbered 1..N without gaps; no fold_2",
        after=_no_run,
    ),
]


# -- CSV manifests ---------------------------------------------------------------------------
def _ragged(ws: Workspace, fields: int) -> Argv:
    """The base manifest with its third row's fields cut or padded to ``fields``."""
    lines = ws.manifest.read_text().splitlines()
    cells = lines[3].split(",")
    lines[3] = ",".join((cells + ["extra"] * fields)[:fields])
    path = ws.tmp / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return ["extract", "--manifest", path, "--feature", "mfcc", "--store", ws.tmp / "new.zarr"]


CSV_CASES = [
    Case(
        "importers",
        "csv: a row with more fields than the header",
        lambda ws: _ragged(ws, 6),
        culprit="m.csv:4: 6 fields, but the header has 5",
    ),
    Case(
        "importers",
        "csv: a row with fewer fields than the header",
        lambda ws: _ragged(ws, 4),
        culprit="m.csv:4: 4 fields, but the header has 5",
    ),
]

CASES = HF_CASES + LHOTSE_CASES + EMOBOX_CASES + CSV_CASES


def test_case_names_are_distinct() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_importers(case: Case, ws: Workspace, monkeypatch) -> None:
    monkeypatch.chdir(ws.tmp)
    check_case(case, ws)
