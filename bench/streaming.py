"""Training batches from memory against batches streamed from the store, side by side.

The store is what wav2vec2-large gives: 1024-d float16 frames at 50 frames/s with
IEMOCAP's utterance lengths (generated random values; reading does not care what they
are), written through :class:`featurestore.store.StoreWriter` as Zarr and as HDF5. For each
format the same epochs of training batches (64 utterances, bucketed, 3 s crops, seed =
round) are drawn through

- ``memory``: :class:`trainer.data.FeatureBank` (the store read into memory once);
- ``streaming``: ``open_bank(store, budget_bytes=0)``, the path for stores larger than
  memory (:class:`trainer.data.StreamingBank`: crops read in chunk-grouped reads by two
  threads, at most 4 batches ahead);
- ``streaming_before``: the streaming bank as it was before (whole utterances read one
  by one, 4 batches ahead in a 2-thread pool that kept every finished batch until the
  epoch ended; kept here only to compare).

The banks alternate round by round, so a change in the machine's load hits all alike, and
each is timed three ways, as batches per second of the whole loop:

- ``loader``: the caller takes each batch and asks for the next, nothing else (the
  strictest case: there is no model step to hide the reads behind);
- ``gpu_step``: the caller waits ``--step-ms`` per batch without using a core, as the host
  does while a GPU runs a training step (read-ahead can hide the reads behind it);
- ``cpu_training``: a real ECAPA-TDNN training step (``--channels``, forward, backward, Adam)
  on one CPU thread per batch, the first ``--train-batches`` batches of an epoch.

Every figure is the median over rounds; ``streaming_vs_memory`` is the ratio of the medians.
``reads`` counts store reads per batch; ``peak_rss_growth_mb`` is the growth of the
process's peak memory over one epoch of each streaming bank.

    python bench/streaming.py --quick           # a minute or two on 2 cores
    python bench/streaming.py --utts 5531       # an IEMOCAP-sized store (2.4 GB per format)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import (  # noqa: E402
    fresh_store,
    iemocap_like_frames,
    machine_info,
    peak_memory,
    random_manifest,
    write_features,
)
from featurestore.store import open_store  # noqa: E402
from featurestore.store.reader import FeatureStore  # noqa: E402
from trainer.data import FeatureBank, StreamingBank, make_batches, open_bank  # noqa: E402

#: Frames per second of wav2vec2 features.
FRAME_RATE = 50.0
#: ``(utterances, dim, rounds, batch size)`` of each size.
SIZES = {"full": (2000, 1024, 7, 64), "quick": (600, 1024, 5, 64), "tiny": (24, 32, 2, 8)}


class StreamingBankBefore(StreamingBank):
    """The streaming bank before chunk-grouped reads and the bounded read-ahead:
    each utterance read whole (``store.read``) and cut to its crop, batches gathered 4
    ahead in a 2-thread pool. For comparison only."""

    def _frames(self, utt_id: str, start: int, count: int) -> torch.Tensor:
        frames = self.store.read(utt_id, layer=self._layers[0] if len(self._layers) == 1 else None)
        return torch.from_numpy(np.ascontiguousarray(frames[..., start : start + count, :])).to(self.device)

    def gather(self, ids, spans):
        return self._assemble(ids, spans, (self._frames(u, start, count) for u, (start, count) in zip(ids, spans)))

    def iterate(self, batches, crop_frames=None, rng=None):
        planned = self.plan(batches, crop_frames, rng)
        depth = self.PREFETCH_BATCHES
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bench-before") as pool:
            pending = [pool.submit(self.gather, ids, spans) for ids, spans in planned[:depth]]
            for i, (ids, _) in enumerate(planned):
                if i + depth < len(planned):
                    pending.append(pool.submit(self.gather, *planned[i + depth]))
                yield (ids, *pending[i].result())


def write_store(path: Path, utts: int, dim: int, seed: int = 0) -> dict[str, Any]:
    """A one-layer float16 store of ``utts`` random ``dim``-d utterances with IEMOCAP's lengths."""
    rng = np.random.default_rng(seed)
    frames = iemocap_like_frames(utts, rng, FRAME_RATE)
    manifest = random_manifest(frames, FRAME_RATE)
    start = time.perf_counter()
    write_features(
        fresh_store(path),
        manifest,
        ((u, rng.standard_normal((int(n), dim), dtype=np.float32)) for u, n in zip(manifest.ids(), frames)),
        dim,
    )
    return {"frames": int(frames.sum()), "write_s": round(time.perf_counter() - start, 2)}


Consumer = Callable[[torch.Tensor, torch.Tensor], None]


def timed_epoch(
    bank: FeatureBank, batches: Sequence[Sequence[str]], crop: int, seed: int, consume: Consumer | None
) -> float:
    """Seconds to take every batch of one epoch from ``bank`` (and ``consume`` each)."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _, x, lengths in bank.iterate(batches, crop, rng):
        if consume is not None:
            consume(x, lengths)
    return time.perf_counter() - start


def waiting(milliseconds: float) -> Consumer:
    """A GPU step's stand-in: the host waits ``milliseconds``, its cores free."""
    return lambda x, lengths: time.sleep(milliseconds / 1000)


def training_step(dim: int, channels: int) -> Consumer:
    """One ECAPA-TDNN training step (forward with AAM margin, cross-entropy, backward, Adam)
    on ``(B, T, dim)`` batches with random labels, on the CPU."""
    from trainer.config import NetworkOptions
    from trainer.network import NetworkConfig, SERNetwork

    network = SERNetwork(NetworkConfig(dim, 4, options=NetworkOptions(channels=channels))).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    labels = torch.Generator().manual_seed(0)

    def step(x: torch.Tensor, lengths: torch.Tensor) -> None:
        y = torch.randint(0, 4, (len(x),), generator=labels)
        loss = torch.nn.functional.cross_entropy(network(x, lengths, y)["emotion_logits"], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def compare_banks(
    store: FeatureStore,
    rounds: int,
    batch_size: int = 64,
    crop_seconds: float = 3.0,
    consume: Consumer | None = None,
    limit: int | None = None,
    before: bool = True,
) -> dict[str, Any]:
    """Batches per second of each bank over ``rounds`` alternating epochs (the first ``limit``
    batches of each), and the ratios; ``before``: also the streaming bank as it was."""
    banks: dict[str, FeatureBank] = {"memory": FeatureBank(store), "streaming": open_bank(store, budget_bytes=0)}
    assert banks["streaming"].streaming
    if before:
        banks["streaming_before"] = StreamingBankBefore(store)
    crop = max(1, round(crop_seconds * FRAME_RATE))
    ids = store.ids()
    lengths = np.minimum(banks["memory"].lengths(ids), crop)
    warm = make_batches(ids, lengths, batch_size, np.random.default_rng(0))[:1]
    for bank in banks.values():
        timed_epoch(bank, warm, crop, 0, consume)
    seconds: dict[str, list[float]] = {name: [] for name in banks}
    batches: list[list[str]] = []
    for round_ in range(rounds):
        batches = make_batches(ids, lengths, batch_size, np.random.default_rng(1000 + round_))[:limit]
        for name, bank in banks.items():
            seconds[name].append(timed_epoch(bank, batches, crop, round_, consume))
    rates = {name: len(batches) / statistics.median(times) for name, times in seconds.items()}
    result = {
        "batches_per_epoch": len(batches),
        **{f"{name}_batches_per_s": round(rate, 2) for name, rate in rates.items()},
        "streaming_vs_memory": round(rates["streaming"] / rates["memory"], 3),
    }
    if before:
        result["streaming_before_vs_memory"] = round(rates["streaming_before"] / rates["memory"], 3)
        result["streaming_vs_before"] = round(rates["streaming"] / rates["streaming_before"], 2)
    return {**result, "epoch_s": {name: [round(s, 3) for s in times] for name, times in seconds.items()}}


def _epoch_memory(store: FeatureStore, batch_size: int, crop: int) -> dict[str, float | None]:
    """Peak resident memory growth (MB) over one epoch taken from each streaming bank and
    dropped batch by batch: bounded read-ahead against the pool that kept every batch."""
    ids = store.ids()
    grown = {}
    for name, bank in (("streaming", StreamingBank(store)), ("streaming_before", StreamingBankBefore(store))):
        batches = make_batches(ids, np.minimum(bank.lengths(ids), crop), batch_size, np.random.default_rng(3))
        with peak_memory() as peak:
            timed_epoch(bank, batches, crop, 3, None)
        grown[name] = peak["rss_growth_mb"]
    return grown


def _reads_per_batch(store: FeatureStore, bank: StreamingBank, batch_size: int, crop: int) -> dict[str, float]:
    """Store reads and frames read per batch of one epoch, grouped by chunk, against one read per utterance."""
    count, frames = [0], [0]
    real = store.read_frames

    def counting(layer: int, start: int, stop: int) -> np.ndarray:
        count[0] += 1
        frames[0] += stop - start
        return real(layer, start, stop)

    ids = store.ids()
    lengths = np.minimum(bank.lengths(ids), crop)
    store.read_frames = counting  # type: ignore[method-assign]
    try:
        batches = make_batches(ids, lengths, batch_size, np.random.default_rng(7))
        for _ in bank.iterate(batches, crop, np.random.default_rng(7)):
            pass
    finally:
        del store.read_frames
    used = sum(int(n) for n in lengths)
    return {
        "reads_per_batch": round(count[0] / len(batches), 1),
        "utterances_per_batch": round(len(ids) / len(batches), 1),
        "frames_read_over_used": round(frames[0] / used, 2),
    }


def run(
    utts: int,
    dim: int,
    rounds: int,
    workdir: Path,
    batch_size: int = 64,
    step_ms: float = 30.0,
    channels: int = 64,
    train_batches: int = 4,
) -> dict[str, Any]:
    """Both formats: the store written, then :func:`compare_banks` as a loader alone, with
    a ``step_ms`` GPU-step stand-in, and with a real CPU training step of ECAPA-TDNN."""
    results: dict[str, Any] = {
        "machine": machine_info(),
        "utterances": utts,
        "dim": dim,
        "dtype": "float16",
        "batch_size": batch_size,
        "crop_frames": round(3.0 * FRAME_RATE),
    }
    for fmt, suffix in (("zarr", ".zarr"), ("hdf5", ".h5")):
        path = workdir / f"streaming_{utts}x{dim}{suffix}"
        written = write_store(path, utts, dim)
        with open_store(path) as store:
            section = {**written, "store_mb": round(store.size_on_disk() / 1e6, 1)}
            section["loader"] = compare_banks(store, rounds, batch_size)
            section["gpu_step"] = {
                "step_ms": step_ms,
                **compare_banks(store, rounds, batch_size, consume=waiting(step_ms)),
            }
            section["cpu_training"] = {
                "channels": channels,
                **compare_banks(
                    store,
                    max(2, rounds // 2),
                    batch_size,
                    consume=training_step(dim, channels),
                    limit=train_batches,
                    before=False,
                ),
            }
            section["reads"] = _reads_per_batch(store, StreamingBank(store), batch_size, round(3.0 * FRAME_RATE))
            section["peak_rss_growth_mb"] = _epoch_memory(store, batch_size, round(3.0 * FRAME_RATE))
        results[fmt] = section
        print(json.dumps({fmt: section}), flush=True)
    results["summary"] = {
        f"{fmt}_{part}_{key}": results[fmt][part][key]
        for fmt in ("zarr", "hdf5")
        for part in ("loader", "gpu_step", "cpu_training")
        for key in ("memory_batches_per_s", "streaming_batches_per_s", "streaming_vs_memory")
    }
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="600 utterances (270 MB per format)")
    size.add_argument("--tiny", action="store_true", help="code paths only (the unit test); figures mean nothing")
    parser.add_argument("--utts", type=int, help="utterances in the store (default: 2000; --quick 600)")
    parser.add_argument("--rounds", type=int, help="epochs per bank (the median is reported)")
    parser.add_argument("--step-ms", type=float, default=30.0, help="the GPU step's stand-in, ms (default 30)")
    parser.add_argument("--channels", type=int, default=64, help="ECAPA-TDNN channels of the CPU training step")
    parser.add_argument("--train-batches", type=int, default=4, help="batches per epoch of the CPU training rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--workdir", type=Path, help="keep the stores here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    utts, dim, rounds, batch_size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    utts, rounds = args.utts or utts, args.rounds or rounds
    with tempfile.TemporaryDirectory(prefix="sermtl-streaming-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(utts, dim, rounds, workdir, batch_size, args.step_ms, args.channels, args.train_batches)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["summary"]), flush=True)
    return results


if __name__ == "__main__":
    main()
