"""Reliability of a store in one process: verify finds damaged entries, repair recomputes only
those, a damaged chunk never stops later runs, a failing disk or a read-only store loses nothing,
a killed HDF5 writer leaves no stuck file."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store
from featurestore.errors import AudioError, SermtlError, StoreError
from featurestore.features.mfcc import MFCCExtractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store
from featurestore.store import StoreWriter
from featurestore.verify import store_summary, verify_store

REPO = Path(__file__).resolve().parents[2]


def extract(manifest: Manifest, path: Path, **options):
    """One-by-one MFCC extraction (so a repaired entry is computed exactly like a clean one)."""
    return extract_to_store(manifest, MFCCExtractor(device="cpu"), path, max_batch=1, progress=False, **options)


def assert_same_features(path: Path, reference: Path) -> None:
    store, clean = open_store(path), open_store(reference)
    assert store.ids() == clean.ids()
    for utt_id in clean.ids():
        np.testing.assert_array_equal(store.read(utt_id), clean.read(utt_id))


def open_arrays(path: Path):
    """The raw ``features`` and ``index`` arrays, writable, bypassing sermtl (to damage them)."""
    if path.suffix == ".h5":
        import h5py

        handle = h5py.File(path, "r+")
        return handle, handle["features"], handle["index"]
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    return None, group["features"], group["index"]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_verify_flags_damaged_entries_and_repair_recomputes_only_those(tmp_path, manifest, suffix) -> None:
    clean, path = tmp_path / f"clean{suffix}", tmp_path / f"damaged{suffix}"
    extract(manifest, clean)
    extract(manifest, path)
    handle, features, index = open_arrays(path)
    offset = int(index[2, 0])
    features[0, offset + 3, 5] = np.nan  # u02: a NaN
    offset = int(index[5, 0])
    features[0, offset + 1, 0] = features[0, offset + 1, 0] + 1.0  # u05: a finite value changed silently
    index[8, 1] = int(index[8, 1]) - 20  # u08: entry cut short
    if handle is not None:
        handle.close()

    result = verify_store(path)
    assert not result.ok and result.bad_ids == ["u02", "u05", "u08"] and result.checked == 12
    problems = dict(p.split(": ", 1) for p in result.problems)
    assert problems["u02"] == "NaN or infinite values"
    assert problems["u05"].startswith("checksum mismatch")
    assert "frames for" in problems["u08"] and "expected about" in problems["u08"]

    report = extract(manifest, path, repair=True)
    assert report.repaired == ["u02", "u05", "u08"] and report.stored == 3 and report.already_done == 9
    assert verify_store(path).ok
    assert_same_features(path, clean)
    from featurestore import open_store
    from trainer.data import open_bank

    with open_store(path) as store:  # the damaged frames stay on disk, unused: the bank's size leaves them out
        used = store.committed_frames * store.dim * store.dtype.itemsize
        assert store.committed_frames == sum(frames for _, frames in store.entries().values()) < store.stored_frames
        assert not open_bank(store, budget_bytes=used).streaming and open_bank(store, budget_bytes=used - 1).streaming


def test_verify_checks_shape_attributes_and_index_length(tmp_path, manifest) -> None:
    path = tmp_path / "s.zarr"
    extract(manifest, path)
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group.attrs["dim"] = 13
    group["index"].resize((10, 2))
    result = verify_store(path)
    assert "features have dim 40, attributes say 13" in result.problems
    assert "index has 10 rows for 12 manifest rows" in result.problems
    assert result.missing == ["u10", "u11"] and not result.bad_ids


def test_unreadable_chunk_is_flagged_and_repaired_around(tmp_path, manifest) -> None:
    clean, path = tmp_path / "clean.zarr", tmp_path / "s.zarr"
    extract(manifest, clean)
    extract(manifest, path)
    chunk = path / "features" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:1000])  # a torn chunk file: every entry in it is unreadable
    result = verify_store(path)
    assert result.bad_ids == manifest.ids()
    assert all("cannot read its frames" in p for p in result.problems)
    extract(manifest, path, repair=True)
    assert verify_store(path).ok  # the torn chunk is still on disk, but nothing points into it
    assert_same_features(path, clean)
    with open_store(path) as store, open_store(clean) as reference:  # the training path reads around it
        block, entries = store.read_all()
        expected, expected_entries = reference.read_all()
        assert entries == expected_entries
        np.testing.assert_array_equal(block, expected)


def tear(chunk: Path) -> None:
    """Truncate a chunk file, as a damaged disk or an interrupted copy would."""
    chunk.write_bytes(chunk.read_bytes()[:7])


def put_nan(path: Path, ids: list[str], manifest: Manifest) -> None:
    """A NaN in the first frame of each of ``ids`` (bypassing sermtl)."""
    handle, features, index = open_arrays(path)
    for utt_id in ids:
        features[0, int(index[manifest.position(utt_id), 0]), 0] = np.nan
    if handle is not None:
        handle.close()


def test_repair_that_stops_early_leaves_a_store_the_next_run_finishes(tmp_path, manifest) -> None:
    """The entries of a damaged chunk are forgotten, then the repair fails before rewriting any:
    the next run must still write past the damaged chunk."""
    clean, path = tmp_path / "clean.zarr", tmp_path / "s.zarr"
    extract(manifest, clean)
    extract(manifest, path)
    tear(path / "features" / "c" / "0" / "0" / "0")
    audio = Path(manifest["u11"]["path"])  # the longest: the first to be recomputed
    saved = audio.read_bytes()
    audio.unlink()
    with pytest.raises(AudioError, match=re.escape(str(audio))):
        extract(manifest, path, repair=True)
    assert len(open_store(path)) == 0
    audio.write_bytes(saved)
    report = extract(manifest, path)
    assert report.stored == 12 and verify_store(path).ok
    assert_same_features(path, clean)


def toy_writer(path: Path) -> StoreWriter:
    rows = Manifest([{"utt_id": f"x{i}", "path": f"/a/x{i}.wav"} for i in range(3)])
    return StoreWriter(path, rows, {"feature": "toy"}, "float32", dim=3, num_layers=1, frame_rate=100.0, chunk_frames=4)


def frames(value: float, count: int) -> np.ndarray:
    return np.full((1, count, 3), value, np.float32)


def test_writing_into_a_damaged_chunk_is_one_line_and_invalidate_moves_past_it(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    with toy_writer(path) as writer:
        writer.write([("x0", frames(0, 4)), ("x1", frames(1, 6))])  # frames 0-3 and 4-9; chunks of 4
    import zarr

    zarr.open_group(str(path), mode="r+")["index"][1] = (-1, -1)  # x1 uncommitted, as a killed writer leaves it
    tear(path / "features" / "c" / "0" / "2" / "0")  # frames 8-11, where the next x1 would go
    with toy_writer(path) as writer:
        with pytest.raises(SermtlError) as info:
            writer.write([("x1", frames(1, 5))])  # part of the damaged chunk: zarr reads it first
        message = str(info.value)
        assert (
            "\n" not in message
            and str(path) in message
            and f"sermtl verify {path}" in message
            and "--repair" in message
        )
        writer.invalidate([])  # what extract --repair does first: the append point moves past every stored chunk
        writer.write([("x1", frames(1, 5))])
    with toy_writer(path) as writer:
        writer.write([("x2", frames(2, 3))])
    result = verify_store(path)
    assert not result.problems and result.missing == []
    with open_store(path) as store:
        assert store.entries() == {"x0": (0, 4), "x1": (12, 5), "x2": (17, 3)}
        assert store.read("x1").tolist() == [[1.0] * 3] * 5 and store.read("x2").tolist() == [[2.0] * 3] * 3


def test_forgotten_entries_keep_the_next_writer_past_the_damaged_chunk(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    with toy_writer(path) as writer:
        for i in range(3):
            writer.write([(f"x{i}", frames(i, 4))])
    tear(path / "features" / "c" / "0" / "2" / "0")
    with toy_writer(path) as writer:
        writer.invalidate(["x1", "x2"])  # and nothing rewritten in this run
    with toy_writer(path) as writer:
        writer.write([("x1", frames(1, 5))])  # frames 4-8 would write part of the damaged chunk
        writer.write([("x2", frames(2, 2))])
    assert verify_store(path).ok
    with open_store(path) as store:
        assert store.entries() == {"x0": (0, 4), "x1": (12, 5), "x2": (17, 2)}
        assert store.read("x1").tolist() == [[1.0] * 3] * 5 and store.read("x2").tolist() == [[2.0] * 3] * 2


def test_unreadable_checksum_array_is_reported_and_the_store_still_opens(tmp_path, manifest) -> None:
    clean, path = tmp_path / "clean.zarr", tmp_path / "s.zarr"
    extract(manifest, clean)
    extract(manifest, path)
    tear(path / "checksum" / "c" / "0" / "0")
    result = verify_store(path)
    assert not result.ok and not result.bad_ids and not result.missing and result.checked == 12
    assert len(result.problems) == 1 and result.problems[0].startswith(f"store checksum unreadable: {path}")
    assert store_summary(path)["utterances"] == 12
    with open_store(path) as store:
        assert store.checksums() == {} and len(store.read_all()[1]) == 12
    with pytest.warns(UserWarning, match="12 of 12 checksums discarded"):
        report = extract(manifest, path, repair=True)  # rewrites the checksum array, all unknown
    assert report.repaired == [] and report.stored == 0
    assert verify_store(path).ok
    assert_same_features(path, clean)


def test_unreadable_index_or_manifest_is_one_line(tmp_path, manifest) -> None:
    path = tmp_path / "s.zarr"
    extract(manifest, path)
    tear(path / "index" / "c" / "0" / "0")
    for action in (lambda: open_store(path), lambda: verify_store(path), lambda: extract(manifest, path, repair=True)):
        with pytest.raises(StoreError, match=rf"\bindex unreadable: {re.escape(str(path))} \(ValueError: [^\n]*\)"):
            action()
    import zarr

    other = tmp_path / "m.zarr"
    extract(manifest, other)
    group = zarr.open_group(str(other), mode="r+")
    group.attrs["sermtl_blobs"] = {**group.attrs["sermtl_blobs"], "manifest": '{"rows": [cut short'}
    for action in (lambda: open_store(other), lambda: extract(manifest, other)):
        with pytest.raises(
            StoreError, match=rf"\bmanifest unreadable: {re.escape(str(other))} \(JSONDecodeError: [^\n]*\)$"
        ):
            action()


def test_repair_rewrites_only_flagged_entries_of_its_manifest_and_reports_those(tmp_path, manifest) -> None:
    path = tmp_path / "s.zarr"
    extract(manifest, path)
    put_nan(path, ["u02", "u05", "u09"], manifest)
    Path(manifest["u05"]["path"]).unlink()
    report = extract(manifest.subset(manifest.ids()[:6]), path, repair=True, on_error="skip")
    assert report.repaired == ["u02"] and [item["utt_id"] for item in report.skipped] == ["u05"]
    result = verify_store(path)
    assert result.bad_ids == ["u09"] and result.missing == ["u05"]  # u09 is outside the manifest: kept as it was


def test_duration_mismatch_is_reported_but_not_recomputed(tmp_path, manifest) -> None:
    path = tmp_path / "s.zarr"
    extract(manifest, path)
    rows = manifest.to_records()
    rows[3]["duration"] *= 2  # the manifest disagrees with the audio: recomputing gives the same frames
    wrong = Manifest(rows)
    extract(wrong, path)
    result = verify_store(path)
    assert result.duration_mismatch_ids == ["u03"] and not result.bad_ids and not result.ok
    assert result.problems[0].startswith("u03: ") and "expected about" in result.problems[0]
    report = extract(wrong, path, repair=True)
    assert report.repaired == [] and report.stored == 0 and report.already_done == 12
    assert verify_store(path).problems == result.problems


def test_repair_takes_the_lock_before_it_checks(tmp_path, manifest, monkeypatch) -> None:
    import featurestore.verify as verify_module

    path = tmp_path / "s.zarr"
    extract(manifest, path)
    put_nan(path, ["u04"], manifest)
    real_scan, lock_held = verify_module._value_problems, []

    def scan(store, entries):
        with open(path.with_name(path.name + ".lock")) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock_held.append(False)
            except BlockingIOError:
                lock_held.append(True)
        return real_scan(store, entries)

    monkeypatch.setattr(verify_module, "_value_problems", scan)
    with StoreWriter(
        path, manifest, MFCCExtractor(device="cpu").describe(), "float32", dim=40, num_layers=1, frame_rate=100.0
    ):
        with pytest.raises(StoreError, match=rf"{re.escape(str(path))} .*another process"):
            extract(manifest, path, repair=True)
    assert lock_held == []  # refused before any scan
    report = extract(manifest, path, repair=True)
    assert report.repaired == ["u04"] and lock_held == [True]


def test_refused_writer_leaves_the_hdf5_store_closed(tmp_path, manifest) -> None:
    path = tmp_path / "s.h5"
    extract(manifest, path)
    rows = manifest.to_records()
    rows[0]["end"] = 0.2  # the same id pointing to other audio: refused while merging the manifest
    with pytest.raises(StoreError, match=rf"\bu00\b.*other audio.*{re.escape(str(path))}") as refused:
        extract(Manifest(rows), path)
    assert refused.value.__traceback__ is not None  # the refused writer is still referenced here
    with open_store(path) as store:  # an HDF5 file left open for writing would refuse this open
        assert len(store) == 12


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_failing_disk_is_one_line_and_keeps_committed_work(tmp_path, manifest, monkeypatch, suffix, code) -> None:
    clean, path = tmp_path / f"clean{suffix}", tmp_path / f"s{suffix}"
    extract(manifest, clean)
    writes = {"n": 0}

    def count_feature_write() -> None:
        """The disk fills up at the fifth write of feature frames (one per committed batch)."""
        writes["n"] += 1
        if writes["n"] > 4:
            raise OSError(code, os.strerror(code))

    if suffix == ".h5":
        import h5py

        real_setitem = h5py.Dataset.__setitem__

        def setitem(self, key, value):
            if self.name == "/features":
                count_feature_write()
            return real_setitem(self, key, value)

        monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    else:
        from zarr.storage import LocalStore

        real_set = LocalStore.set

        async def set_chunk(self, key, value):
            if key.startswith("features/c/"):
                count_feature_write()
            return await real_set(self, key, value)

        monkeypatch.setattr(LocalStore, "set", set_chunk)
    with pytest.raises(StoreError) as info:
        extract(manifest, path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and os.strerror(code) in message
    assert "everything committed before is kept" in message
    monkeypatch.undo()

    with open_store(path) as kept:
        assert len(kept) == 4
    result = verify_store(path)
    assert not result.problems and len(result.missing) == 12 - len(kept)
    extract(manifest, path)
    assert verify_store(path).ok
    assert_same_features(path, clean)


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def _make_read_only(path: Path) -> None:
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        item.chmod(item.stat().st_mode & ~0o222)
    path.parent.chmod(0o555)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_read_only_store_is_read_verified_and_left_unchanged(tmp_path, manifest, suffix) -> None:
    path = tmp_path / "ro" / f"s{suffix}"
    extract(manifest, path)
    _make_read_only(path)
    try:
        before = _snapshot(path)
        store = open_store(path)
        block, entries = store.read_all()
        assert len(entries) == 12 and np.isfinite(block).all()
        assert verify_store(path).ok
        assert _snapshot(path) == before
    finally:
        (tmp_path / "ro").chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so this cannot be refused here")
def test_writing_into_a_read_only_store_is_refused_in_one_line(tmp_path, manifest) -> None:
    path = tmp_path / "ro" / "s.zarr"
    extract(manifest.subset(manifest.ids()[:6]), path)
    _make_read_only(path)
    try:
        with pytest.raises(StoreError, match=rf"{re.escape(str(path))}\b.*(Permission denied|Read-only)"):
            extract(manifest, path)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert len(open_store(path)) == 6


def test_killed_hdf5_writer_leaves_a_store_that_opens(tmp_path) -> None:
    """A writer killed between commits: the file opens for reading and for a new writer
    (1.10-format HDF5 files stay flagged "open for writing" after a kill)."""
    path = tmp_path / "s.h5"
    script = (
        "import os, signal, sys, numpy as np\n"
        "from featurestore.manifest import Manifest\n"
        "from featurestore.store import StoreWriter\n"
        "rows = Manifest([{'utt_id': f'x{i}', 'path': f'/a/x{i}.wav'} for i in range(4)])\n"
        "writer = StoreWriter(sys.argv[1], rows, {'feature': 'toy'}, 'float32', dim=3, num_layers=1, frame_rate=100.0)\n"
        "writer.write([(f'x{i}', np.full((1, 5, 3), i, np.float32)) for i in range(2)])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    store = open_store(path)
    assert store.ids() == ["x0", "x1"] and store.read("x1").tolist() == [[1.0] * 3] * 5
    store.close()
    from featurestore.store import StoreWriter

    rows = Manifest([{"utt_id": f"x{i}", "path": f"/a/x{i}.wav"} for i in range(4)])
    with StoreWriter(path, rows, {"feature": "toy"}, "float32", dim=3, num_layers=1, frame_rate=100.0) as writer:
        assert writer.pending() == ["x2", "x3"]
        writer.write([("x2", np.ones((1, 4, 3), np.float32))])
    assert len(open_store(path)) == 3 and verify_store(path).missing == ["x3"]


def ramp(first: float, count: int) -> np.ndarray:
    """``(1, count, 3)`` frames, every value different, so a misplaced frame shows."""
    return first + np.arange(count * 3, dtype=np.float32).reshape(1, count, 3)


def test_a_kill_while_entries_are_forgotten_leaves_no_entry_without_its_checksum(tmp_path, monkeypatch) -> None:
    """Forgetting clears index rows only: stopped after its first per-row write, the entry is
    gone (pending), never kept with its checksum cleared, where changed values would pass."""
    from zarr.storage import LocalStore

    path = tmp_path / "s.zarr"
    with toy_writer(path) as writer:
        writer.write([(f"x{i}", ramp(10 * i, 4)) for i in range(3)])
    _, features, _ = open_arrays(path)
    features[0, 5, 0] = -1.0  # x1 changed silently
    assert verify_store(path).bad_ids == ["x1"]
    real_set = LocalStore.set

    async def set_then_stop(self, key, value):
        await real_set(self, key, value)
        if key.startswith(("index/c", "checksum/c")):
            raise RuntimeError("process killed")

    monkeypatch.setattr(LocalStore, "set", set_then_stop)
    with toy_writer(path) as writer, pytest.raises(SermtlError):
        writer.invalidate(["x1"])
    monkeypatch.undo()
    result = verify_store(path)
    assert result.missing == ["x1"] and not result.problems
    with toy_writer(path) as writer:
        writer.write([("x1", ramp(10, 4))])
    assert verify_store(path).ok


def test_read_all_and_the_training_bank_read_around_a_repaired_chunk(tmp_path) -> None:
    """A torn chunk repaired around stays on disk unreferenced: the whole-store read (the
    in-memory training path) reads only what entries use and agrees with per-entry reads."""
    from trainer.data import FeatureBank

    path = tmp_path / "s.zarr"
    with toy_writer(path) as writer:
        for i in range(3):
            writer.write([(f"x{i}", ramp(100 * i, 4))])  # one chunk of 4 frames each
    tear(path / "features" / "c" / "0" / "1" / "0")
    with open_store(path) as store, pytest.raises(SermtlError) as info:
        store.read_all()
    message = str(info.value)
    assert "\n" not in message and str(path) in message and f"sermtl verify {path}" in message and "--repair" in message
    with toy_writer(path) as writer:  # what extract --repair does with the entry verify flags
        writer.invalidate(["x1"])
        writer.write([("x1", ramp(100, 5))])
    assert verify_store(path).ok
    with open_store(path) as store:
        assert store.entries() == {"x0": (0, 4), "x1": (12, 5), "x2": (8, 4)}
        block, entries = store.read_all()
        assert block.shape == (13, 3) and entries == {"x0": (0, 4), "x1": (8, 5), "x2": (4, 4)}
        np.testing.assert_array_equal(store.read_all(layer=0)[0], block)
        bank = FeatureBank(store)
        batch, lengths = bank.batch(store.ids())
        for row, utt_id in enumerate(store.ids()):
            offset, count = entries[utt_id]
            np.testing.assert_array_equal(block[offset : offset + count], store.read(utt_id))
            np.testing.assert_array_equal(batch[row, : lengths[row]].numpy(), store.read(utt_id))


def test_duration_mismatch_without_a_checksum_is_recomputed(tmp_path, manifest) -> None:
    """Without a checksum, a damaged index row reads like a wrong duration: repair recomputes it."""
    clean, path = tmp_path / "clean.zarr", tmp_path / "s.zarr"
    extract(manifest, clean)
    extract(manifest, path)
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    group["checksum"][3] = -1  # unknown, as in a store written before checksums existed
    group["index"][3, 1] = int(group["index"][3, 1]) - 20
    result = verify_store(path)
    assert result.bad_ids == ["u03"] and not result.duration_mismatch_ids
    assert result.problems[0].startswith("u03: ") and "expected about" in result.problems[0]
    assert extract(manifest, path, repair=True).repaired == ["u03"]
    assert verify_store(path).ok
    assert_same_features(path, clean)


def test_a_torn_checksum_chunk_discards_only_its_rows_with_a_warning(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    with toy_writer(path) as writer:
        writer.write([(f"x{i}", ramp(10 * i, 4)) for i in range(3)])
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    values = group["checksum"][:]
    del group["checksum"]  # the same rows in chunks of 2, so that one chunk can be torn
    group.create_array("checksum", shape=values.shape, dtype="int64", chunks=(2, 1), fill_value=-1, compressors=None)[
        :
    ] = values
    tear(path / "checksum" / "c" / "0" / "0")  # rows 0-1
    with pytest.warns(UserWarning, match=f"^store {path}: 2 of 3 checksums discarded"):
        toy_writer(path).close()
    with open_store(path) as store:
        assert store.checksums() == {"x2": int(values[2, 0])} and not store.problems
    assert verify_store(path).ok


def test_open_store_closes_the_store_when_it_cannot_be_read(tmp_path) -> None:
    from featurestore.store.hdf5_store import HDF5Backend

    path = tmp_path / "s.h5"
    toy_writer(path).close()
    backend = HDF5Backend.open(path, writable=True)
    manifest_text = backend.read_text("manifest")
    backend.write_text("manifest", '{"rows": [cut short')
    backend.close()
    with pytest.raises(StoreError, match=rf"\bmanifest unreadable: {re.escape(str(path))}\b") as refused:
        open_store(path)
    assert refused.value.__traceback__ is not None  # the refused open is still referenced here
    backend = HDF5Backend.open(path, writable=True)  # HDF5 refuses this while a read handle is open
    backend.write_text("manifest", manifest_text)
    backend.close()
    assert len(open_store(path)) == 0
