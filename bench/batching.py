"""Length-bucketed training batches against batches of random composition, side by side.

``--batching bucketed`` (utterances of similar crop length share a batch) against
``--batching random`` (the shuffled order cut as it comes), on the same store, seeds and
crops (:func:`trainer.data.make_batches`):

- ``padding``: the share of the training batches' frames that is padding, over
  ``--epochs`` epochs' batches (exact: no training needed);
- ``epoch_s`` / ``step_s``: seconds of a training epoch and of one step, a real
  ECAPA-TDNN training step (forward with AAM margin, cross-entropy, backward, Adam; one
  CPU thread) on every batch of the in-memory bank; the two modes alternate epoch by
  epoch (so a change in the machine's load hits both alike), the median is reported,
  and ``random_vs_bucketed`` is random's epoch seconds over bucketed's.

The store is a real one (``--store``) or, by default, generated: 80-d float32 frames (as
log-mel filterbanks) at 50 frames/s with IEMOCAP's utterance lengths.

    python bench/batching.py --quick
    python bench/batching.py --store cache/urdu_fbank.zarr --channels 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import fresh_store, iemocap_like_frames, machine_info, random_manifest, write_features  # noqa: E402
from featurestore.store import open_store  # noqa: E402
from featurestore.store.reader import FeatureStore  # noqa: E402
from trainer.data import BATCHING, FeatureBank, make_batches, padding_fraction  # noqa: E402

#: ``(utterances, epochs, channels, batch size)`` of each size.
SIZES = {"full": (2000, 5, 128, 64), "quick": (600, 3, 64, 64), "tiny": (40, 2, 8, 8)}
#: Frames per second of the generated store (what :func:`bench.common.write_features` records).
FRAME_RATE = 50.0


def write_store(path: Path, utts: int, dim: int = 80, seed: int = 0) -> Path:
    """A float32 store of ``utts`` random ``dim``-d utterances at 50 frames/s with IEMOCAP's lengths."""
    rng = np.random.default_rng(seed)
    frames = iemocap_like_frames(utts, rng, FRAME_RATE)
    manifest = random_manifest(frames, FRAME_RATE)
    items = ((u, rng.standard_normal((int(n), dim), dtype=np.float32)) for u, n in zip(manifest.ids(), frames))
    write_features(fresh_store(path), manifest, items, dim, dtype="float32")
    return path


def padding(bank: FeatureBank, crop: int, batch_size: int, epochs: int) -> dict[str, Any]:
    """Padding share of each mode's training batches over ``epochs`` seeds."""
    ids = list(bank.entries)
    lengths = np.minimum(bank.lengths(ids), crop)
    by_id = dict(zip(ids, lengths.tolist()))
    result = {}
    for mode in BATCHING:
        shares = [
            padding_fraction(make_batches(ids, lengths, batch_size, np.random.default_rng(seed), mode), by_id)
            for seed in range(epochs)
        ]
        result[mode] = round(float(np.mean(shares)), 4)
    return result


def step_times(
    store: FeatureStore, crop: int, batch_size: int, epochs: int, channels: int, seed: int = 0
) -> dict[str, Any]:
    """Training epochs of each mode, alternating, from one network state per mode."""
    from trainer.config import NetworkOptions
    from trainer.network import NetworkConfig, SERNetwork

    bank = FeatureBank(store)
    ids = list(bank.entries)
    lengths = np.minimum(bank.lengths(ids), crop)
    labels = {u: i % 4 for i, u in enumerate(ids)}
    torch.manual_seed(seed)
    initial = SERNetwork(NetworkConfig(bank.dim, 4, options=NetworkOptions(channels=channels))).state_dict()
    models = {}
    for mode in BATCHING:
        network = SERNetwork(NetworkConfig(bank.dim, 4, options=NetworkOptions(channels=channels)))
        network.load_state_dict(initial)
        models[mode] = (network.train(), torch.optim.Adam(network.parameters(), lr=1e-3))
    seconds: dict[str, list[float]] = {mode: [] for mode in BATCHING}
    steps: dict[str, list[float]] = {mode: [] for mode in BATCHING}
    frames: dict[str, list[int]] = {mode: [] for mode in BATCHING}
    for epoch in range(epochs + 1):  # the first epoch warms up, untimed
        for mode in BATCHING:
            network, optimizer = models[mode]
            rng = np.random.default_rng([seed, epoch])
            batches = make_batches(ids, lengths, batch_size, rng, mode)
            start = time.perf_counter()
            computed = 0
            for batch, x, batch_lengths in bank.iterate(batches, crop, rng):
                y = torch.tensor([labels[u] for u in batch])
                loss = torch.nn.functional.cross_entropy(network(x, batch_lengths, y)["emotion_logits"], y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                computed += x.shape[0] * x.shape[1]
            taken = time.perf_counter() - start
            if epoch:
                seconds[mode].append(taken)
                steps[mode].append(taken / len(batches))
                frames[mode].append(computed)
    result: dict[str, Any] = {}
    for mode in BATCHING:
        result[mode] = {
            "epoch_s": round(statistics.median(seconds[mode]), 3),
            "step_s": round(statistics.median(steps[mode]), 4),
            "frames_computed": int(np.mean(frames[mode])),
            "epochs_s": [round(s, 3) for s in seconds[mode]],
        }
    result["random_vs_bucketed"] = round(result["random"]["epoch_s"] / result["bucketed"]["epoch_s"], 3)
    return result


def run(store_path: Path, epochs: int, channels: int, batch_size: int, crop_seconds: float = 3.0) -> dict[str, Any]:
    """:func:`padding` and :func:`step_times` on the store at ``store_path``."""
    with open_store(store_path) as store:
        crop = max(1, round(crop_seconds * float(store.attrs["frame_rate"])))
        bank = FeatureBank(store)
        lengths = bank.lengths(list(bank.entries))
        results: dict[str, Any] = {
            "machine": machine_info(),
            "store": str(store_path),
            "utterances": len(store),
            "dim": store.dim,
            "crop_frames": crop,
            "shorter_than_crop": round(float((lengths < crop).mean()), 3),
            "batch_size": batch_size,
            "channels": channels,
            "padding": padding(bank, crop, batch_size, max(epochs, 5)),
            "training": step_times(store, crop, batch_size, epochs, channels),
        }
    results["summary"] = {
        "padding_bucketed": results["padding"]["bucketed"],
        "padding_random": results["padding"]["random"],
        "step_s_bucketed": results["training"]["bucketed"]["step_s"],
        "step_s_random": results["training"]["random"]["step_s"],
        "random_vs_bucketed": results["training"]["random_vs_bucketed"],
    }
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="600 generated utterances, 3 epochs, C = 64")
    size.add_argument("--tiny", action="store_true", help="code paths only (the unit test); figures mean nothing")
    parser.add_argument("--store", type=Path, help="a store to train on instead of a generated one")
    parser.add_argument("--utts", type=int, help="generated utterances (default 2000; --quick 600)")
    parser.add_argument("--epochs", type=int, help="timed epochs per mode (the median is reported)")
    parser.add_argument("--channels", type=int, help="ECAPA-TDNN channels C")
    parser.add_argument("--batch-size", type=int, help="utterances per batch (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--workdir", type=Path, help="keep the generated store here")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    utts, epochs, channels, batch_size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    epochs, channels = args.epochs or epochs, args.channels or channels
    batch_size = args.batch_size or batch_size
    with tempfile.TemporaryDirectory(prefix="sermtl-batching-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        store = args.store or write_store(workdir / f"batching_{args.utts or utts}.zarr", args.utts or utts)
        results = run(store, epochs, channels, batch_size)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["summary"]), flush=True)
    return results


if __name__ == "__main__":
    main()
