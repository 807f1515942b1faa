"""Real processes: ``kill -9`` of ``sermtl extract`` and ``sermtl cv`` at several points, then
resume; reader processes while a writer writes; a second writer refused; a killed writer's lock.

Kill points are reached by pausing the process (SIGSTOP) every few milliseconds and
looking at what it has committed; the SIGKILL then lands wherever the process was paused,
mid-write included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from featurestore import open_store
from featurestore.errors import SermtlError
from featurestore.synthetic import make_iemocap
from featurestore.verify import verify_store

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY_CV = [
    "--protocol",
    "kfold",
    "--folds",
    "3",
    "--epochs",
    "2",
    "--channels",
    "8",
    "--embedding-dim",
    "8",
    "--batch-size",
    "16",
    "--aux",
    "none",
    "--device",
    "cpu",
]

READER = """
import json, sys, numpy as np
from featurestore import open_store
from featurestore.errors import SermtlError
path, reference, total = sys.argv[1], open_store(sys.argv[2]), int(sys.argv[3])
seen = []
while not seen or seen[-1] < total:
    try:
        store = open_store(path)
    except SermtlError as exc:
        assert "store not found" in str(exc), str(exc)  # a store appears whole, never half-made
        continue
    for utt_id in store.ids():
        feats = store.read(utt_id)
        assert feats.shape == reference.read(utt_id).shape and np.isfinite(feats).all(), utt_id
        assert np.array_equal(feats, reference.read(utt_id)), utt_id
    seen.append(len(store))
    store.close()
print(json.dumps(seen))
"""


def sermtl(*args: object, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "cli.py"), *map(str, args)],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


def kill_when(proc: subprocess.Popen, reached: Callable[[], bool], step: float = 0.01) -> None:
    """Pause ``proc`` every ``step`` s; SIGKILL it, still paused, once ``reached()``."""
    while proc.poll() is None:
        time.sleep(step)
        os.kill(proc.pid, signal.SIGSTOP)
        if reached():
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            return
        os.kill(proc.pid, signal.SIGCONT)
    raise AssertionError(f"the process ended (rc {proc.returncode}) before the kill point")


def committed(path: Path) -> int:
    """Utterances a reader sees in the store (-1 while it does not exist)."""
    try:
        with open_store(path) as store:
            return len(store)
    except SermtlError:
        return -1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """A generated IEMOCAP (32 utterances), its manifest and an uninterrupted one-by-one MFCC store."""
    root = tmp_path_factory.mktemp("reliability")
    make_iemocap(root / "iemocap", sessions=2, utts_per_dialog=10, quirks=False)
    finish(sermtl("prepare", "--corpus", "iemocap", "--root", root / "iemocap", "--out", root / "m.csv", cwd=root))
    finish(
        sermtl(
            "extract",
            "--manifest",
            root / "m.csv",
            "--feature",
            "mfcc",
            "--store",
            root / "clean.zarr",
            "--max-batch",
            "1",
            cwd=root,
        )
    )
    return {"root": root, "manifest": root / "m.csv", "clean": root / "clean.zarr"}


def test_extract_killed_at_several_points_resumes_to_the_clean_store(corpus, tmp_path) -> None:
    path, clean = tmp_path / "s.zarr", open_store(corpus["clean"])
    total = len(clean)
    args = ("extract", "--manifest", corpus["manifest"], "--feature", "mfcc", "--store", path, "--max-batch", "1")
    lock = path.with_name(path.name + ".lock")
    points = [lambda: lock.exists(), lambda: committed(path) >= 5, lambda: committed(path) >= 18]
    seen = []
    for reached in points:
        kill_when(sermtl(*args, cwd=tmp_path), reached)
        seen.append(committed(path))
        if seen[-1] >= 0:
            result = verify_store(path)  # a killed run leaves only missing entries, never wrong ones
            assert not result.problems and len(result.missing) == total - seen[-1]
    assert seen[-1] < total and seen == sorted(seen) and len(set(seen)) == 3
    out = finish(sermtl(*args, cwd=tmp_path))  # the killed writers' locks are gone with them
    assert f"{total - seen[-1]} stored, {seen[-1]} already there" in out
    assert verify_store(path).ok
    store = open_store(path)
    assert store.ids() == clean.ids() and len(store.entries()) == total
    starts = sorted(offset for offset, _ in store.entries().values())
    assert len(set(starts)) == total  # every utterance exactly once
    for utt_id in clean.ids():
        np.testing.assert_array_equal(store.read(utt_id), clean.read(utt_id))


def test_cv_killed_mid_run_keeps_finished_folds_and_redoes_the_rest(corpus, tmp_path) -> None:
    store = corpus["clean"]
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    uninterrupted = sermtl("cv", "--store", store, "--out", reference, *TINY_CV, cwd=tmp_path)
    kill_when(
        sermtl("cv", "--store", store, "--out", run_dir, *TINY_CV, cwd=tmp_path),
        lambda: (run_dir / "fold_1" / "metrics.json").exists(),
    )
    finish(uninterrupted)
    assert not (run_dir / "fold_2" / "metrics.json").exists() and not (run_dir / "results.json").exists()
    fold_1 = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (run_dir / "fold_1").iterdir()}
    finish(sermtl("cv", "--store", store, "--out", run_dir, *TINY_CV, cwd=tmp_path))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (run_dir / "fold_1").iterdir()} == fold_1
    assert not list(run_dir.rglob("*.tmp"))
    for fold in (1, 2, 3):  # the redone folds score exactly like an uninterrupted run
        assert json.loads((run_dir / f"fold_{fold}" / "metrics.json").read_text()) == json.loads(
            (reference / f"fold_{fold}" / "metrics.json").read_text()
        )
    results = json.loads((run_dir / "results.json").read_text())
    assert [f["fold"] for f in results["folds"]] == [1, 2, 3]


def test_readers_see_whole_utterances_while_one_writer_writes(corpus, tmp_path) -> None:
    path, total = tmp_path / "s.zarr", len(open_store(corpus["clean"]))
    args = ("extract", "--manifest", corpus["manifest"], "--feature", "mfcc", "--store", path, "--max-batch", "1")
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(path), str(corpus["clean"]), str(total)],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    writer = sermtl(*args, cwd=tmp_path)
    while committed(path) < 3:
        assert writer.poll() is None, writer.communicate()
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGSTOP)  # hold the writer (and its lock) mid-run
    try:
        second = subprocess.run(
            [sys.executable, str(REPO / "cli.py"), *map(str, args)],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert (
            second.stderr.strip()
            .splitlines()[-1]
            .startswith(f"error: store {path} is being written by another process (pid {writer.pid})")
        )
        time.sleep(0.5)  # the readers keep reading the paused, half-written store
    finally:
        os.kill(writer.pid, signal.SIGCONT)
    finish(writer)
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        seen = json.loads(out)
        assert seen == sorted(seen) and seen[-1] == total
        assert any(0 < n < total for n in seen)  # it did read the store while it was being written
    assert verify_store(path).ok


def test_many_readers_on_a_finished_hdf5_store(corpus, tmp_path) -> None:
    from featurestore.manifest import Manifest
    from featurestore.store import StoreWriter

    path, clean = tmp_path / "s.h5", open_store(corpus["clean"])
    attrs = clean.attrs
    rows = Manifest(clean.manifest.to_records())
    with StoreWriter(
        path, rows, attrs["feature"], attrs["dtype"], dim=clean.dim, num_layers=1, frame_rate=attrs["frame_rate"]
    ) as writer:
        writer.write([(u, clean.read(u)[None]) for u in clean.ids()])
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(path), str(corpus["clean"]), str(len(clean))],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0 and json.loads(out) == [len(clean)], err
