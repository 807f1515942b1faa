"""lhotse manifests as a corpus: a CutSet, or recordings + supervisions, with custom fields
as columns; overlapping supervisions and missing recordings refused in one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tests.conftest import write_tone

lhotse = pytest.importorskip("lhotse")
EMOTIONS = ["angry", "happy", "sad"]


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    """Three 4 s recordings, each with three 1 s supervisions (speaker, emotion, intensity)."""
    base = tmp_path_factory.mktemp("lhotse")
    recordings, supervisions = [], []
    for r in range(3):
        path = write_tone(base / "audio" / f"rec{r}.wav", 4.0, sr=22050, freq=150 + 50 * r, seed=r)
        recordings.append(lhotse.Recording.from_file(str(path), recording_id=f"rec{r}"))
        for k in range(3):
            supervisions.append(
                lhotse.SupervisionSegment(
                    id=f"rec{r}-{k}",
                    recording_id=f"rec{r}",
                    start=0.2 + 1.2 * k,
                    duration=1.0,
                    speaker=f"spk{r}",
                    gender="female" if r % 2 else "male",
                    custom={"emotion": EMOTIONS[k].upper(), "intensity": k + 1},
                )
            )
    recording_set, supervision_set = (
        lhotse.RecordingSet.from_recordings(recordings),
        lhotse.SupervisionSet.from_segments(supervisions),
    )
    folder = base / "manifests"
    folder.mkdir()
    recording_set.to_file(folder / "toy_recordings.jsonl.gz")
    supervision_set.to_file(folder / "toy_supervisions.jsonl.gz")
    cuts = lhotse.CutSet.from_manifests(recordings=recording_set, supervisions=supervision_set).trim_to_supervisions()
    cuts.to_file(base / "cuts.jsonl.gz")
    return base, folder, supervisions


@pytest.mark.parametrize("which", ["cuts", "folder"])
def test_cuts_and_manifests_give_one_row_per_supervision(manifests, which, tmp_path) -> None:
    base, folder, supervisions = manifests
    root = base / "cuts.jsonl.gz" if which == "cuts" else folder
    out = tmp_path / "m.csv"
    assert "9 utterances" in run("prepare", "--corpus", "lhotse", "--root", root, "--out", out).output
    from featurestore.audio import load_audio
    from featurestore.manifest import Manifest

    rows = Manifest.read_csv(out)
    row = rows["rec1-2"]
    assert (row["emotion"], row["speaker"], row["gender"], row["intensity"]) == ("sad", "spk1", "F", "3")
    assert row["start"] == pytest.approx(2.6) and row["end"] == pytest.approx(3.6)
    whole = load_audio(row["path"])
    np_segment = load_audio(row["path"], row["start"], row["end"])
    assert (
        len(np_segment) == 16000 and abs(np_segment - whole[int(2.6 * 16000) : int(2.6 * 16000) + 16000]).max() < 0.05
    )
    store = tmp_path / "s.zarr"
    assert (
        "9 stored" in run("extract", "--manifest", out, "--feature", "mfcc", "--store", store, "--device", "cpu").output
    )


def test_overlapping_supervisions_and_missing_recordings_are_one_line(manifests, tmp_path) -> None:
    base, folder, supervisions = manifests
    recordings = {r.id: r for r in lhotse.RecordingSet.from_file(folder / "toy_recordings.jsonl.gz")}
    whole = lhotse.CutSet.from_manifests(
        recordings=lhotse.RecordingSet.from_recordings(recordings.values()),
        supervisions=lhotse.SupervisionSet.from_segments(supervisions),
    )
    whole.to_file(tmp_path / "whole.jsonl.gz")  # one cut per recording, three supervisions each
    result = run(
        "prepare", "--corpus", "lhotse", "--root", tmp_path / "whole.jsonl.gz", "--out", tmp_path / "m.csv", ok=False
    )
    assert result.exit_code == 1 and "holds 3 (overlapping) supervisions" in result.output
    odd = tmp_path / "odd"
    odd.mkdir()
    lhotse.RecordingSet.from_recordings([recordings["rec0"]]).to_file(odd / "r_recordings.jsonl.gz")
    lhotse.SupervisionSet.from_segments(supervisions[:4]).to_file(odd / "r_supervisions.jsonl.gz")
    result = run("prepare", "--corpus", "lhotse", "--root", odd, "--out", tmp_path / "m.csv", ok=False)
    assert "supervision rec1-0 names recording 'rec1', which" in result.output
    result = run(
        "prepare",
        "--corpus",
        "lhotse",
        "--root",
        base / "cuts.jsonl.gz",
        "--option",
        "label=mood",
        "--out",
        tmp_path / "m.csv",
        ok=False,
    )
    assert "has no 'mood' in its custom fields (has: emotion, intensity)" in result.output


def _folder_with(target: Path, manifests, *supervisions) -> Path:
    """``target`` holding the fixture's recordings and ``supervisions`` (a plain jsonl)."""
    target.mkdir(parents=True)
    (target / "r_recordings.jsonl.gz").write_bytes((manifests[1] / "toy_recordings.jsonl.gz").read_bytes())
    lhotse.SupervisionSet.from_segments(supervisions).to_file(target / "r_supervisions.jsonl")
    return target


def test_spans_are_checked_against_the_recording_within_10_ms(manifests, tmp_path) -> None:
    near_end = dataclasses.replace(manifests[2][0], start=3.0, duration=1.008)
    out = tmp_path / "m.csv"
    run("prepare", "--corpus", "lhotse", "--root", _folder_with(tmp_path / "m", manifests, near_end), "--out", out)
    from featurestore.manifest import Manifest

    row = Manifest.read_csv(out)["rec0-0"]
    assert (row["start"], row["end"]) == (3.0, 4.0)  # 8 ms past the end: clipped to the recording
    late = next(cut for cut in lhotse.CutSet.from_file(manifests[0] / "cuts.jsonl.gz") if cut.id.startswith("rec2-2"))
    late.supervisions[0] = dataclasses.replace(late.supervisions[0], duration=1.5)  # its cut starts 2.6 s into 4 s
    lhotse.CutSet.from_cuts([late]).to_file(tmp_path / "late.jsonl.gz")
    result = run("prepare", "--corpus", "lhotse", "--root", tmp_path / "late.jsonl.gz", "--out", out, ok=False)
    assert (
        result.exit_code == 1
        and "spans 2.600..4.100 s (1.500 s), outside its recording rec2 (4.000 s long; tolerance 10 ms)"
        in result.output
    )


def test_custom_fields_never_replace_the_manifests_columns(manifests, tmp_path) -> None:
    for field in ("path", "speaker", "corpus", "duration"):
        clash = dataclasses.replace(manifests[2][0], custom={"emotion": "sad", field: "x"})
        target = _folder_with(tmp_path / field, manifests, clash)
        result = run("prepare", "--corpus", "lhotse", "--root", target, "--out", tmp_path / "m.csv", ok=False)
        assert (
            result.exit_code == 1
            and f"supervision rec0-0: custom field {field!r} is named like the manifest's own column" in result.output
        )
    assert not (tmp_path / "m.csv").exists()


def test_manifest_lines_are_read_one_at_a_time_and_named(manifests, tmp_path) -> None:
    target = _folder_with(tmp_path / "m", manifests, *manifests[2][:2])
    supervisions = target / "r_supervisions.jsonl"
    first = supervisions.read_text().splitlines()[0]
    for second, expected in (
        ('{"id": "x", "recording_id": "rec0"}', "line 2: not a lhotse manifest item (TypeError"),
        ("[1, 2]", "line 2: not a JSON object"),
        ('{"id": ', "line 2: not valid JSON"),
    ):
        supervisions.write_text(f"{first}\n{second}\n")
        result = run("prepare", "--corpus", "lhotse", "--root", target, "--out", tmp_path / "m.csv", ok=False)
        assert result.exit_code == 1 and f"lhotse: {supervisions}, {expected}" in result.output
    supervisions.write_text(first.replace('"rec0-0"', '["rec0-0"]') + "\n")
    result = run("prepare", "--corpus", "lhotse", "--root", target, "--out", tmp_path / "m.csv", ok=False)
    assert f"lhotse: {supervisions}, line 1: the item's id must be text, got ['rec0-0']" in result.output
