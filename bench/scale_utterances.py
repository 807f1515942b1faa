"""Scale to 100 000 utterances: extract, resume, verify and open a training bank at 10^3, 10^4, 10^5.

    python bench/scale_utterances.py                 # 10^3, 10^4, 10^5 utterances, Zarr and HDF5
    python bench/scale_utterances.py --quick         # 50 and 150 utterances: seconds (CI)
    python bench/scale_utterances.py --sizes 1000 100000 --backends zarr --workdir /tmp/s --json s.json

A synthetic corpus of short utterances (1-3 s, uniform; one 16 kHz 16-bit mono wav each,
in folders of 1000) is written once at the largest size; each size's manifest (a CSV, as
``sermtl prepare`` writes it) is its first N rows. For each size and backend, four stages
run one after another on the same store, each in a fresh process:

- ``extract``: read the manifest, :func:`featurestore.pipeline.extract_to_store` with MFCC
  (40-d float32, the CLI's defaults: 600 s batches, 2 decoding threads) into a new store;
- ``resume``: the same command again, with nothing left to do (every stored entry's audio
  file is checked against its signature; the manifest is merged);
- ``verify``: :func:`featurestore.verify.verify_store` (every entry's values, checksums
  and audio file);
- ``bank``: :func:`featurestore.store.open_store` and :func:`trainer.data.open_bank` (in
  memory when 60 % of the free RAM holds the frames, else streaming: ``streaming`` says which).

Each stage process is forked from a forkserver that has only imported the libraries (so
every stage starts alike, without the interpreter's start and imports, about 2 s), and
resets its peak resident set (``/proc/self/clear_refs``) before it begins: ``peak_mib``
is ``VmHWM`` read from ``/proc/self/status`` at its end, ``start_mib`` the resident set it
started with (the imported libraries). Times are wall-clock seconds of the stage's work,
reading the manifest included.

The last stdout line is one JSON object: per stage and backend, the time per utterance at
the largest size over the smallest (target ≤ 1.2; wall clock, and CPU time, which other
work on a shared machine moves less: each stage also records the machine's load), the peak memory's growth from the
smallest to the largest size (target < 300 MiB for extract, resume and verify; the bank
holds the frames themselves, so its growth is compared with their size), and the no-op
resume's seconds at the largest size (target < 60 s).

The full run writes ~6 GB of wav (10^5 × 2 s × 32 kB/s) plus ~3.2 GB per store at 10^5
(stores are deleted once measured); everything is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import shutil
import struct
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SAMPLE_RATE = 16000
#: Shortest and longest utterance, seconds.
SECONDS = (1.0, 3.0)
#: Distinct synthesised voices the utterances are cut from (each file is scaled differently).
VOICES = 64
SIZES = {"full": (1000, 10_000, 100_000), "quick": (50, 150)}
BACKENDS = {"zarr": ".zarr", "hdf5": ".h5"}
STAGES = ("extract", "resume", "verify", "bank")
#: Stages whose time per utterance and memory should not grow with the corpus.
TARGETED = ("extract", "resume", "verify")
TIME_RATIO_TARGET = 1.2
MEMORY_GROWTH_TARGET_MIB = 300.0
RESUME_TARGET_S = 60.0
#: Modules the forkserver imports once, so that no stage pays for them.
PRELOAD = [
    "torch",
    "zarr",
    "h5py",
    "featurestore.pipeline",
    "featurestore.features.mfcc",
    "featurestore.verify",
    "trainer.data",
    "bench.scale_utterances",
]


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wav_bytes(samples: np.ndarray) -> bytes:
    """A 16 kHz mono 16-bit PCM WAV file holding ``samples`` (int16, ``(n,)``)."""
    data = samples.astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        SAMPLE_RATE,
        2 * SAMPLE_RATE,
        2,
        16,
        b"data",
        len(data),
    )
    return header + data


def make_corpus(root: Path, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Write ``count`` wavs of 1-3 s under ``root`` (folders of 1000) and return their manifest rows.

    Each file is a stretch of one of :data:`VOICES` synthesised voices
    (:func:`featurestore.synthetic.synth_utterance`, with the labels that
    :func:`bench.common.corpus_row` gives its row: :data:`VOICES` is a multiple of 8) at its
    own level, written as raw RIFF bytes: libsndfile's writer costs ~4 ms
    a file, which would make 10^5 files take minutes.
    """
    from bench.common import EMOTIONS, corpus_row
    from featurestore.synthetic import synth_utterance

    voices = [
        np.round(
            32767 * synth_utterance(EMOTIONS[v % 4], ("acted", "spontaneous")[(v // 4) % 2], SECONDS[1], SAMPLE_RATE, v)
        ).astype(np.int16)
        for v in range(VOICES)
    ]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(SECONDS[0] * SAMPLE_RATE), int(SECONDS[1] * SAMPLE_RATE) + 1, size=count)
    levels = rng.uniform(0.3, 1.0, size=count)
    rows = []
    for i, (length, level) in enumerate(zip(lengths.tolist(), levels.tolist())):
        folder = root / f"{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"u{i:06d}.wav"
        voice = voices[i % VOICES]
        path.write_bytes(wav_bytes((voice[:length] * level).astype(np.int16)))
        rows.append(corpus_row(i, f"u{i:06d}", str(path), length / SAMPLE_RATE))
    return rows


# -- the stages, each run in its own process --------------------------------------------------


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Make ``VmHWM`` this process's resident set now (a forked process starts with its parent's)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def run_stage(stage: str, manifest_csv: str, store: str, threads: int) -> dict[str, Any]:
    """One stage (:data:`STAGES`) on ``store``: seconds, peak memory and what it found.

    Parameters
    ----------
    stage : str
        ``extract``, ``resume``, ``verify`` or ``bank``.
    manifest_csv : str
        The size's manifest.
    store : str
        The store (made by ``extract``).
    threads : int
        torch threads.

    Returns
    -------
    dict[str, Any]
        ``s`` (the stage's work, wall clock), ``cpu_s`` (its CPU time, all threads: less
        moved by other work on the machine), ``load_s`` (reading the manifest or opening
        the store), ``load_avg_1min`` (the higher of the machine's load at the start and
        the end), ``start_mib``, ``peak_mib`` and the stage's own counts.
    """
    import torch

    torch.set_num_threads(threads)
    _reset_peak()
    start_mib = _status_mib("VmRSS")
    load = os.getloadavg()[0]
    cpu = time.process_time()
    started = time.perf_counter()
    out: dict[str, Any] = {"stage": stage}
    if stage in ("extract", "resume"):
        from featurestore.features.mfcc import MFCCExtractor
        from featurestore.manifest import Manifest
        from featurestore.pipeline import extract_to_store

        manifest = Manifest.read_csv(manifest_csv)
        out["load_s"] = time.perf_counter() - started
        mfcc = MFCCExtractor(device="cpu")
        report = extract_to_store(
            manifest, mfcc, store, dtype=mfcc.default_dtype, batch_seconds=mfcc.default_batch_seconds, progress=False
        )
        out.update(stored=report.stored, already_done=report.already_done, skipped=len(report.skipped))
        if report.skipped or (stage == "resume" and report.stored):
            raise RuntimeError(f"{stage}: unexpected report {report}")
    elif stage == "verify":
        from featurestore.verify import verify_store

        result = verify_store(store)
        out.update(ok=result.ok, checked=result.checked)
        if not result.ok:
            raise RuntimeError(f"verify found problems: {result.problems[:3]} missing {result.missing[:3]}")
    elif stage == "bank":
        from featurestore.store import open_store
        from trainer.data import open_bank

        with open_store(store) as opened:
            out["load_s"] = time.perf_counter() - started
            bank = open_bank(opened)
            out.update(
                streaming=bank.streaming,
                entries=len(bank.entries),
                frames_mib=round(opened.committed_frames * opened.dim * opened.dtype.itemsize / 2**20, 1),
            )
            del bank
    else:
        raise ValueError(f"unknown stage {stage!r}")
    out["s"] = time.perf_counter() - started
    out["cpu_s"] = time.process_time() - cpu
    out["load_avg_1min"] = round(max(load, os.getloadavg()[0]), 2)
    out["start_mib"] = start_mib
    out["peak_mib"] = _status_mib("VmHWM")
    return out


class StageRunner:
    """Runs each stage in a fresh process forked from one forkserver that imported
    :data:`PRELOAD` (on Linux; elsewhere a spawned process per stage)."""

    def __init__(self) -> None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            self.context.set_forkserver_preload(PRELOAD)
            self._start_forkserver()

    @staticmethod
    def _start_forkserver() -> None:
        """Start the forkserver with this checkout first on its ``PYTHONPATH``: it imports
        :data:`PRELOAD` before it sees this process's ``sys.path`` (Python 3.11 ignores it
        there), and the modules measured must be this checkout's, not an installed copy's."""
        from multiprocessing import forkserver

        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), before]))
        try:
            forkserver.ensure_running()
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before

    def __call__(self, stage: str, manifest_csv: Path, store: Path, threads: int) -> dict[str, Any]:
        stage_function = importlib.import_module("bench.scale_utterances").run_stage  # by module name, not __main__
        with ProcessPoolExecutor(max_workers=1, mp_context=self.context) as pool:
            return pool.submit(stage_function, stage, str(manifest_csv), str(store), threads).result()


# -- the run -------------------------------------------------------------------------------------


def run(
    sizes: tuple[int, ...], backends: tuple[str, ...], workdir: Path, threads: int = 1, keep: bool = False
) -> dict[str, Any]:
    """Every stage at every size and backend under ``workdir``; ``{"corpus", "rows"}``."""
    from bench.common import fresh_store, machine_info
    from featurestore.manifest import Manifest

    runner = StageRunner()
    sizes = tuple(sorted(sizes))
    log(f"corpus: {sizes[-1]} utterances of {SECONDS[0]:g}-{SECONDS[1]:g} s under {workdir}")
    started = time.perf_counter()
    rows = make_corpus(workdir / "corpus", sizes[-1])
    corpus = {
        "utterances": len(rows),
        "audio_h": round(sum(r["duration"] for r in rows) / 3600, 2),
        "generate_s": round(time.perf_counter() - started, 1),
    }
    manifests = {}
    for size in sizes:
        started = time.perf_counter()
        manifests[size] = Manifest(rows[:size], source=f"scale corpus x{size}").write_csv(
            workdir / f"manifest_{size}.csv"
        )
        corpus[f"manifest_{size}_s"] = round(time.perf_counter() - started, 2)
    del rows
    results: dict[str, Any] = {"machine": machine_info(), "threads": threads, "corpus": corpus, "rows": []}
    print(json.dumps({"corpus": corpus}), flush=True)
    for size in sizes:
        for backend in backends:
            store = fresh_store(workdir / f"store_{size}{BACKENDS[backend]}")
            row: dict[str, Any] = {"utterances": size, "backend": backend}
            for stage in STAGES:
                log(f"{size} utterances, {backend}: {stage}")
                figures = runner(stage, manifests[size], store, threads)
                row[stage] = {
                    **{k: v for k, v in figures.items() if k != "stage"},
                    "s": round(figures["s"], 3),
                    "cpu_s": round(figures["cpu_s"], 3),
                    "us_per_utt": round(figures["s"] / size * 1e6, 1),
                    "cpu_us_per_utt": round(figures["cpu_s"] / size * 1e6, 1),
                    **({"load_s": round(figures["load_s"], 3)} if "load_s" in figures else {}),
                }
            row["store_mib"] = round(_size_on_disk(store) / 2**20, 1)
            if not keep:
                fresh_store(store)
            results["rows"].append(row)
            print(json.dumps({"row": row}), flush=True)
    return results


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def summary(results: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """The figures and targets of a run (the last stdout line)."""
    out: dict[str, Any] = {"sizes": sorted({r["utterances"] for r in results["rows"]}), "threads": results["threads"]}
    met = {"time": True, "cpu": True, "memory": True, "resume": True}
    for backend in sorted({r["backend"] for r in results["rows"]}):
        rows = sorted((r for r in results["rows"] if r["backend"] == backend), key=lambda r: r["utterances"])
        first, last = rows[0], rows[-1]
        for stage in STAGES:
            out[f"{stage}_{backend}_s"] = [r[stage]["s"] for r in rows]
            out[f"{stage}_{backend}_us_per_utt"] = [r[stage]["us_per_utt"] for r in rows]
            out[f"{stage}_{backend}_peak_mib"] = [r[stage]["peak_mib"] for r in rows]
            ratio = round(last[stage]["us_per_utt"] / first[stage]["us_per_utt"], 2)
            out[f"{stage}_{backend}_time_per_utt_ratio"] = ratio
            out[f"{stage}_{backend}_cpu_per_utt_ratio"] = round(
                last[stage]["cpu_us_per_utt"] / max(first[stage]["cpu_us_per_utt"], 1e-9), 2
            )
            out[f"{stage}_{backend}_load_avg"] = [r[stage]["load_avg_1min"] for r in rows]
            peaks = (first[stage]["peak_mib"], last[stage]["peak_mib"])
            growth = round(peaks[1] - peaks[0], 1) if None not in peaks else None
            out[f"{stage}_{backend}_peak_growth_mib"] = growth
            if stage in TARGETED:
                met["time"] &= ratio <= TIME_RATIO_TARGET
                met["cpu"] &= out[f"{stage}_{backend}_cpu_per_utt_ratio"] <= TIME_RATIO_TARGET
                met["memory"] &= growth is not None and growth < MEMORY_GROWTH_TARGET_MIB
        out[f"bank_{backend}_frames_mib"] = [r["bank"]["frames_mib"] for r in rows]
        out[f"bank_{backend}_streaming"] = [r["bank"]["streaming"] for r in rows]
        out[f"resume_{backend}_s_at_largest"] = last["resume"]["s"]
        met["resume"] &= last["resume"]["s"] < RESUME_TARGET_S
    out.update(
        {
            f"target_time_per_utt_within_{TIME_RATIO_TARGET}x": met["time"],
            f"target_cpu_time_per_utt_within_{TIME_RATIO_TARGET}x": met["cpu"],
            f"target_memory_growth_under_{MEMORY_GROWTH_TARGET_MIB:g}_mib": met["memory"],
            f"target_resume_under_{RESUME_TARGET_S:g}_s": met["resume"],
            "corpus": results["corpus"],
            "machine": results["machine"],
            "elapsed_s": round(elapsed, 1),
        }
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {SIZES['quick']}: seconds (CI)")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"utterance counts (default {SIZES['full']})")
    parser.add_argument("--backends", nargs="+", choices=tuple(BACKENDS), default=tuple(BACKENDS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each stage (default 1)")
    parser.add_argument("--workdir", type=Path, help="corpus and stores go here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and stores")
    parser.add_argument("--json", type=Path, help="also write every row's figures to this file")
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes or SIZES["quick" if args.quick else "full"])
    if len(sizes) < 2 or min(sizes) < 1:
        parser.error("--sizes needs at least two positive counts")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sermtl-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        results = run(sizes, tuple(args.backends), workdir, args.threads, args.keep)
    finally:
        if not args.keep:
            shutil.rmtree(workdir / "corpus", ignore_errors=True)
            for leftover in workdir.glob("manifest_*.csv"):
                leftover.unlink()
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    out = summary(results, time.perf_counter() - started)
    if args.json:
        from featurestore.atomic import write_json

        write_json(args.json, {"summary": out, **results}, indent=1)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
