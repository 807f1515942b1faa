"""The writer lock of stores and run directories: never written through a link, never
truncated, one holder at a time; and a ``.partial`` store that sermtl did not make is
refused, not deleted."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from featurestore.errors import StoreError
from featurestore.locking import ExclusiveLock
from featurestore.manifest import Manifest
from featurestore.store.writer import StoreWriter


def test_one_holder_at_a_time_and_the_holder_is_named(tmp_path) -> None:
    path = tmp_path / "x.zarr.lock"
    with ExclusiveLock(path, "store x"):
        with pytest.raises(StoreError, match=rf"^store x .*another process \(pid {os.getpid()}\)"):
            ExclusiveLock(path, "store x")
    ExclusiveLock(path, "store x").release()  # free again


def test_a_held_lock_refuses_another_process(tmp_path) -> None:
    path = tmp_path / "run.lock"
    code = (
        "import sys; from featurestore.locking import ExclusiveLock; from featurestore.errors import SermtlError\n"
        f"try: ExclusiveLock({str(path)!r}, 'run')\nexcept SermtlError as e: print(e); sys.exit(3)"
    )
    with ExclusiveLock(path, "run"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert done.returncode == 3 and "another process" in done.stdout


@pytest.mark.parametrize("link, message", [(os.symlink, "symbolic link"), (os.link, "a link or a special file")])
def test_a_link_at_the_lock_name_is_refused_and_its_target_untouched(tmp_path, link, message) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    link(notes, tmp_path / "x.lock")
    with pytest.raises(StoreError, match=rf"^{re.escape(str(tmp_path / 'x.lock'))} .*{re.escape(message)}"):
        ExclusiveLock(tmp_path / "x.lock", "store x")
    assert notes.read_text() == "precious"


def test_a_dangling_symlink_is_refused_and_nothing_is_created(tmp_path) -> None:
    os.symlink(tmp_path / "would-be-created", tmp_path / "x.lock")
    with pytest.raises(StoreError, match=rf"^{re.escape(str(tmp_path / 'x.lock'))} .*symbolic link"):
        ExclusiveLock(tmp_path / "x.lock", "store x")
    assert not (tmp_path / "would-be-created").exists()


def test_a_file_with_other_data_is_refused_and_left_as_it_was(tmp_path) -> None:
    path = tmp_path / "x.lock"
    path.write_text("my own notes that happen to have this name\n")
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))} .*holds other data"):
        ExclusiveLock(path, "store x")
    assert path.read_text() == "my own notes that happen to have this name\n"


def test_the_lock_file_is_reused_never_truncated(tmp_path) -> None:
    path = tmp_path / "x.lock"
    ExclusiveLock(path, "x").release()
    first = path.read_bytes()
    assert first.strip() == str(os.getpid()).encode() and len(first) == 16
    ExclusiveLock(path, "x").release()
    assert path.read_bytes() == first


def _manifest(tmp_path) -> Manifest:
    return Manifest([{"utt_id": "a", "path": str(tmp_path / "a.wav"), "emotion": "sad", "speaker": "s"}])


def _writer(path, tmp_path) -> StoreWriter:
    return StoreWriter(path, _manifest(tmp_path), {"feature": "test"}, "float32", dim=4, num_layers=1, frame_rate=100.0)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_partial_store_of_the_users_is_refused_untouched(tmp_path, suffix) -> None:
    partial = tmp_path / f"s{suffix}.partial"
    partial.mkdir()
    (partial / "mine.txt").write_text("keep")
    with pytest.raises(StoreError, match=rf"^{re.escape(str(partial))} .*not made by sermtl"):
        _writer(tmp_path / f"s{suffix}", tmp_path)
    assert (partial / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_partial_store_left_by_a_killed_writer_is_cleared(tmp_path, suffix) -> None:
    partial = tmp_path / f"s{suffix}.partial"
    (partial.mkdir() if suffix == ".zarr" else partial.write_bytes(b"half an hdf5 file"))
    (tmp_path / f"s{suffix}.partial.sermtl").touch()  # the marker sermtl makes before the partial store
    _writer(tmp_path / f"s{suffix}", tmp_path).close()
    assert (tmp_path / f"s{suffix}").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"s{suffix}", f"s{suffix}.lock"]


def test_reading_a_store_needs_no_posix_only_module(iemocap_mfcc_store) -> None:
    """``fcntl`` exists on POSIX only: reading a store must not import it (only a writer locks)."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "from featurestore import open_store\n"
        f"store = open_store({str(iemocap_mfcc_store)!r}); print(len(store), store.read(store.ids()[0]).shape)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("60 "), done.stderr
