"""A real full disk (a small tmpfs), met while creating, opening and filling a store.

Runs only as root where ``mount -t tmpfs`` works (skipped otherwise). For each point where
the disk fills up, ``sermtl extract`` must stop with one ``error: …`` line and exit status 1
(no traceback, no signal), ``verify`` and ``info`` must still run on what is there (the
entries committed before intact), and once space is freed the same command must finish the
store, which then verifies clean. Sizes are measured, not assumed: the tmpfs is sized from
a store built on the ordinary disk first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
PAGE = 4096

pytestmark = pytest.mark.slow


def sermtl(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def message_lines(stderr: str) -> list[str]:
    """stderr without tqdm's progress lines."""
    return [line for line in re.split(r"[\r\n]+", stderr) if line.strip() and "audio s [" not in line]


def blocks(path: Path) -> int:
    """Bytes a store takes on disk (a file, or a folder of files)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """30 wavs of 2-3 s (MFCC: about 1.2 MB of frames, several chunks) and their manifest."""
    root = tmp_path_factory.mktemp("fullfs_corpus")
    rng = np.random.default_rng(0)
    lines = ["utt_id,path,emotion,speaker"]
    for i in range(30):
        seconds = 2.0 + (i % 5) * 0.2
        t = np.arange(int(seconds * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 20 * (i % 4)) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(str(root / f"u{i:02d}.wav"), wave.astype(np.float32), 16000)
        lines.append(f"u{i:02d},u{i:02d}.wav,{['angry', 'happy', 'neutral', 'sad'][i % 4]},spk{i % 3}")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root / "m.csv"


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``mount(size_bytes) -> Path``: a tmpfs of that size (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size // 1024}k", "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(point: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on ``point``."""
    info = os.statvfs(point)
    filler = point / "filler"
    size = max(0, info.f_bavail * info.f_frsize - leave) // PAGE * PAGE
    with open(filler, "wb") as out:
        if size:
            os.posix_fallocate(out.fileno(), 0, size)
    return filler


_SIZES: dict[str, tuple[int, int]] = {}


def store_sizes(corpus: Path, suffix: str, cwd: Path) -> tuple[int, int]:
    """(bytes of a store holding the first utterance only, bytes of the finished store),
    measured once per format on the ordinary disk."""
    if suffix in _SIZES:
        return _SIZES[suffix]
    one = corpus.with_name("one.csv")  # beside the corpus: its paths are relative to it
    one.write_text("\n".join(corpus.read_text().splitlines()[:2]) + "\n")
    sizes = []
    for manifest, name in ((one, "one"), (corpus, "full")):
        store = cwd / f"{name}{suffix}"
        done = sermtl(
            "extract", "--manifest", manifest, "--feature", "mfcc", "--store", store, "--max-batch", "1", cwd=cwd
        )
        assert done.returncode == 0, done.stderr
        sizes.append(blocks(store))
    _SIZES[suffix] = sizes[0], sizes[1]
    return _SIZES[suffix]


# How much is left free before the first run, from the sizes of a store of one utterance
# (``first``) and of the finished one (``full``): nothing (the lock file cannot take its pid),
# too little to create the store, fractions of what creating and opening it take, and enough
# for about half the frames (the disk fills up mid-run).
LEAVE = {
    "nothing": lambda first, full: 0,
    "8 KiB": lambda first, full: 8 * 1024,
    "1/4 of one entry's store": lambda first, full: first // 4,
    "1/2 of one entry's store": lambda first, full: first // 2,
    "3/4 of one entry's store": lambda first, full: first * 3 // 4,
    "mid-run": lambda first, full: first + (full - first) // 2,
}


#: Every fill level for HDF5 (whose library must never meet the full disk itself); for Zarr,
#: whose writes are plain files, the lock and the mid-run cases.
CASES = [(leave, ".h5") for leave in LEAVE] + [("nothing", ".zarr"), ("mid-run", ".zarr")]


@pytest.mark.parametrize("leave, suffix", CASES)
def test_a_full_disk_is_one_line_and_the_store_resumes_once_space_is_freed(corpus, tmpfs, tmp_path, leave, suffix):
    first, full = store_sizes(corpus, suffix, tmp_path)
    point = tmpfs(full + 2 * 1024 * 1024)
    filler = fill(point, LEAVE[leave](first, full))
    store = point / f"s{suffix}"
    extract = ("extract", "--manifest", corpus, "--feature", "mfcc", "--store", store, "--max-batch", "1")

    first = sermtl(*extract, cwd=tmp_path)
    lines = message_lines(first.stderr)
    assert first.returncode == 1, (first.returncode, first.stderr[-3000:])  # not a signal (-11), not a traceback
    assert len(lines) == 1 and lines[0].startswith("error: ") and "No space left on device" in lines[0], lines

    committed = 0
    if store.exists():  # verify and info still run on what is there
        checked = sermtl("verify", store, cwd=tmp_path)
        assert checked.returncode in (0, 1) and "Traceback" not in checked.stderr, checked.stderr
        match = re.search(r"(\d+) entries checked, 0 problem\(s\), (\d+) missing", checked.stdout)
        assert match, checked.stdout[-2000:]
        committed = int(match.group(1))
        assert committed + int(match.group(2)) == 30
        described = sermtl("info", store, cwd=tmp_path)
        assert described.returncode == 0, described.stderr
    if leave == "mid-run":
        assert committed > 0  # the disk filled after some commits, and they were kept

    filler.unlink()
    second = sermtl(*extract, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{30 - committed} stored, {committed} already there" in second.stdout, second.stdout
    final = sermtl("verify", store, cwd=tmp_path)
    assert final.returncode == 0 and "30 entries checked, 0 problem(s), 0 missing" in final.stdout, final.stdout
