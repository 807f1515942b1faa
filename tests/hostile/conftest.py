"""What the hostile cases start from: a small corpus, MFCC stores in both formats, a
trained run with its checkpoint (built once), and a per-case workspace of fresh copies."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.cli.test_cli import run
from tests.conftest import write_manifest, write_tone

EMOTIONS = ("angry", "happy", "neutral", "sad")


def corpus_rows(root: Path, count: int = 18, speakers: int = 3) -> list[dict[str, str]]:
    """``count`` tones of 0.5-1.5 s in ``root``, four emotions, two expressions."""
    rows = []
    for i in range(count):
        path = write_tone(root / f"u{i:02d}.wav", 0.5 + (i % 6) * 0.2, freq=150 + 40 * (i % 4), seed=i)
        rows.append(
            {
                "utt_id": f"u{i:02d}",
                "path": str(path),
                "emotion": EMOTIONS[i % 4],
                "speaker": f"spk{i % speakers}",
                "expression": "acted" if i % 2 else "spontaneous",
            }
        )
    return rows


#: The training flags of every case that trains: tiny and fast, on three speaker folds.
TRAIN = (
    "--protocol",
    "group-kfold",
    "--by",
    "speaker",
    "--folds",
    "3",
    "--epochs",
    "1",
    "--channels",
    "8",
    "--embedding-dim",
    "8",
    "--batch-size",
    "4",
    "--device",
    "cpu",
)


@pytest.fixture(scope="session")
def base(tmp_path_factory, iemocap_mfcc_store) -> dict[str, Path]:
    """The corpus, its manifest, a Zarr and an HDF5 MFCC store, a finished cv run, and the
    shared generated IEMOCAP MFCC store."""
    root = tmp_path_factory.mktemp("hostile_base")
    rows = corpus_rows(root / "audio")
    manifest = write_manifest(root / "manifest.csv", rows)
    run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", root / "s.zarr")
    run("extract", "--manifest", manifest, "--feature", "mfcc", "--store", root / "s.h5")
    run("cv", "--store", root / "s.zarr", *TRAIN, "--out", root / "run")
    return {
        "root": root,
        "manifest": manifest,
        "zarr": root / "s.zarr",
        "hdf5": root / "s.h5",
        "run": root / "run",
        "iemocap": iemocap_mfcc_store,
    }


class Workspace:
    """Fresh copies of the base things for one case, made on first use."""

    def __init__(self, base: dict[str, Path], tmp: Path) -> None:
        self.base, self.tmp = base, tmp
        self.made: dict[str, Path] = {}
        self.lock = None  # a lock a case holds while its command runs (released by the harness)

    def _copy(self, key: str, name: str) -> Path:
        if key not in self.made:
            source, target = self.base[key], self.tmp / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
            self.made[key] = target
        return self.made[key]

    @property
    def zarr(self) -> Path:
        return self._copy("zarr", "s.zarr")

    @property
    def hdf5(self) -> Path:
        return self._copy("hdf5", "s.h5")

    @property
    def run(self) -> Path:
        return self._copy("run", "run")

    @property
    def manifest(self) -> Path:
        return self.base["manifest"]

    @property
    def checkpoint(self) -> Path:
        return self.run / "fold_1" / "checkpoint.pt"

    def rows(self) -> list[dict[str, str]]:
        with open(self.manifest, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def manifest_with(self, *extra: dict[str, str], name: str = "m.csv") -> Path:
        """The base manifest plus ``extra`` rows (``utt_id`` and ``path`` given; the rest filled)."""
        rows = self.rows() + [{"emotion": "sad", "speaker": "spk9", "expression": "acted", **row} for row in extra]
        return write_manifest(self.tmp / name, rows)

    def victim(self, name: str = "notes.txt") -> Path:
        """A file of the user's that nothing may write to."""
        path = self.tmp / name
        path.write_text("precious notes\n")
        return path


@pytest.fixture
def ws(base, tmp_path) -> Workspace:
    return Workspace(base, tmp_path)
