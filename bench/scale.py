"""Scale: MFCC extraction and random store reads at 1×, 4× and 16× a corpus.

The larger corpora repeat the corpus's rows under new ids (the same audio files, so the
decoding work is real but the files are warm in the page cache). Time should grow
linearly with the corpus and the memory peak stay flat, since the pipeline streams
batches into the store and reads touch one utterance at a time. Extraction memory is
bounded by the largest batch (``batch_seconds`` of audio), which small corpora do not
fill: ``fullest_batch_audio_s`` says how much audio the largest batch held.

``bench/scale_utterances.py`` measures the other axis: 10^3 to 10^5 separate short files,
each stage (extract, a no-op resume, verify, a training bank) in its own process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import clock, fresh_store, peak_memory, repeat_manifest
from featurestore.features.base import FeatureExtractor
from featurestore.manifest import Manifest
from featurestore.pipeline import extract_to_store, plan_batches
from featurestore.store import open_store


def random_reads(store_path: Path, seed: int = 0) -> tuple[int, int]:
    """Read every utterance of a store once, in random order; (utterances, bytes)."""
    with open_store(store_path) as store:
        order = np.random.default_rng(seed).permutation(store.ids())
        return len(order), sum(store.read(u).nbytes for u in order)


def scale_row(
    manifest: Manifest, extractor: FeatureExtractor, workdir: Path, factor: int, batch_seconds: float, dtype: str
) -> dict[str, Any]:
    """Extraction then reads of ``factor`` copies of ``manifest``: seconds and memory of each."""
    corpus = repeat_manifest(manifest, factor)
    path = fresh_store(workdir / f"scale_x{factor}.zarr")
    with peak_memory() as extract_mem, clock() as extract:
        extract_to_store(corpus, extractor, path, dtype=dtype, batch_seconds=batch_seconds, progress=False)
    with peak_memory() as read_mem, clock() as read:
        count, nbytes = random_reads(path)
    durations = {row["utt_id"]: float(row["duration"]) for row in corpus}
    fullest = max(sum(durations[u] for u in batch) for batch in plan_batches(durations, batch_seconds))
    return {
        "factor": factor,
        "utterances": count,
        "audio_h": round(corpus.total_duration() / 3600, 2),
        "fullest_batch_audio_s": round(fullest, 1),
        "extract_s": round(extract["s"], 2),
        "extract_x_realtime": round(corpus.total_duration() / extract["s"], 1),
        "extract_peak_rss_mb": extract_mem["peak_rss_mb"],
        "extract_rss_growth_mb": extract_mem["rss_growth_mb"],
        "read_s": round(read["s"], 2),
        "read_utts_per_s": round(count / read["s"], 1),
        "read_MB": round(nbytes / 1e6, 1),
        "read_peak_rss_mb": read_mem["peak_rss_mb"],
        "read_rss_growth_mb": read_mem["rss_growth_mb"],
    }


def scale_rows(
    manifest: Manifest,
    extractor: FeatureExtractor,
    workdir: Path,
    factors: Sequence[int],
    batch_seconds: float,
    dtype: str = "float32",
) -> dict[str, Any]:
    """One :func:`scale_row` per factor, plus how far time and memory are from linear and flat."""
    rows = [scale_row(manifest, extractor, workdir, f, batch_seconds, dtype) for f in factors]
    first, last = rows[0], rows[-1]
    growth = last["factor"] / first["factor"]
    return {
        "rows": rows,
        # seconds per utterance at the largest size over the smallest: 1.0 = exactly linear
        "extract_time_per_utt_ratio": round(last["extract_s"] / first["extract_s"] / growth, 2),
        "read_time_per_utt_ratio": round(last["read_s"] / first["read_s"] / growth, 2),
        "extract_rss_growth_mb": [r["extract_rss_growth_mb"] for r in rows],
        "read_rss_growth_mb": [r["read_rss_growth_mb"] for r in rows],
    }
