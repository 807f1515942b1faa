"""Corpus recipes on synthetic corpora in the real layouts, and on ../shared/data when present."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import soundfile as sf

from featurestore import synthetic
from featurestore.audio import load_audio
from featurestore.corpora import CORPORA, available_corpora, get_recipe, prepare
from featurestore.corpora.base import ClassMap, CorpusReport, CorpusWarning
from featurestore.corpora.iemocap import EXPECTED_COUNTS, EXPECTED_TOTAL, check_counts
from featurestore.errors import ConfigError, CorpusError, SermtlError
from featurestore.manifest import Manifest


def run(name, root, **options):
    """prepare() plus the CorpusWarnings it emitted, by kind."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = prepare(name, root, **options)
    found = {w.message.kind: w.message for w in caught if isinstance(w.message, CorpusWarning)}
    assert set(found) == set(manifest.report.problems)
    return manifest, found


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory) -> Path:
    return synthetic.make_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def baum1(tmp_path_factory) -> Path:
    return synthetic.make_baum1(tmp_path_factory.mktemp("baum1"))


@pytest.fixture(scope="module")
def emodb(tmp_path_factory) -> Path:
    return synthetic.make_emodb(tmp_path_factory.mktemp("emodb"))


@pytest.fixture(scope="module")
def ravdess(tmp_path_factory) -> Path:
    return synthetic.make_ravdess(tmp_path_factory.mktemp("ravdess"), actors=(1, 2, 3), repetitions=(1,))


@pytest.fixture(scope="module")
def urdu(tmp_path_factory) -> Path:
    return synthetic.make_urdu(tmp_path_factory.mktemp("urdu"))


def copy_tree(root: Path, tmp_path: Path) -> Path:
    """A private copy of a module-scoped fixture corpus, for tests that change it."""
    return Path(shutil.copytree(root, tmp_path / root.name))


# -- registry -----------------------------------------------------------------------------
def test_registry_lists_every_recipe():
    assert available_corpora() == ["baum1", "csv", "emobox", "emodb", "hf", "iemocap", "lhotse", "ravdess", "urdu"]
    for name in CORPORA:
        assert get_recipe(name).__name__ == f"prepare_{name}"


def test_recipes_are_imported_lazily():
    code = (
        "import sys, featurestore.corpora as c; "
        "print(sorted(m for m in sys.modules if m.startswith('featurestore.corpora.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_corpus_lists_the_choices():
    with pytest.raises(
        ConfigError,
        match=r"^--corpus: 'timit'.*\bbaum1, csv, emobox, emodb, hf, iemocap, lhotse, ravdess, urdu\b",
    ):
        prepare("timit", ".")


def test_unknown_option_is_named(urdu):
    with pytest.raises(CorpusError, match=r"'urdu'.*'on_duplicate'"):
        prepare("urdu", urdu, on_duplicate="skip")


@pytest.mark.parametrize("name", ["iemocap", "baum1", "emodb", "ravdess", "urdu"])
def test_wrong_root_names_root_and_corpus(name, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CorpusError, match=rf"^{name}:.*not found.*{re.escape(str(missing))}$"):
        prepare(name, missing)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(CorpusError, match=rf"^{name}:.*not a folder.*{re.escape(str(a_file))}$"):
        prepare(name, a_file)


@pytest.mark.parametrize("name", ["iemocap", "baum1", "emodb", "ravdess", "urdu"])
def test_empty_folder_is_an_error(name, tmp_path):
    with pytest.raises(CorpusError, match=rf"^{name}:.*{re.escape(str(tmp_path))}"):
        prepare(name, tmp_path)


def test_csv_root_must_be_a_file(tmp_path):
    with pytest.raises(CorpusError, match=rf"^csv:.*not a file.*{re.escape(str(tmp_path))}$"):
        prepare("csv", tmp_path)
    with pytest.raises(CorpusError, match=rf"^csv:.*not found.*{re.escape(str(tmp_path / 'x.csv'))}$"):
        prepare("csv", tmp_path / "x.csv")


def test_string_options_as_given_on_the_command_line(iemocap):
    m, found = run("iemocap", iemocap, classes="angry, sad", expect_full_release="true")
    assert m.counts("emotion") == {"angry": 10, "sad": 10} and "counts" not in found  # only with 4class
    assert "counts" in run("iemocap", iemocap, expect_full_release="yes")[1]
    assert "counts" not in run("iemocap", iemocap, expect_full_release="auto")[1]
    with pytest.raises(CorpusError, match=r"'expect_full_release'.*'iemocap'.*'maybe'"):
        prepare("iemocap", iemocap, expect_full_release="maybe")


# -- class maps ---------------------------------------------------------------------------
def test_class_map_select_rename_and_unknown_code():
    full = ClassMap(
        {
            "neu": "neutral",
            "hap": "happy",
            "exc": "happy",
            "ang": "angry",
            "sad": "sad",
            "fru": "frustrated",
            "xxx": None,
        }
    )
    report = CorpusReport("x")
    four = full.select("4class")
    assert [four.resolve(c, "f.txt", report) for c in ("neu", "exc", "fru", "xxx")] == ["neutral", "happy", None, None]
    assert report.excluded == {"fru (frustrated)": 1, "xxx": 1}
    merged = full.select({"happy": "positive", "frustrated": "negative"})
    assert [merged.resolve(c, "f.txt", report) for c in ("hap", "fru", "neu")] == ["positive", "negative", None]
    with pytest.raises(CorpusError, match=r"^f\.txt:.*'sur'"):
        full.resolve("sur", "f.txt", report)
    with pytest.raises(CorpusError, match=r"'classes'.*\bcalm\b"):
        full.select(["calm"])
    with pytest.raises(CorpusError, match=r"'classes'.*\b7class\b.*sets: all, 4class\)"):
        full.select("7class")


# -- IEMOCAP ------------------------------------------------------------------------------
def test_iemocap_rows(iemocap):
    m, found = run("iemocap", iemocap)
    assert len(m) == 60  # 10 dialogs x 8 utterances, fru and xxx left out
    assert m.counts("emotion") == {"angry": 10, "happy": 20, "neutral": 20, "sad": 10}
    assert m.counts("original_label") == {"ang": 10, "exc": 10, "hap": 10, "neu": 20, "sad": 10}
    assert m.counts("expression") == {"acted": 30, "spontaneous": 30}
    assert m.counts("session") == {f"Session{n}": 12 for n in range(1, 6)}
    assert m.counts("speaker") == {f"Ses0{n}{g}": 8 if g == "F" else 4 for n in range(1, 6) for g in "FM"}
    assert m.counts("gender") == {"F": 40, "M": 20}
    assert m.report.excluded == {"fru (frustrated)": 10, "xxx": 10}
    row = m["iemocap-Ses01M_script01_1_M001"]
    assert (row["emotion"], row["original_label"], row["expression"], row["speaker"], row["corpus"]) == (
        "happy",
        "exc",
        "acted",
        "Ses01M",
        "iemocap",
    )
    assert row["start"] is None and row["end"] is None
    assert row["path"] == str(iemocap / "Session1/sentences/wav/Ses01M_script01_1/Ses01M_script01_1_M001.wav")
    for row in m:
        info = sf.info(row["path"])
        assert row["duration"] == pytest.approx(info.frames / info.samplerate)
        assert "/._" not in row["path"]
    # the stray wav is reported, the ._ files are ignored, and a 5-session fixture is not a full release
    assert set(found) == {"unlabelled"}
    assert found["unlabelled"].items == [str(iemocap / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F999.wav")]


def test_iemocap_root_may_be_the_parent(iemocap):
    assert run("iemocap", iemocap.parent)[0].ids() == run("iemocap", iemocap)[0].ids()


def test_iemocap_label_without_wav_is_reported(iemocap, tmp_path):
    root = copy_tree(iemocap, tmp_path)
    (root / "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_F002.wav").unlink()
    m, found = run("iemocap", root)
    assert len(m) == 59 and "iemocap-Ses02F_impro01_F002" not in m
    assert found["missing_audio"].items == [
        f"Ses02F_impro01_F002 (label in {root / 'Session2/dialog/EmoEvaluation/Ses02F_impro01.txt'})"
    ]


def test_iemocap_unknown_code_names_the_label_file(iemocap, tmp_path):
    root = copy_tree(iemocap, tmp_path)
    label_file = root / "Session3/dialog/EmoEvaluation/Ses03M_script01_1.txt"
    label_file.write_text(label_file.read_text().replace("\tsad\t", "\tbored\t"))
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(label_file))}:.*'bored'"):
        prepare("iemocap", root)


def test_iemocap_bad_label_line_names_file_and_line(iemocap, tmp_path):
    root = copy_tree(iemocap, tmp_path)
    label_file = root / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    label_file.write_text(label_file.read_text() + "[1.0 - oops]\n")
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(label_file))}:\d+:.*{re.escape(repr('[1.0 - oops]'))}"):
        prepare("iemocap", root)


def test_iemocap_reads_only_the_dialog_label_files(iemocap, tmp_path):
    root = copy_tree(iemocap, tmp_path)
    evaluator = root / "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_e2_cat.txt"
    evaluator.parent.mkdir()
    evaluator.write_text("[1.0 - 2.0]\tSes01F_impro01_F000\tzzz\t[1, 1, 1]\n")
    assert run("iemocap", root)[0]["iemocap-Ses01F_impro01_F000"]["original_label"] == "neu"


def test_iemocap_classes_option(iemocap):
    assert run("iemocap", iemocap, classes=["angry", "sad"])[0].counts("emotion") == {"angry": 10, "sad": 10}
    m = run("iemocap", iemocap, classes="all")[0]
    assert m.counts("emotion")["frustrated"] == 10 and m.report.excluded == {"xxx": 10}


def test_iemocap_count_check_only_on_a_full_release(iemocap, tmp_path):
    partial = synthetic.make_iemocap(tmp_path, sessions=2, quirks=False)
    m, found = run("iemocap", partial, expect_full_release=None)
    assert len(m) == 24 and found == {}
    m, found = run("iemocap", iemocap, expect_full_release=True)
    assert found["counts"].items == check_counts(m)
    assert found["counts"].items[:2] == [
        "utterances: expected 5531, found 60",
        "emotion neutral: expected 1708, found 20",
    ]


def exact_iemocap_manifest() -> Manifest:
    """In memory, with exactly the full release's four-class counts."""

    def spread(table):
        return [value for value, n in table.items() for _ in range(n)]

    emotions, sessions = spread(EXPECTED_COUNTS["emotion"]), spread(EXPECTED_COUNTS["session"])
    expressions = spread(EXPECTED_COUNTS["expression"])
    codes = {"neutral": "neu", "happy": "hap", "angry": "ang", "sad": "sad"}
    rows = []
    for i in range(EXPECTED_TOTAL):
        original = "exc" if emotions[i] == "happy" and i - emotions.index("happy") < 1041 else codes[emotions[i]]
        rows.append(
            {
                "utt_id": f"u{i}",
                "path": f"/x/{i}.wav",
                "emotion": emotions[i],
                "speaker": "s",
                "expression": expressions[i],
                "session": sessions[i],
                "original_label": original,
            }
        )
    return Manifest(rows)


def test_check_counts():
    exact = exact_iemocap_manifest()
    assert check_counts(exact) == []
    rows = exact.to_records()[:-3]  # three sad, spontaneous utterances of Session5 fewer
    exc = [r for r in rows if r["original_label"] == "exc"]
    exc[0]["original_label"] = exc[1]["original_label"] = "hap"
    assert check_counts(Manifest(rows)) == [
        "utterances: expected 5531, found 5528",
        "emotion sad: expected 1084, found 1081",
        "original_label exc: expected 1041, found 1039",
        "expression spontaneous: expected 2943, found 2940",
        "session Session5: expected 1241, found 1238",
    ]


# -- BAUM-1 -------------------------------------------------------------------------------
def test_baum1_rows_and_problems(baum1):
    m, found = run("baum1", baum1)
    # acted: 2 speakers x 6 kept codes, minus the clip whose name and code disagree
    assert m.counts("expression") == {"acted": 11, "spontaneous": 12}
    assert m.counts("emotion") == {"angry": 3, "boredom": 4, "disgust": 4, "fear": 4, "happy": 4, "sad": 4}
    assert m.counts("speaker") == {"S001": 11, "S002": 12}
    assert m.counts("gender") == {"F": 11, "M": 12}
    assert m.report.excluded == {"interest": 2, "neutral": 2, "thinking": 2}
    row = m["baum1-a-S002_005"]
    assert (row["emotion"], row["original_label"], row["expression"], row["gender"]) == (
        "happy",
        "happiness",
        "acted",
        "M",
    )
    assert row["path"] == str(baum1 / "BAUM1a_MP4_all/s002/S002_005.mp4")
    assert m["baum1-s-S001_001"]["path"] == str(baum1 / "BAUM1s_MP4 - All/s001/S001_001.mp4")
    assert set(found) == {"label_mismatch", "unlabelled", "missing_audio"}
    assert found["label_mismatch"].items == [
        f"{baum1 / 'BAUM1a_MP4_all/s001/S001_001.mp4'} (annotation says 'Sadness' but code 1 = anger)"
    ]
    assert found["unlabelled"].items == [str(baum1 / "BAUM1s_MP4 - All/s002/S002_099.mp4")]
    assert found["missing_audio"].items == [f"S001_098 (label in {baum1 / 'Annotations_BAUM1s.xlsx'})"]


def test_baum1_mp4_durations(baum1):
    m, _ = run("baum1", baum1)
    for utt in ("baum1-a-S001_002", "baum1-s-S002_006"):
        row = m[utt]
        assert 0.5 <= row["duration"] <= 1.5
        assert row["duration"] == pytest.approx(len(load_audio(row["path"])) / 16000, abs=0.03)


def test_baum1_other_folder_spellings_and_case(baum1, tmp_path):
    other = synthetic.make_baum1(tmp_path, acted_folder="BAUM1a_MP4 - All", spontaneous_folder="baum1s_mp4_ALL")
    m, _ = run("baum1", other)
    assert m.ids() == run("baum1", baum1)[0].ids()
    assert m["baum1-a-S001_002"]["path"] == str(other / "BAUM1a_MP4 - All/s001/S001_002.mp4")


def test_baum1_clip_in_two_folders_names_both(baum1, tmp_path):
    root = copy_tree(baum1, tmp_path)
    stray = root / "BAUM1a_MP4 - All/s001/s001_002.mp4"
    stray.parent.mkdir(parents=True)
    shutil.copy(root / "BAUM1a_MP4_all/s001/S001_002.mp4", stray)
    with pytest.raises(CorpusError, match=r"^baum1:.*\bS001_002\b") as error:
        prepare("baum1", root)
    assert f"{stray} and {root / 'BAUM1a_MP4_all/s001/S001_002.mp4'}" in str(error.value)


def test_baum1_unknown_code_names_workbook_and_clip(baum1, tmp_path):
    root = copy_tree(baum1, tmp_path)
    workbook = root / "Annotations_BAUM1s.xlsx"
    book = openpyxl.load_workbook(workbook)
    book.active.cell(row=3, column=3).value = 14  # S001_002's code
    book.save(workbook)
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(workbook))}:.*\bS001_002\b.*code 14\b"):
        prepare("baum1", root)


def test_baum1_clip_annotated_twice_is_an_error(baum1, tmp_path):
    root = copy_tree(baum1, tmp_path)
    workbook = root / "Annotations_BAUM1a.xlsx"
    book = openpyxl.load_workbook(workbook)
    book.active.append([2, "S002_003", "Disgust", 3, "Male"])
    book.save(workbook)
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(workbook))}:.*\bS002_003 has two\b"):
        prepare("baum1", root)


def test_baum1_missing_workbook_is_named(baum1, tmp_path):
    root = copy_tree(baum1, tmp_path)
    (root / "Annotations_BAUM1a.xlsx").unlink()
    with pytest.raises(CorpusError, match=rf"{re.escape(str(root / 'Annotations_BAUM1a.xlsx'))} not found"):
        prepare("baum1", root)


# -- EmoDB --------------------------------------------------------------------------------
def test_emodb_rows(emodb):
    m, found = run("emodb", emodb)
    assert len(m) == 56 and found == {}  # the ._ file is ignored silently
    assert m.counts("emotion") == {e: 8 for e in ("angry", "boredom", "disgust", "fear", "happy", "neutral", "sad")}
    assert m.counts("speaker") == {"03": 14, "08": 14, "10": 14, "16": 14}
    assert m.counts("gender") == {"F": 28, "M": 28}
    assert m.counts("expression") == {"acted": 56}
    row = m["emodb-10b02Wa"]
    assert (row["emotion"], row["speaker"], row["gender"], row["text"]) == ("angry", "10", "M", "b02")
    assert run("emodb", emodb / "wav")[0].ids() == m.ids()


def test_emodb_unknown_letter_and_stray_names(emodb, tmp_path):
    root = copy_tree(emodb, tmp_path)
    shutil.copy(root / "wav/03a01Wa.wav", root / "wav/notes.wav")
    m, found = run("emodb", root)
    assert len(m) == 56 and found["unparsed"].items == [str(root / "wav/notes.wav")]
    bad = root / "wav/03a01Xa.wav"
    shutil.copy(root / "wav/03a01Wa.wav", bad)
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(bad))}:.*'X'"):
        prepare("emodb", root)


# -- RAVDESS ------------------------------------------------------------------------------
def test_ravdess_duplicate_names_both_files(ravdess):
    with pytest.raises(CorpusError) as error:
        prepare("ravdess", ravdess)
    message = str(error.value)
    assert "\n" not in message and "on_duplicate='skip'" in message
    assert (
        f"{ravdess / 'Actor_02/03-01-05-01-01-01-02.wav'} and {ravdess / 'Actor_03/03-01-05-01-01-01-02.wav'}"
        in message
    )


def test_ravdess_skip_keeps_the_file_in_its_actors_folder(ravdess):
    m, found = run("ravdess", ravdess, on_duplicate="skip")
    assert len(m) == 90 and m.counts("speaker") == {"Actor_01": 30, "Actor_02": 30, "Actor_03": 30}
    assert m["ravdess-03-01-05-01-01-01-02"]["path"] == str(ravdess / "Actor_02/03-01-05-01-01-01-02.wav")
    stray = str(ravdess / "Actor_03/03-01-05-01-01-01-02.wav")
    assert found["duplicate"].items == [f"{stray} (same name as {ravdess / 'Actor_02/03-01-05-01-01-01-02.wav'})"]
    assert found["speaker_mismatch"].items == [f"{stray} (name says Actor_02)"]
    assert m.counts("gender") == {"F": 30, "M": 60}
    row = m["ravdess-03-01-08-02-01-01-03"]
    assert (row["emotion"], row["intensity"], row["statement"], row["repetition"], row["channel"]) == (
        "surprise",
        "strong",
        "01",
        "01",
        "speech",
    )


def test_ravdess_four_classes(ravdess):
    m, _ = run("ravdess", ravdess, on_duplicate="skip", classes="4class")
    assert m.counts("emotion") == {"angry": 12, "happy": 12, "neutral": 6, "sad": 12}
    assert m.report.excluded == {"02 (calm)": 12, "06 (fear)": 12, "07 (disgust)": 12, "08 (surprise)": 12}


def test_ravdess_moved_file_and_unknown_code(tmp_path):
    root = synthetic.make_ravdess(tmp_path, actors=(1, 2), repetitions=(1,), quirks=False)
    moved = root / "Actor_02/03-01-03-01-01-01-01.wav"
    (root / "Actor_01/03-01-03-01-01-01-01.wav").rename(moved)
    m, found = run("ravdess", root)
    assert len(m) == 60 and m["ravdess-03-01-03-01-01-01-01"]["speaker"] == "Actor_01"
    assert found["speaker_mismatch"].items == [f"{moved} (name says Actor_01)"]
    bad = root / "Actor_01/03-01-09-01-01-01-01.wav"
    shutil.copy(moved, bad)
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(bad))}:.*'09'"):
        prepare("ravdess", root)
    with pytest.raises(CorpusError, match=r"'on_duplicate'.*'fail' or 'skip'.*'keep'"):
        prepare("ravdess", root, on_duplicate="keep")


# -- URDU ---------------------------------------------------------------------------------
def test_urdu_rows(urdu):
    m, found = run("urdu", urdu)
    assert len(m) == 18 and found == {}
    assert m.counts("emotion") == {"angry": 5, "happy": 4, "neutral": 4, "sad": 5}
    assert m.counts("speaker") == {"SF1": 2, "SF10": 2, "SF9": 2, "SM1": 3, "SM2": 2, "SM3": 4, "SM6": 3}
    assert m.counts("gender") == {"F": 6, "M": 12} and m.counts("expression") == {"spontaneous": 18}
    row = m["urdu-SM3_F3_N01"]
    assert (row["emotion"], row["path"]) == ("neutral", str(urdu / "Neutral/SM3_F3_N01.wav"))
    assert row["duration"] == pytest.approx(sf.info(row["path"]).duration)


def test_urdu_folder_and_code_must_agree(urdu, tmp_path):
    root = copy_tree(urdu, tmp_path)
    wrong = root / "Happy/SM1_F9_A09.wav"
    shutil.copy(root / "Angry/SM1_F1_A01.wav", wrong)
    m, found = run("urdu", root)
    assert len(m) == 18 and found["label_mismatch"].items == [f"{wrong} (code A, folder Happy)"]
    bad = root / "Angry/SM1_F9_X09.wav"
    shutil.copy(root / "Angry/SM1_F1_A01.wav", bad)
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(bad))}:.*'X'"):
        prepare("urdu", root)


# -- CSV ----------------------------------------------------------------------------------
def test_csv_fills_duration_and_corpus(tmp_path):
    path = synthetic.make_csv(tmp_path)
    m, found = run("csv", path)
    assert found == {} and m.ids() == ["u1", "u2", "u3", "u4", "u5"]
    assert m.columns[-1] == "language" and m.column("language") == ["en", "en", "de", "de", "ur"]
    assert m.counts("corpus") == {"labels": 5}
    assert m["u1"]["path"] == str(tmp_path / "audio/clip1.wav")
    assert m["u1"]["duration"] == pytest.approx(sf.info(tmp_path / "audio/clip1.wav").duration)
    assert [m[u]["duration"] for u in ("u2", "u3", "u4")] == pytest.approx([0.4, 0.5, 0.25])
    assert run("csv", path, corpus="mine")[0].counts("corpus") == {"mine": 5}


def test_unreadable_audio_is_reported_and_kept(urdu, tmp_path):
    root = copy_tree(urdu, tmp_path)
    broken = root / "Sad/SM6_F1_S01.wav"
    broken.write_bytes(b"RIFF0000WAVE")  # a truncated header
    m, found = run("urdu", root)
    assert len(m) == 18 and m["urdu-SM6_F1_S01"]["duration"] is None
    assert len(found["unreadable"].items) == 1 and str(broken) in found["unreadable"].items[0]


def test_csv_keeps_a_given_corpus_and_names_a_missing_column(tmp_path):
    path = synthetic.make_csv(tmp_path)
    text = path.read_text()
    path.write_text(text.replace(",\n", ",given\n"))
    assert run("csv", path)[0].counts("corpus") == {"given": 5}
    path.write_text(text.replace("speaker,", "talker,"))
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(path))}:.*column\(s\) speaker\b"):
        prepare("csv", path)


def test_csv_rows_with_more_or_fewer_fields_than_the_header_name_the_line(tmp_path):
    path = synthetic.make_csv(tmp_path)
    lines = path.read_text().splitlines()
    for row, expected in ((lines[2] + ",surplus", 11), (lines[2].rsplit(",", 2)[0], 8)):
        path.write_text("\n".join([*lines[:2], "", row, *lines[3:]]) + "\n")  # a blank line before: line 4
        with pytest.raises(CorpusError, match=rf"^{re.escape(str(path))}:4: {expected} fields.*header has 10"):
            Manifest.read_csv(path)
    path.write_text("\n".join([*lines[:2], '"u2",audio/clip2.wav,sad,"spk1, a",acted,0.0,0.4,,en,'] + lines[3:]) + "\n")
    assert Manifest.read_csv(path)["u2"]["speaker"] == "spk1, a"  # a quoted comma is one field


# -- values an importer accepts -----------------------------------------------------------
def test_label_value_reads_numpy_and_torch_scalars_and_refuses_other_types():
    import torch

    from featurestore.corpora.base import label_value, scalar_value

    assert [label_value(v, "x") for v in (np.int64(2), torch.tensor(1), 3.0, "sad", None)] == [2, 1, 3, "sad", None]
    assert type(label_value(np.str_("sad"), "x")) is str
    for bad, shown in (
        (b"\xff\xfeang", "b'\\xff\\xfeang'"),
        (["a", "b"], "['a', 'b']"),
        ({"a": 1}, "{'a': 1}"),
        (True, "True"),
        (1.5, "1.5"),
        (float("inf"), "inf"),
    ):
        with pytest.raises(CorpusError, match=rf"^row 3\b.*got {re.escape(shown)}$"):
            label_value(bad, "row 3")
    assert [scalar_value(v, "x") for v in (np.float32(0.5), True, "a", None)] == [0.5, True, "a", None]
    with pytest.raises(CorpusError, match=r"^field 'x'.*got \[1, 2\]$"):
        scalar_value([1, 2], "field 'x'")


# -- JSON lines, read a line at a time ----------------------------------------------------
def test_iter_jsonl_reads_plain_and_gzip_lines_and_bounds_them(tmp_path):
    import gzip

    from featurestore.textfile import iter_jsonl, iter_lines

    text = '\ufeff{"a": 1}\r\n\n  \n[2]\n"three"'
    (tmp_path / "x.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("x.jsonl", "x.jsonl.gz"):
        assert list(iter_jsonl(tmp_path / name, name)) == [(1, {"a": 1}), (4, [2]), (5, "three")]
    (tmp_path / "long.jsonl").write_text("1\n" + "2" * 99 + "\n" + "3" * 100 + "\n")
    assert [n for n, _ in iter_lines(tmp_path / "long.jsonl", "f", max_line_bytes=100)] == [1, 2, 3]
    (tmp_path / "long.jsonl").write_text("1\n" + "2" * 101 + "\n")
    with pytest.raises(SermtlError, match=r"^f, line 2:.*\b100 bytes\b"):
        list(iter_lines(tmp_path / "long.jsonl", "f", max_line_bytes=100))
    with pytest.raises(SermtlError, match=r"^f:.*\b50 bytes\b"):
        list(iter_lines(tmp_path / "long.jsonl", "f", max_bytes=50))
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(SermtlError, match=r"^m, line 2:.*JSON\b.*\(JSONDecodeError"):
        list(iter_jsonl(tmp_path / "bad.jsonl", "m"))
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-30])
    with pytest.raises(SermtlError, match=r"^g:.*gzip.*line \d+ \(EOFError"):
        list(iter_lines(tmp_path / "cut.jsonl.gz", "g"))
    (tmp_path / "latin.jsonl").write_bytes(b'"ok"\n"\xe9"\n')
    with pytest.raises(SermtlError, match=r"^l, line 2:.*UTF-8.*\(byte 1\)"):
        list(iter_lines(tmp_path / "latin.jsonl", "l"))
    with pytest.raises(SermtlError, match=r"^d:.*regular file"):
        list(iter_lines(tmp_path, "d"))


# -- synthetic audio ----------------------------------------------------------------------
def test_synthetic_corpora_are_deterministic(tmp_path):
    def digest(root):
        return {p.relative_to(root): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}

    first = digest(synthetic.make_emodb(tmp_path / "a", speakers=("03",)))
    assert first == digest(synthetic.make_emodb(tmp_path / "b", speakers=("03",)))
    assert first != digest(synthetic.make_emodb(tmp_path / "c", speakers=("03",), seed=1))


def test_synthetic_audio_follows_the_labels():
    def pitch_spread(wave, frame=800):
        frames = wave[: len(wave) // frame * frame].reshape(-1, frame)
        spectrum = np.abs(np.fft.rfft(frames * np.hanning(frame), n=8000, axis=1))[:, 40:400]
        return np.std(np.log(np.argmax(spectrum, axis=1) * 2 + 80))

    for seed in range(3):
        level = {
            e: np.sqrt(np.mean(synthetic.synth_utterance(e, "acted", 1.0, 16000, seed) ** 2))
            for e in ("angry", "happy", "neutral", "sad")
        }
        assert level["angry"] > level["happy"] > level["neutral"] > level["sad"]
        acted, spontaneous = (
            synthetic.synth_utterance("neutral", x, 1.5, 16000, seed) for x in ("acted", "spontaneous")
        )
        assert pitch_spread(spontaneous) > 2 * pitch_spread(acted)


# -- the real corpora in ../shared/data ---------------------------------------------------
@pytest.mark.corpus
def test_real_urdu(shared_data):
    m, found = run("urdu", shared_data / "urdu")
    assert len(m) == 400 and found == {}
    assert m.counts("emotion") == {"angry": 100, "happy": 100, "neutral": 100, "sad": 100}
    # 29 speaker ids in the file names (11 F, 18 M); the README's "38 speakers" is the paper's count
    assert len(m.counts("speaker")) == 29
    assert m.counts("gender") == {"F": 56, "M": 344}
    assert m.counts("expression") == {"spontaneous": 400}
    assert m.total_duration() == pytest.approx(998.7, abs=0.1)


@pytest.mark.corpus
def test_real_ravdess_subset(shared_data):
    root = shared_data / "ravdess_subset"
    stray, real = root / "Actor_05/03-01-05-01-01-01-02.wav", root / "Actor_02/03-01-05-01-01-01-02.wav"
    with pytest.raises(
        CorpusError, match=rf"'ravdess-03-01-05-01-01-01-02': {re.escape(str(real))} and {re.escape(str(stray))}"
    ):
        prepare("ravdess", root)
    m, found = run("ravdess", root, on_duplicate="skip")
    assert len(m) == 480 and m.counts("speaker") == {f"Actor_0{a}": 60 for a in range(1, 9)}
    assert m["ravdess-03-01-05-01-01-01-02"]["path"] == str(real)
    assert found["duplicate"].items == [f"{stray} (same name as {real})"]
    assert found["speaker_mismatch"].items == [f"{stray} (name says Actor_02)"]
    four = run("ravdess", root, on_duplicate="skip", classes="4class")[0]
    assert four.counts("emotion") == {"angry": 64, "happy": 64, "neutral": 32, "sad": 64}
