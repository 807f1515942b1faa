"""Audio files known by their state: a resumed ``extract`` and ``verify`` read a stored entry's
audio file only when its state (size, modification and change times, inode) differs from the one
recorded when its signature was last found right; a changed file is still refused.

Also the other costs of a large resume that do not depend on the audio: the stored manifest is
not parsed again when the run's manifest is the one stored, and skipped items are saved once
per batch.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from featurestore import decode, verify
from featurestore.audio import audio_identity
from featurestore.errors import StoreError
from featurestore.features.mfcc import MFCCExtractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store
from featurestore.store import StoreWriter, open_store
from featurestore.store.zarr_store import ZarrBackend

SUFFIXES = [".zarr", ".h5"]


@pytest.fixture
def settled_now(monkeypatch) -> None:
    """Files count as settled at once (the tests' files were all written a moment ago)."""
    monkeypatch.setattr(decode, "SETTLED_NS", 0)


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The audio paths that ``verify``/``extract`` hash (read), in order."""
    paths: list[str] = []

    def counting(path):
        paths.append(str(path))
        return audio_identity(path)

    monkeypatch.setattr(verify, "audio_identity", counting)
    return paths


def extract(manifest: Manifest, path: Path, **options):
    return extract_to_store(manifest, MFCCExtractor(device="cpu"), path, progress=False, **options)


def audio_stat_rows(path: Path) -> np.ndarray:
    with open_store(path) as store:
        return store._backend.array("audio_stat")[:, 0]


def same_size_other_content(path: Path) -> None:
    """Change samples within the file's first 4 KiB (after its header), keeping its size."""
    data = bytearray(Path(path).read_bytes())
    data[200:400] = bytes(255 - b for b in data[200:400])
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_unchanged_files_are_known_by_their_state_and_not_read(tmp_path, manifest, settled_now, hashed, suffix):
    path = tmp_path / f"s{suffix}"
    extract(manifest, path)
    assert (audio_stat_rows(path) >= 0).all()  # every file's state recorded as it was signed
    report = extract(manifest, path)
    assert (report.stored, report.already_done) == (0, 12)
    assert verify.verify_store(path).ok
    assert hashed == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_touched_file_is_hashed_once_then_known_by_its_new_state(tmp_path, manifest, settled_now, hashed, suffix):
    path = tmp_path / f"s{suffix}"
    extract(manifest, path)
    audio = manifest["u03"]["path"]
    before = audio_stat_rows(path)
    info = os.stat(audio)
    os.utime(audio, ns=(info.st_atime_ns, info.st_mtime_ns - 10**10))  # mtime changed, content not
    report = extract(manifest, path)
    assert (report.stored, report.already_done) == (0, 12)  # not refused, nothing recomputed
    assert hashed == [audio]
    after = audio_stat_rows(path)
    row = manifest.position("u03")
    assert after[row] != before[row] and np.delete(after, row).tolist() == np.delete(before, row).tolist()
    hashed.clear()
    assert extract(manifest, path).stored == 0 and verify.verify_store(path).ok
    assert hashed == []


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("restore_mtime", [False, True], ids=["new-mtime", "mtime-restored"])
def test_content_changed_with_the_same_size_is_refused(tmp_path, manifest, settled_now, suffix, restore_mtime):
    path = tmp_path / f"s{suffix}"
    extract(manifest, path)
    audio = manifest["u05"]["path"]
    info = os.stat(audio)
    same_size_other_content(audio)
    if restore_mtime:  # as `cp -p` or `touch -r` would: the change time still moves
        os.utime(audio, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert os.stat(audio).st_size == info.st_size
    with pytest.raises(StoreError, match=r"1 stored utterance\(s\) have stale features \(u05: its audio .*--repair"):
        extract(manifest, path)
    result = verify.verify_store(path)
    assert result.bad_ids == ["u05"] and "changed since its features were extracted" in result.problems[0]
    report = extract(manifest, path, repair=True)
    assert report.repaired == ["u05"] and verify.verify_store(path).ok


def test_a_file_changed_within_the_settling_time_is_hashed_until_it_settles(tmp_path, manifest, hashed, monkeypatch):
    monkeypatch.setattr(decode, "SETTLED_NS", 10**12)  # every file was written a moment ago
    path = tmp_path / "s.zarr"
    extract(manifest, path)  # no state is worth recording yet
    assert (audio_stat_rows(path) == -1).all()
    assert extract(manifest, path).stored == 0
    assert len(hashed) == 12 and (audio_stat_rows(path) == -1).all()


def test_file_identity_signs_and_states_one_open_file(tmp_path, monkeypatch) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF" + bytes(range(256)) * 64)
    signature, key = decode.file_identity(audio)
    assert signature == decode.file_signature(audio) and key is None  # written just now
    monkeypatch.setattr(decode, "SETTLED_NS", 0)
    assert decode.file_identity(audio) == (signature, decode.current_stat_key(audio))
    info = os.stat(audio)
    assert decode.settled(info, now_ns=max(info.st_mtime_ns, info.st_ctime_ns))
    monkeypatch.setattr(decode, "SETTLED_NS", 2 * 10**9)
    assert not decode.settled(info, now_ns=max(info.st_mtime_ns, info.st_ctime_ns) + 10**9)
    assert decode.settled(info, now_ns=time.time_ns() + 3 * 10**9)
    assert decode.file_identity(tmp_path / "missing.wav") == (None, None)
    assert decode.current_stat_key(tmp_path / "missing.wav") is None and decode.current_stat_key(tmp_path) is None


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_store_written_before_audio_states_were_recorded(tmp_path, manifest, settled_now, hashed, suffix):
    path = tmp_path / f"s{suffix}"
    extract(manifest, path)
    if suffix == ".h5":
        import h5py

        with h5py.File(path, "r+") as handle:
            del handle["audio_stat"]
    else:
        import shutil

        shutil.rmtree(path / "audio_stat")
    with open_store(path) as store:  # read as before: every file is hashed
        assert store.audio_stat_keys() == {} and len(store.audio_signatures()) == 12
    assert verify.verify_store(path).ok and len(hashed) == 12
    hashed.clear()
    assert extract(manifest, path).stored == 0  # the next writer adds the array, hashes, records
    assert len(hashed) == 12 and (audio_stat_rows(path) >= 0).all()
    hashed.clear()
    assert extract(manifest, path).stored == 0 and verify.verify_store(path).ok
    assert hashed == []
    same_size_other_content(manifest["u02"]["path"])
    with pytest.raises(StoreError, match=r"\bu02: its audio"):
        extract(manifest, path)


def test_resuming_with_the_stored_manifest_does_not_parse_it_again(tmp_path, manifest, monkeypatch) -> None:
    path = tmp_path / "s.zarr"
    extract(manifest, path)
    parsed = []
    real = Manifest.from_json.__func__

    def counting(cls, text, source="manifest"):
        parsed.append(source)
        return real(cls, text, source)

    monkeypatch.setattr(Manifest, "from_json", classmethod(counting))
    assert extract(manifest, path).already_done == 12
    assert parsed == []  # neither to merge it nor for the checks made under the lock
    grown = Manifest([*manifest.to_records(), {**manifest.to_records()[0], "utt_id": "again"}])
    report = extract(grown, path)
    assert (report.stored, report.already_done) == (1, 12) and parsed  # merged the usual way
    with open_store(path) as store:
        assert store.full_manifest.ids() == grown.ids() and store.manifest.ids() == grown.ids()


def test_skipped_items_are_saved_once_per_batch_and_a_no_op_resume_writes_no_report(
    tmp_path, manifest, monkeypatch
) -> None:
    rows = manifest.to_records()
    for row in rows[:3]:
        Path(row["path"]).write_text("not audio at all")
    bad = Manifest(rows)
    path = tmp_path / "s.zarr"
    saved = []
    real = ZarrBackend.write_text

    def counting(self, name, text):
        saved.append(name)
        return real(self, name, text)

    monkeypatch.setattr(ZarrBackend, "write_text", counting)
    report = extract(bad, path, on_error="skip", batch_seconds=1000.0)  # one batch
    assert {s["utt_id"] for s in report.skipped} == {"u00", "u01", "u02"}
    assert saved.count("report") == 1
    with open_store(path) as store:
        assert {s["utt_id"] for s in store.skipped()} == {"u00", "u01", "u02"}
    saved.clear()
    for row, good in zip(rows[:3], manifest.to_records()[3:6]):
        Path(row["path"]).write_bytes(Path(good["path"]).read_bytes())
    assert extract(bad, path).stored == 3 and saved == ["report"]  # the fixed items leave the report
    with open_store(path) as store:
        assert store.skipped() == []
    saved.clear()
    assert extract(bad, path).stored == 0 and saved == []


def test_the_message_names_the_file_that_changed(tmp_path, manifest, settled_now) -> None:
    path = tmp_path / "s.zarr"
    extract(manifest, path)
    audio = manifest["u07"]["path"]
    same_size_other_content(audio)
    with pytest.raises(StoreError, match=re.escape(audio)):
        extract(manifest, path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_states_lost_with_a_killed_writer_are_never_trusted(
    tmp_path, manifest, settled_now, hashed, monkeypatch, suffix
):
    """States are saved when the writer closes; a writer killed before keeps the earlier ones,
    which name states its files cannot be in again."""
    path = tmp_path / f"s{suffix}"
    extract(manifest, path)
    before = audio_stat_rows(path)
    audio = manifest["u04"]["path"]
    same_size_other_content(audio)
    with monkeypatch.context() as killed:
        killed.setattr(StoreWriter, "_save_audio_stat", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            extract(manifest, path, repair=True)  # u04 recomputed and committed, its new state lost
    assert audio_stat_rows(path).tolist() == before.tolist()
    with open_store(path) as store:
        assert len(store) == 12
    hashed.clear()
    report = extract(manifest, path)  # u04's recorded state is of the file before the change
    assert (report.stored, report.already_done) == (0, 12) and hashed == [audio]
    hashed.clear()
    assert extract(manifest, path).stored == 0 and verify.verify_store(path).ok and hashed == []
