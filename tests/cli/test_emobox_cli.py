"""EmoBox data in: the dataset's jsonl as a recipe, its fold files (and a sermtl folds.json)
as --folds-file, with the one-line errors of each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tests.conftest import TINY_TRAINING as TINY
from tests.conftest import write_tone

LABELS = {"ang": "Angry", "hap": "Happy", "sad": "Sad"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def emobox(tmp_path_factory) -> dict[str, Path]:
    """EmoBox's layout: <data>/toy/toy.jsonl, label_map.json, fold_<k>/ (3 folds by speaker),
    the audio under <audio_root>/downloads/toy/."""
    base = tmp_path_factory.mktemp("emobox")
    audio_root, meta = base / "user_data", base / "EmoBox" / "data" / "toy"
    rows = []
    for speaker in range(3):
        for i in range(6):
            label = list(LABELS)[i % 3]
            wav = Path("downloads/toy/wav") / f"s{speaker}_{i:02d}.wav"
            write_tone(audio_root / wav, 0.6 + 0.1 * i, freq=150 + 60 * (i % 3), seed=10 * speaker + i)
            rows.append(
                {
                    "key": f"toy-s{speaker}_{i:02d}",
                    "dataset": "toy",
                    "wav": str(wav),
                    "type": "raw",
                    "sample_rate": 16000,
                    "length": 0.6 + 0.1 * i,
                    "emo": label,
                    "channel": 1,
                }
            )
    write_jsonl(meta / "toy.jsonl", rows)
    (meta / "label_map.json").write_text(json.dumps(LABELS))
    for k in range(1, 4):
        test = [r for r in rows if r["key"].startswith(f"toy-s{k - 1}_")]
        write_jsonl(meta / f"fold_{k}" / f"toy_train_fold_{k}.jsonl", [r for r in rows if r not in test])
        write_jsonl(meta / f"fold_{k}" / f"toy_test_fold_{k}.jsonl", test)
    manifest = base / "toy.csv"
    result = run(
        "prepare",
        "--corpus",
        "emobox",
        "--root",
        meta,
        "--option",
        f"audio_root={audio_root}",
        "--option",
        r"speaker_pattern=toy-(s\d)_",
        "--out",
        manifest,
    )
    assert "18 utterances" in result.output
    store = base / "toy_mfcc.zarr"
    run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", store, "--device", "cpu")
    return {"meta": meta, "audio_root": audio_root, "manifest": manifest, "store": store, "base": base}


def test_the_recipe_keeps_emoboxs_keys_labels_and_speakers(emobox) -> None:
    from featurestore.manifest import Manifest

    manifest = Manifest.read_csv(emobox["manifest"])
    assert manifest["toy-s1_04"]["emotion"] == "happy" and manifest["toy-s1_04"]["speaker"] == "s1"
    assert manifest["toy-s2_00"]["duration"] == pytest.approx(0.6)
    assert sorted(set(manifest.column("emotion"))) == ["angry", "happy", "sad"]


def test_cv_on_emoboxs_folds(emobox, tmp_path) -> None:
    out = tmp_path / "run"
    run("cv", "--store", emobox["store"], "--folds-file", emobox["meta"], "--out", out, *TINY)
    folds = json.loads((out / "folds.json").read_text())["folds"]
    assert len(folds) == 3
    for fold in folds:
        k = fold["fold"]
        expected_test = [
            json.loads(line)["key"]
            for line in (emobox["meta"] / f"fold_{k}" / f"toy_test_fold_{k}.jsonl").read_text().splitlines()
        ]
        expected_train = [
            json.loads(line)["key"]
            for line in (emobox["meta"] / f"fold_{k}" / f"toy_train_fold_{k}.jsonl").read_text().splitlines()
        ]
        assert fold["test"] == expected_test
        assert sorted(fold["train"] + fold["valid"]) == sorted(expected_train) and fold["valid"]
    saved = json.loads((out / "config.json").read_text())["protocol"]
    assert saved["name"] == "file" and saved["path"] == str(emobox["meta"])
    again = tmp_path / "again"  # a run's own folds.json as the folds of another run
    run("cv", "--store", emobox["store"], "--folds-file", out / "folds.json", "--out", again, *TINY)
    assert json.loads((again / "folds.json").read_text())["folds"] == folds
    svm = run("baseline", "--store", emobox["store"], "--folds-file", emobox["meta"]).output
    assert "SVM on mfcc-stats (file, 3 folds): WA" in svm


def test_bad_fold_files_are_one_line(emobox, tmp_path) -> None:
    import shutil

    bad = tmp_path / "toy"
    shutil.copytree(emobox["meta"], bad)
    test_file = bad / "fold_2" / "toy_test_fold_2.jsonl"
    test_file.write_text(test_file.read_text() + json.dumps({"key": "toy-nobody"}) + "\n")
    result = run("cv", "--store", emobox["store"], "--folds-file", bad, "--out", tmp_path / "r1", *TINY, ok=False)
    assert (
        result.exit_code == 1
        and f"--folds-file {test_file}: id 'toy-nobody' (fold 2) is not in the store" in result.output
    )
    test_file.write_text((bad / "fold_1" / "toy_test_fold_1.jsonl").read_text())
    result = run("cv", "--store", emobox["store"], "--folds-file", bad, "--out", tmp_path / "r2", *TINY, ok=False)
    assert "is tested in folds 1 and 2; test sets must not overlap" in result.output
    result = run("cv", "--store", emobox["store"], "--protocol", "file", "--out", tmp_path / "r3", *TINY, ok=False)
    assert "--folds-file goes with --protocol file" in result.output
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3"))


def test_bad_emobox_metadata_is_one_line(emobox, tmp_path) -> None:
    result = run("prepare", "--corpus", "emobox", "--root", emobox["meta"], "--out", tmp_path / "m.csv", ok=False)
    assert result.exit_code == 1 and "give --option audio_root=DIR, EmoBox's data folder" in result.output
    broken = write_jsonl(tmp_path / "broken" / "broken.jsonl", [{"key": "a", "wav": "x.wav"}])
    result = run("prepare", "--corpus", "emobox", "--root", broken.parent, "--out", tmp_path / "m.csv", ok=False)
    assert f"{broken}, line 1: not a JSON object with text 'key', 'wav' and 'emo'" in result.output
    result = run(
        "prepare",
        "--corpus",
        "emobox",
        "--root",
        emobox["meta"],
        "--option",
        "speaker_pattern=(a)(b)",
        "--option",
        f"audio_root={emobox['audio_root']}",
        "--out",
        tmp_path / "m.csv",
        ok=False,
    )
    assert "needs exactly one group" in result.output


def test_lengths_and_speakers_are_checked_per_line(emobox, tmp_path) -> None:
    rows = [json.loads(line) for line in (emobox["meta"] / "toy.jsonl").read_text().splitlines()[:3]]
    options = ["--option", f"audio_root={emobox['audio_root']}", "--option", r"speaker_pattern=toy-(s\d)_"]
    for length, shown in ((0, "0"), (-1.5, "-1.5"), ("0.7", "'0.7'"), (False, "False"), (float("nan"), "nan")):
        meta = write_jsonl(tmp_path / "bad" / "bad.jsonl", [rows[0], {**rows[1], "length": length}])
        result = run(
            "prepare", "--corpus", "emobox", "--root", meta.parent, *options, "--out", tmp_path / "m.csv", ok=False
        )
        assert (
            result.exit_code == 1
            and f"{meta}, line 2: 'length' must be a finite positive number of seconds, got {shown}" in result.output
        )
    meta = write_jsonl(
        tmp_path / "ok" / "ok.jsonl",
        [rows[0], {**rows[1], "length": None}, {k: v for k, v in rows[2].items() if k != "length"}],
    )
    run("prepare", "--corpus", "emobox", "--root", meta.parent, *options, "--out", tmp_path / "m.csv")
    from featurestore.manifest import Manifest

    assert Manifest.read_csv(tmp_path / "m.csv").column("duration") == pytest.approx(
        [0.6, 0.7, 0.8]
    )  # measured when not given
    result = run(
        "prepare",
        "--corpus",
        "emobox",
        "--root",
        meta.parent,
        "--option",
        f"audio_root={emobox['audio_root']}",
        "--option",
        r"speaker_pattern=toy-(x?)s",
        "--out",
        tmp_path / "m2.csv",
        ok=False,
    )
    assert f"{meta}, line 1: speaker_pattern 'toy-(x?)s' finds an empty speaker in key 'toy-s0_00'" in result.output
    meta = write_jsonl(tmp_path / "ds" / "ds.jsonl", [{**rows[0], "dataset": ["toy"]}])
    result = run(
        "prepare", "--corpus", "emobox", "--root", meta.parent, *options, "--out", tmp_path / "m3.csv", ok=False
    )
    assert f"{meta}, line 1: 'dataset' must be text, got ['toy']" in result.output
    assert not (tmp_path / "m2.csv").exists() and not (tmp_path / "m3.csv").exists()


def test_fold_folders_and_files_are_named_strictly(emobox, tmp_path) -> None:
    import shutil

    folds = tmp_path / "toy"
    shutil.copytree(emobox["meta"], folds)
    cv = ["cv", "--store", emobox["store"], "--folds-file", folds, "--out", tmp_path / "run", *TINY]
    shutil.copytree(folds / "fold_2", folds / "fold_02")
    assert f"--folds-file {folds}: 2 folders for fold 2 (fold_02, fold_2); keep one" in run(*cv, ok=False).output
    shutil.rmtree(folds / "fold_02")
    (folds / "fold_3").rename(folds / "fold_4")
    assert (
        f"--folds-file {folds}: folds are numbered 1..N without gaps; no fold_3 (the last is fold_4)"
        in run(*cv, ok=False).output
    )
    (folds / "fold_4").rename(folds / "fold_3")
    shutil.copy(folds / "fold_1" / "toy_train_fold_1.jsonl", folds / "fold_1" / "old_train_fold1.jsonl")
    result = run(*cv, ok=False)
    assert (
        f"--folds-file {folds / 'fold_1'}: 2 train files for fold 1 (old_train_fold1.jsonl, toy_train_fold_1.jsonl); keep one"
        in result.output
    )
    (folds / "fold_1" / "old_train_fold1.jsonl").unlink()
    (folds / "fold_1" / "toy_test_fold_1.jsonl").write_text('{"key": 7}\n')
    result = run(*cv, ok=False)
    assert (
        f"--folds-file {folds / 'fold_1' / 'toy_test_fold_1.jsonl'}, line 1: not a JSON object with a text 'key' (got {{'key': 7}})"
        in result.output
    )
    assert not (tmp_path / "run").exists()
