"""CPU benchmark of the whole design: extraction, store reads, cache-fed training, scale.

    python bench/run.py --quick          # a few minutes on a 2-core CPU
    python bench/run.py                  # IEMOCAP-sized corpora (hours on a CPU)

Every speed figure is measured side by side with its baseline in the same run: MFCC
against real time, bucketed extraction against one-by-one and naive padded batches,
cache-fed training against recomputing features from audio every epoch, the shipped
store layout against an array per utterance. wav2vec2 figures use the
``wav2vec2-large-960h`` architecture with random weights (the same compute; built
locally, nothing is downloaded). Progress goes to stderr; each section prints one JSON
line to stdout and the last line of stdout is the summary, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import (
    IEMOCAP_UTTERANCES,
    clock,
    fresh_store,
    iemocap_like_frames,
    machine_info,
    make_corpus,
    ssl_model,  # noqa: E402
    write_random_store,
)
from featurestore.atomic import write_json  # noqa: E402

#: Training utterances of one IEMOCAP leave-one-session-out fold (4 of 5 sessions, 20 % of them for validation).
IEMOCAP_TRAIN_UTTS = round(IEMOCAP_UTTERANCES * 0.8 * 0.8)
#: ECAPA channels of the sweep runs.
SWEEP_CHANNELS = 128


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each part of a run is."""

    corpus: int  # MFCC corpus (IEMOCAP's lengths)
    longest: float  # its longest utterance, seconds
    scale: tuple[int, ...]  # multiples of the MFCC corpus for the scale rows
    store_utts: int  # random-feature stores for the read benchmark
    store_dim: int
    train_utts: int  # random-feature store for seconds per epoch
    train_dim: int
    train_epochs: int
    compare_utts: int  # MFCC corpus rows used for cache-fed vs on-the-fly training
    compare_epochs: int
    compare_channels: int  # ECAPA channels of the cache-fed vs on-the-fly runs
    w2v2_size: str  # random wav2vec2 model: large (the real architecture) or tiny
    w2v2_utts: int
    w2v2_longest: float
    w2v2_batch_seconds: float
    sweep_epochs: int  # epochs of the folds-together vs one-after-another runs (MFCC corpus, C = 128)


PRESETS: dict[str, Sizes] = {
    "full": Sizes(
        IEMOCAP_UTTERANCES, 34.1, (1, 4, 16), 5531, 1024, 640, 1024, 2, 200, 2, 512, "large", 200, 34.1, 200.0, 5
    ),
    "quick": Sizes(240, 34.1, (1, 4, 16), 300, 1024, 48, 1024, 1, 40, 1, 512, "large", 16, 5.0, 20.0, 2),
    # code paths only, in seconds (the unit test); its figures mean nothing
    "tiny": Sizes(12, 2.0, (1, 4, 16), 12, 32, 20, 32, 1, 11, 1, 32, "tiny", 10, 1.5, 4.0, 1),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def section(results: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """Record a section and print it as one JSON line."""
    results[name] = value
    print(json.dumps({name: value}), flush=True)


def run(sizes: Sizes, workdir: Path, model_dir: Path | None = None) -> dict[str, Any]:
    """Every CPU section at ``sizes`` under ``workdir``; returns ``{section: figures}``."""
    from bench import extraction, scale, store_layouts, training
    from featurestore.features.mfcc import MFCCExtractor
    from featurestore.pipeline import extract_to_store
    from featurestore.store import open_store
    from trainer.config import TrainConfig

    results: dict[str, Any] = {}
    section(results, "machine", machine_info())

    log(f"corpus: {sizes.corpus} utterances")
    with clock() as made:
        corpus = make_corpus(workdir / "corpus", sizes.corpus, longest=sizes.longest)
    section(
        results,
        "corpus",
        {
            "utterances": len(corpus),
            "audio_h": round(corpus.total_duration() / 3600, 3),
            "longest_s": round(max(float(r["duration"]) for r in corpus), 2),
            "generate_s": round(made["s"], 1),
        },
    )

    log("MFCC extraction: batched and one by one")
    mfcc = MFCCExtractor(device="cpu")
    figures = extraction.compare_batching(  # MFCC batches are not padded: no naive case
        corpus, mfcc, workdir, MFCCExtractor.default_batch_seconds, MFCCExtractor.default_dtype, naive=False
    )
    compute_s = extraction.compute_only_seconds(corpus, mfcc, MFCCExtractor.default_batch_seconds)
    section(results, "mfcc", {**figures, "compute_only_x_realtime": round(figures["audio_s"] / compute_s, 1)})

    log("sweep: the 5 folds of the MFCC corpus trained by 2 processes at once vs one after another")
    section(
        results,
        "sweep",
        training.folds_together(
            workdir / f"{mfcc.name}_bucketed.zarr", sizes.sweep_epochs, SWEEP_CHANNELS, "cpu", workdir, ranks=2
        ),
    )

    log(f"scale: MFCC extraction and reads at {sizes.scale} x the corpus")
    section(
        results,
        "scale",
        scale.scale_rows(
            corpus, mfcc, workdir, sizes.scale, MFCCExtractor.default_batch_seconds, MFCCExtractor.default_dtype
        ),
    )

    log(f"store reads: {sizes.store_utts} utterances, {sizes.store_dim}-d float16, both layouts and backends")
    rng = np.random.default_rng(0)
    data = store_layouts.random_features(sizes.store_utts, sizes.store_dim, rng)
    rows = [
        store_layouts.measure(layout, suffix, data, workdir, rng)
        for layout in ("concatenated", "per-utterance")
        for suffix in (".zarr", ".h5")
    ]
    del data
    section(results, "stores", {"utterances": sizes.store_utts, "dim": sizes.store_dim, "rows": rows})

    log(f"training: seconds per epoch at C=512 and C=128, {sizes.train_dim}-d input")
    write_random_store(workdir / "train.zarr", iemocap_like_frames(sizes.train_utts, rng), sizes.train_dim, rng)
    with open_store(workdir / "train.zarr") as store:
        fold = training.first_fold(store)
        epochs = {f"c{c}": training.epoch_seconds(store, fold, c, sizes.train_epochs) for c in (512, 128)}
        epochs["c512_streaming"] = training.streaming_run(store, fold, 512)
        section(results, "epochs", epochs)

    log(f"cache-fed vs on-the-fly training, MFCC, {sizes.compare_utts} utterances")
    subset = corpus.subset(corpus.ids()[1 : 1 + sizes.compare_utts])  # not the 34 s one: one in 5531
    extract_to_store(
        subset, mfcc, fresh_store(workdir / "compare_mfcc.zarr"), dtype=MFCCExtractor.default_dtype, progress=False
    )
    config = TrainConfig.from_dict(
        {"epochs": sizes.compare_epochs, "channels": sizes.compare_channels, "device": "cpu"}
    )
    with open_store(workdir / "compare_mfcc.zarr") as store:
        section(results, "train_mfcc", training.cache_vs_onthefly(store, mfcc, training.first_fold(store), config))

    log(f"wav2vec2-{sizes.w2v2_size} (random weights): {sizes.w2v2_utts} utterances")
    from featurestore.features.wav2vec2 import SSLExtractor

    w2v2 = SSLExtractor(model=str(ssl_model(model_dir or workdir, sizes.w2v2_size)), device="cpu")
    w2v2_corpus = make_corpus(workdir / "w2v2_corpus", sizes.w2v2_utts, seed=1, longest=sizes.w2v2_longest)
    section(
        results,
        "w2v2",
        {
            "model": f"wav2vec2-{sizes.w2v2_size}",
            **extraction.compare_batching(
                w2v2_corpus, w2v2, workdir, sizes.w2v2_batch_seconds, SSLExtractor.default_dtype
            ),
        },
    )
    with open_store(workdir / "w2v2_bucketed.zarr") as store:
        section(results, "train_w2v2", training.cache_vs_onthefly(store, w2v2, training.first_fold(store), config))
    return results


def summary(results: dict[str, Any], preset: str, elapsed: float) -> dict[str, Any]:
    """The flat figures of a run (the last stdout line)."""
    from bench.training import per_epoch_at

    stores = {(r["layout"], r["backend"]): r for r in results["stores"]["rows"]}
    epochs, scale = results["epochs"], results["scale"]
    out: dict[str, Any] = {
        "preset": preset,
        "mfcc_x_realtime": results["mfcc"]["bucketed_x_realtime"],
        "mfcc_compute_only_x_realtime": results["mfcc"]["compute_only_x_realtime"],
        "mfcc_batched_vs_sequential": results["mfcc"]["batched_vs_sequential"],
        "w2v2_x_realtime": results["w2v2"]["bucketed_x_realtime"],
        "w2v2_batched_vs_sequential": results["w2v2"]["batched_vs_sequential"],
        "w2v2_bucketed_vs_naive": results["w2v2"]["bucketed_vs_naive"],
        "w2v2_batched_max_abs_diff": results["w2v2"]["batched_max_abs_diff"],
        "cache_vs_onthefly_mfcc": results["train_mfcc"]["ratio"],
        "cache_vs_onthefly_w2v2": results["train_w2v2"]["ratio"],
    }
    for backend in ("zarr", "hdf5"):
        shipped, per_utt = stores[("concatenated", backend)], stores[("per-utterance", backend)]
        out[f"store_read_utts_per_s_{backend}"] = shipped["random_read_utts_per_s"]
        out[f"store_read_GB_per_s_{backend}"] = round(shipped["random_read_MB_per_s"] / 1000, 3)
        out[f"store_read_vs_per_utterance_{backend}"] = round(
            shipped["random_read_utts_per_s"] / per_utt["random_read_utts_per_s"], 2
        )
    for channels in (512, 128):
        row = epochs[f"c{channels}"]
        out[f"cpu_epoch_s_c{channels}"] = row["epoch_s"]
        out[f"cpu_epoch_s_c{channels}_iemocap"] = per_epoch_at(row, IEMOCAP_TRAIN_UTTS)
        out[f"loader_fraction_c{channels}"] = row["loader_fraction"]
    out.update(
        {
            "loader_fraction_streaming_c512": epochs["c512_streaming"]["loader_fraction"],
            "train_utts_measured": epochs["c512"]["train_utts"],
            "scale_factors": [r["factor"] for r in scale["rows"]],
            "scale_extract_s": [r["extract_s"] for r in scale["rows"]],
            "scale_extract_time_per_utt_ratio": scale["extract_time_per_utt_ratio"],
            "scale_extract_rss_growth_mb": scale["extract_rss_growth_mb"],
            "scale_read_s": [r["read_s"] for r in scale["rows"]],
            "scale_read_time_per_utt_ratio": scale["read_time_per_utt_ratio"],
            "scale_read_rss_growth_mb": scale["read_rss_growth_mb"],
            "sweep_ratio": results["sweep"]["together_vs_one_after_another"],
            "sweep_note": f"5 folds, {results['sweep']['ranks']} torchrun processes (1 thread each) against one "
            "process (all threads), CPU; bench/gpu.py measures 5 processes sharing one GPU",
            "machine": results["machine"],
            "elapsed_s": round(elapsed, 1),
        }
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small corpora: a few minutes on a 2-core CPU")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # code paths only (tests)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--workdir", type=Path, help="keep corpora and stores here (default: a temporary folder)")
    parser.add_argument("--model-dir", type=Path, help="where the random wav2vec2 model is built or found")
    parser.add_argument("--json", type=Path, help="also write every section's figures to this file")
    args = parser.parse_args(argv)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sermtl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        results = run(PRESETS[preset], workdir, args.model_dir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = summary(results, preset, time.perf_counter() - started)
    if args.json:
        write_json(args.json, {"summary": out, **results}, indent=1)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
