"""openSMILE features in one process against several (``workers``), side by side in one run.

    python bench/opensmile_workers.py --out opensmile_workers.json     # 200 utterances, 1-5 s
    python bench/opensmile_workers.py --quick --out quick.json         # a few seconds

For each openSMILE feature (``egemaps``, ``compare`` and their functionals) the same
generated utterances (:func:`featurestore.synthetic.synth_utterance`, lengths uniform in
``--min-seconds``..``--max-seconds``), in the pipeline's batches (longest first, the
extractor's default padded seconds per batch), are computed by:

- ``serial``: ``workers=1``, every wave in this process (``sermtl extract --workers 1``);
- ``pool``: ``workers=N`` (``--workers``, default 2): this process and ``N - 1`` worker
  processes, timed from building the extractor to the last batch's features, so the
  workers' start-up (a process each, importing opensmile, building a Smile) is in;
- ``pool_warm``: the same extractor computing the same batches again (start-up excluded).

Every pooled feature is checked bit-identical to the serial one. CPU seconds are recorded
too (this process, and on Linux each worker, from ``/proc``), which tells a pool slowed by
its own overhead (``cpu_ratio`` well above 1) from one starved by other load on the
machine (``cores_used`` well under ``N``), and gives ``speedup_if_cores_free``: the serial
CPU seconds over the busiest process's, the wall time each process would take on a core of
its own (on a loaded machine it errs low: this process then takes more of the waves). The
table goes to stdout, all figures as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import EMOTIONS, SAMPLE_RATE  # noqa: E402
from featurestore.atomic import write_json  # noqa: E402

FEATURES = ("egemaps", "compare", "egemaps-functionals", "compare-functionals")
#: The target: this speed-up with 2 workers on 2 cores, for the frame-level sets (docs/performance.md).
TARGET_SPEEDUP = 1.7
TARGET_FEATURES = ("egemaps", "compare")


def generated_waves(count: int, low: float, high: float, seed: int = 0) -> list[np.ndarray]:
    """``count`` synthetic utterances with lengths uniform in [``low``, ``high``] seconds.

    Parameters
    ----------
    count : int
        Number of utterances.
    low, high : float
        Shortest and longest length in seconds.
    seed : int
        Seed of the lengths and of each utterance's voice.

    Returns
    -------
    list of numpy.ndarray, each shape (samples,)
        16 kHz float32 waves.
    """
    from featurestore.synthetic import synth_utterance

    seconds = np.random.default_rng(seed).uniform(low, high, count)
    return [
        synth_utterance(EMOTIONS[i % len(EMOTIONS)], ("acted", "spontaneous")[i % 2], s, SAMPLE_RATE, seed=seed + i)
        for i, s in enumerate(seconds)
    ]


def pipeline_batches(waves: Sequence[np.ndarray], batch_seconds: float) -> list[list[int]]:
    """Indices of ``waves`` in the batches :func:`featurestore.pipeline.extract_to_store`
    would form (padded seconds per batch, longest first)."""
    from featurestore.pipeline import plan_batches

    durations = {str(i): len(wave) / SAMPLE_RATE for i, wave in enumerate(waves)}
    return [[int(i) for i in batch] for batch in plan_batches(durations, batch_seconds)]


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_cpu_seconds(extractor: Any) -> list[float] | None:
    """CPU seconds used so far by each worker process of ``extractor``'s pool (read from
    ``/proc``: under forkserver the workers are the fork server's children, not this
    process's), or None where there is no ``/proc``."""
    pool = getattr(extractor, "_pool", None)
    seconds = []
    for pid in getattr(pool, "_processes", None) or {}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        seconds.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))  # utime + stime
    return seconds


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...``: ``t["s"]`` wall seconds, ``t["cpu_s"]`` CPU seconds of
    this process (not of its workers) in the block."""
    result = {"s": 0.0, "cpu_s": 0.0}
    wall, cpu = time.perf_counter(), _own_cpu_seconds()
    try:
        yield result
    finally:
        result["s"] = time.perf_counter() - wall
        result["cpu_s"] = _own_cpu_seconds() - cpu


def run_batches(extractor: Any, waves: Sequence[np.ndarray], batches: list[list[int]]) -> list[np.ndarray]:
    """Every wave's features, batch by batch, in the order of ``waves``."""
    out: list[Any] = [None] * len(waves)
    for batch in batches:
        for i, features in zip(batch, extractor.extract_batch([waves[i] for i in batch])):
            out[i] = features
    return out


def compare_feature(name: str, waves: Sequence[np.ndarray], workers: int) -> dict[str, Any]:
    """Serial, pooled (start-up included) and warm-pool timings of feature ``name``.

    Parameters
    ----------
    name : str
        An openSMILE feature.
    waves : sequence of numpy.ndarray
        The utterances, 16 kHz.
    workers : int
        Processes of the pooled runs.

    Returns
    -------
    dict
        Seconds and CPU seconds per mode, speed-ups over serial and whether the values are
        bit-identical.
    """
    from featurestore.features import build_extractor

    audio_s = sum(len(w) for w in waves) / SAMPLE_RATE
    with timed() as serial:
        extractor = build_extractor(name, workers=1)
        batches = pipeline_batches(waves, extractor.default_batch_seconds)
        reference = run_batches(extractor, waves, batches)
    with timed() as cold:
        pooled = build_extractor(name, workers=workers)
        first = run_batches(pooled, waves, batches)
    cold_workers = worker_cpu_seconds(pooled)
    with timed() as warm:
        second = run_batches(pooled, waves, batches)
    warm_workers = worker_cpu_seconds(pooled)
    with timed() as closing:
        pooled.close()
    identical = all(
        np.array_equal(a, b) and np.array_equal(a, c) and a.dtype == b.dtype
        for a, b, c in zip(reference, first, second)
    )
    row: dict[str, Any] = {
        "feature": name,
        "batches": len(batches),
        "serial_s": round(serial["s"], 3),
        "pool_s": round(cold["s"], 3),
        "pool_warm_s": round(warm["s"], 3),
        "pool_close_s": round(closing["s"], 3),
        "speedup": round(serial["s"] / cold["s"], 2),
        "speedup_warm": round(serial["s"] / warm["s"], 2),
        "serial_cpu_s": round(serial["cpu_s"], 3),
        "serial_cores_used": round(serial["cpu_s"] / serial["s"], 2),
        "serial_x_realtime": round(audio_s / serial["s"], 1),
        "identical": identical,
    }
    if cold_workers is not None and warm_workers is not None:
        warm_delta = [after - before for before, after in zip(cold_workers, warm_workers)]
        for label, timing, workers_cpu in (("pool", cold, cold_workers), ("pool_warm", warm, warm_delta)):
            total = timing["cpu_s"] + sum(workers_cpu)
            row[f"{label}_cpu_s"] = round(total, 3)
            # Cores the run got (CPU s per wall s): about N for N processes on N idle cores.
            row[f"{label}_cores_used"] = round(total / timing["s"], 2)
            row[f"{label}_cpu_ratio"] = round(total / serial["cpu_s"], 3)  # its CPU over the serial run's
            # Each process on a core of its own (an idle machine): the busiest one's CPU seconds
            # are the wall time, start-up included; on a loaded machine, what the pool would gain.
            row[f"{label}_speedup_if_cores_free"] = round(serial["cpu_s"] / max(timing["cpu_s"], *workers_cpu), 2)
    return row


def table(rows: list[dict[str, Any]], workers: int) -> str:
    """The figures of :func:`compare_feature` as a Markdown table."""
    lines = [
        f"| feature | 1 worker s | {workers} workers s | speed-up | warm pool s | warm speed-up "
        "| cores used (1 / pool / warm) | pool CPU / serial CPU | speed-up on free cores (pool / warm) "
        "| identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def number(value: Any, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for r in rows:
        cores = " / ".join(number(r.get(k)) for k in ("serial_cores_used", "pool_cores_used", "pool_warm_cores_used"))
        free = " / ".join(
            number(r.get(k)) + "x" for k in ("pool_speedup_if_cores_free", "pool_warm_speedup_if_cores_free")
        )
        lines.append(
            f"| {r['feature']} | {r['serial_s']:.2f} | {r['pool_s']:.2f} | {r['speedup']:.2f}x "
            f"| {r['pool_warm_s']:.2f} | {r['speedup_warm']:.2f}x | {cores} | {number(r.get('pool_cpu_ratio'), 3)} "
            f"| {free} | {r['identical']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison and write its JSON; returns what it wrote.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    dict
        ``settings``, ``machine``, ``features`` (one row per feature) and ``target_met``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--utts", type=int, default=200, help="utterances (default 200)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument(
        "--workers", type=int, default=2, help="processes of the pooled runs, this one included (default 2)"
    )
    parser.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="12 utterances of 1-2 s: the code paths, in seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.utts, args.min_seconds, args.max_seconds = 12, 1.0, 2.0
    waves = generated_waves(args.utts, args.min_seconds, args.max_seconds, args.seed)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for name in args.features:
        rows.append(compare_feature(name, waves, args.workers))
        print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    timed_targets = [r["speedup"] for r in rows if r["feature"] in TARGET_FEATURES]
    result = {
        "settings": {
            "utterances": args.utts,
            "audio_s": round(sum(len(w) for w in waves) / SAMPLE_RATE, 1),
            "seconds": [args.min_seconds, args.max_seconds],
            "workers": args.workers,
            "quick": args.quick,
        },
        "machine": {
            "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_avg_1min_before": load_before,
            "load_avg_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "python": sys.version.split()[0],
        },
        "features": rows,
        "target_speedup": TARGET_SPEEDUP,
        "target_met": bool(timed_targets) and min(timed_targets) >= TARGET_SPEEDUP,
    }
    print(table(rows, args.workers))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
