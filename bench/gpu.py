"""GPU benchmark: wav2vec2-large extraction of an IEMOCAP-sized corpus and the paper's full training run.

    python bench/gpu.py                  # on a CUDA machine; skips (exit 0) without one

1. A synthetic corpus with IEMOCAP's size and lengths (5531 utterances, ~7 h, the
   longest 34.1 s).
2. wav2vec2-large-960h architecture, random weights, bf16 autocast (the extractor's CUDA
   mode), exact batching: length-bucketed (``sermtl extract``), naive padded batches of
   the same sizes, and one by one; speed (× real time), peak GPU memory of each, and the
   34 s utterance alone.
3. Training from the bucketed store (1024-d, float16): leave-one-session-out, 5 folds ×
   ``--epochs`` 50, ECAPA C = 512, features resident on the GPU; total seconds, per fold,
   the loader's share and peak GPU memory.
4. The same 5 folds trained at once, one ``torchrun`` process each sharing the GPU, against
   ``sermtl cv`` training them one after another (both timed as whole commands).

The last line of stdout is one JSON object; ``target_*`` keys say whether the GPU
targets (≥ 500× real time extraction, the full training run under 3 minutes) are met.
``--part extract`` and ``--part train`` (same ``--workdir``) run the halves separately.
``--device cpu --tiny`` runs the same code on a CPU at toy size (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    IEMOCAP_LONGEST_S,
    IEMOCAP_UTTERANCES,
    clock,
    machine_info,
    make_corpus,
    ssl_model,  # noqa: E402
)
from featurestore.atomic import write_json  # noqa: E402

EXTRACT_TARGET_X_REALTIME = 500.0
TRAIN_TARGET_S = 180.0


def longest_alone(manifest, extractor, device) -> dict[str, Any]:
    """Extraction of the corpus's longest utterance on its own: seconds and peak GPU memory."""
    from featurestore.audio import load_audio

    row = max(manifest, key=lambda r: float(r["duration"]))
    wave = load_audio(row["path"], row["start"], row["end"])
    with clock(device) as alone:
        extractor.extract_batch([wave])
    return {
        "seconds_of_audio": round(len(wave) / 16000, 2),
        "s": round(alone["s"], 3),
        "peak_gpu_mb": alone["peak_gpu_mb"],
    }


def train_all_folds(store_path: Path, epochs: int, channels: int, device: str) -> dict[str, Any]:
    """Leave-one-session-out on the store, every fold, features in (GPU) memory once."""
    from bench.training import timed_training
    from featurestore.store import open_store
    from trainer.config import TrainConfig
    from trainer.data import open_bank
    from trainer.folds import make_folds

    config = TrainConfig.from_dict({"epochs": epochs, "channels": channels, "device": device})
    with open_store(store_path) as store, clock(device) as total:
        with clock(device) as load:
            bank = open_bank(store, device=device)
        folds = [timed_training(store, bank, fold, config) for fold in make_folds(store.manifest, "loso", by="session")]
    return {
        "folds": len(folds),
        "epochs": epochs,
        "channels": channels,
        "streaming": bank.streaming,
        "bank_load_s": round(load["s"], 2),
        "total_s": round(total["s"], 1),
        "per_fold": folds,
        "loader_fraction": round(
            sum(f["loader_fraction"] * f["run_s"] for f in folds) / sum(f["run_s"] for f in folds), 4
        ),
        "peak_gpu_mb": total["peak_gpu_mb"],
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.extraction import compare_batching
    from featurestore.features.wav2vec2 import SSLExtractor

    results: dict[str, Any] = {"machine": machine_info()}
    store = workdir / "w2v2_bucketed.zarr"
    if args.part in ("all", "extract"):
        corpus = make_corpus(workdir / "corpus", args.utts, longest=args.longest)
        results["corpus"] = {"utterances": len(corpus), "audio_h": round(corpus.total_duration() / 3600, 2)}
        size = "tiny" if args.tiny else "large"
        extractor = SSLExtractor(model=str(ssl_model(args.model_dir or workdir, size)), device=args.device)
        results["w2v2"] = {
            "model": f"wav2vec2-{size}",
            "precision": extractor.config.precision,
            **compare_batching(corpus, extractor, workdir, args.batch_seconds, SSLExtractor.default_dtype),
        }
        results["longest_alone"] = longest_alone(corpus, extractor, args.device)
        results["target_extract_500x"] = results["w2v2"]["bucketed_x_realtime"] >= EXTRACT_TARGET_X_REALTIME
        del extractor
        if args.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    if args.part in ("all", "train"):
        from bench import training

        results["training"] = train_all_folds(store, args.epochs, args.channels, args.device)
        results["target_train_under_3_min"] = results["training"]["total_s"] < TRAIN_TARGET_S
        results["folds_together"] = training.folds_together(
            store, args.epochs, args.channels, args.device, workdir, args.ranks
        )
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1 ...; cpu only with --tiny")
    parser.add_argument("--utts", type=int, default=IEMOCAP_UTTERANCES)
    parser.add_argument("--longest", type=float, default=IEMOCAP_LONGEST_S)
    parser.add_argument("--batch-seconds", type=float, default=200.0)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument(
        "--ranks", type=int, default=5, help="processes training the folds at once (default 5: one per fold; --tiny: 2)"
    )
    parser.add_argument(
        "--part",
        choices=("all", "extract", "train"),
        default="all",
        help="extract, or train on the store a kept --workdir holds from --part extract",
    )
    parser.add_argument("--tiny", action="store_true", help="toy sizes and a tiny random model (smoke test)")
    parser.add_argument("--workdir", type=Path, help="keep the corpus and stores here (default: temporary)")
    parser.add_argument("--model-dir", type=Path, help="where the random wav2vec2 model is built or found")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.utts, args.longest, args.epochs, args.batch_seconds = min(args.utts, 10), 2.0, 1, 4.0
        args.channels, args.ranks = min(args.channels, 32), min(args.ranks, 2)
    if args.part == "train" and not (args.workdir and (args.workdir / "w2v2_bucketed.zarr").exists()):
        parser.error("--part train needs the --workdir of an earlier --part extract run")
    import torch

    if not args.device.startswith("cuda") and not args.tiny:
        parser.error(f"--device {args.device}: the GPU benchmark runs on CUDA (use bench/run.py on a CPU)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        out = {"skipped": "no CUDA device: the GPU benchmark was not run", "machine": machine_info()}
        print(out["skipped"], file=sys.stderr)
        print(json.dumps(out), flush=True)
        return out
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sermtl-gpu-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        out = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        write_json(args.json, out, indent=1)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
