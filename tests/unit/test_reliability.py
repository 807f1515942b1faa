"""Reliability of a store in one process: verify finds damaged entries, repair recomputes only
those, a failing disk or a read-only store loses nothing, a killed HDF5 writer leaves no stuck file."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store
from featurestore.audio import audio_duration
from featurestore.errors import SermtlError
from featurestore.features.mfcc import MFCCExtractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store
from featurestore.verify import verify_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def manifest(csv_corpus: Path) -> Manifest:
    rows = Manifest.read_csv(csv_corpus).to_records()
    for row in rows:
        row["duration"] = audio_duration(row["path"])
    return Manifest(rows)


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
    with pytest.raises(SermtlError) as info:
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
        with pytest.raises(SermtlError, match=r"cannot .*store .*s\.zarr.*(Permission denied|Read-only)"):
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
