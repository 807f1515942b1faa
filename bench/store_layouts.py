"""Compare two store layouts in both backends, side by side in one run.

- ``concatenated``: the shipped layout: one ``(layers, total_frames, dim)`` array, chunked
  along frames, plus an ``(offset, frames)`` index (``featurestore.store``);
- ``per-utterance``: one array (Zarr) or dataset (HDF5) per utterance, the layout of
  caches keyed by utterance (written here only for the comparison).

Measured: write time, random-order reads of every utterance (utterances/s and MB/s; the
fastest of three passes),
loading everything at once, size on disk and file count. Lengths follow IEMOCAP's
(mean ≈ 4.5 s, up to 34 s at 50 frames/s).

    python bench/store_layouts.py --utts 600 --dim 1024
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import iemocap_like_frames, random_manifest, write_features  # noqa: E402


def random_features(count: int, dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` float16 arrays ``(frames, dim)`` with IEMOCAP's lengths at 50 frames/s, keyed ``uttNNNNN``."""
    return {
        f"utt{i:05d}": rng.standard_normal((n, dim)).astype(np.float16)
        for i, n in enumerate(iemocap_like_frames(count, rng))
    }


def write_concatenated(path: Path, data: dict[str, np.ndarray]) -> None:
    """The shipped layout, through :class:`featurestore.store.StoreWriter`."""
    frames = np.array([array.shape[0] for array in data.values()])
    write_features(path, random_manifest(frames), data.items(), dim=next(iter(data.values())).shape[-1])


def write_per_utterance(path: Path, data: dict[str, np.ndarray]) -> None:
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "w") as handle:
            for utt_id, array in data.items():
                handle.create_dataset(utt_id, data=array)
    else:
        import zarr

        group = zarr.open_group(str(path), mode="w")
        for utt_id, array in data.items():
            group.create_array(utt_id, data=array, chunks=array.shape, compressors=None)


def open_reader(layout: str, path: Path):
    """A ``read(utt_id)`` function and a ``load_all()`` function for one layout."""
    if layout == "concatenated":
        from featurestore import open_store

        store = open_store(path)
        return store.read, lambda: store.read_all()[0]
    if path.suffix == ".h5":
        import h5py

        handle = h5py.File(path, "r")
        return (lambda u: handle[u][()]), (lambda: [handle[u][()] for u in handle])
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return (lambda u: group[u][:]), (lambda: [group[u][:] for u in group])


def measure(
    layout: str, suffix: str, data: dict[str, np.ndarray], workdir: Path, rng: np.random.Generator, passes: int = 3
) -> dict:
    """Write ``data`` in one layout, then time reads: random order (the fastest of ``passes``
    passes, each in a new order, so a busy machine disturbs the figure less) and all at once."""
    path = workdir / f"{layout}{suffix}"
    start = time.perf_counter()
    (write_concatenated if layout == "concatenated" else write_per_utterance)(path, data)
    write_s = time.perf_counter() - start
    read, load_all = open_reader(layout, path)
    order = list(data)
    read_s = float("inf")
    for _ in range(passes):
        rng.shuffle(order)
        start = time.perf_counter()
        nbytes = sum(read(u).nbytes for u in order)
        read_s = min(read_s, time.perf_counter() - start)
    start = time.perf_counter()
    load_all()
    load_s = time.perf_counter() - start
    files = 1 if path.is_file() else sum(1 for p in path.rglob("*") if p.is_file())
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {
        "layout": layout,
        "backend": "hdf5" if suffix == ".h5" else "zarr",
        "write_s": round(write_s, 3),
        "random_read_utts_per_s": round(len(order) / read_s, 1),
        "random_read_MB_per_s": round(nbytes / read_s / 1e6, 1),
        "load_all_s": round(load_s, 3),
        "size_MB": round(size / 1e6, 1),
        "files": files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utts", type=int, default=600)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = random_features(args.utts, args.dim, rng)
    workdir = Path(tempfile.mkdtemp(prefix="sermtl-layouts-"))
    try:
        rows = [
            measure(layout, suffix, data, workdir, rng)
            for layout in ("concatenated", "per-utterance")
            for suffix in (".zarr", ".h5")
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"utts": args.utts, "dim": args.dim, "total_frames": int(sum(a.shape[0] for a in data.values()))}))


if __name__ == "__main__":
    main()
