"""Training speed through the real trainer (:func:`trainer.loop.train_fold`).

- cache-fed: the fold's frames in memory (:func:`trainer.data.open_bank`), as ``sermtl cv`` trains;
- on the fly: :class:`OnTheFlyBank`, the common recipe that decodes the audio and recomputes
  the features of every batch, every epoch (training crops, validation and test), with the
  same model, fold, seed and batches.

The time spent producing batches (the loader) is clocked separately from the whole run.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.common import clock
from featurestore.audio import TARGET_SR, load_audio
from featurestore.features.base import FeatureExtractor
from featurestore.store.reader import FeatureStore
from trainer.config import TrainConfig
from trainer.data import FeatureBank, Span, open_bank
from trainer.folds import Fold, make_folds
from trainer.loop import train_fold


class OnTheFlyBank(FeatureBank):
    """The :class:`~trainer.data.FeatureBank` interface, computing features from audio per batch.

    Each batch's utterances are decoded and the audio under each crop (whole utterances
    for evaluation) is run through ``extractor`` as one batch, as a training recipe without
    a cache does; a crop's edge frames see its ends, not the audio around them. Frame counts
    and the input normalisation statistics come from ``store`` (``statistics``: one pass
    over the cached frames, not part of the per-epoch cost being compared).
    """

    def __init__(
        self,
        store: FeatureStore,
        extractor: FeatureExtractor,
        statistics: tuple[torch.Tensor, torch.Tensor],
        device: str | torch.device = "cpu",
    ) -> None:
        self.extractor = extractor
        self._statistics = statistics
        super().__init__(store, layer=None, device=device)

    def _load(self, store: FeatureStore) -> None:
        self.manifest = store.manifest
        self.entries = store.entries()
        self.hop = round(TARGET_SR / float(store.attrs["frame_rate"]))

    def statistics(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._statistics

    def gather(self, ids: Sequence[str], spans: Sequence[Span]) -> tuple[torch.Tensor, torch.Tensor]:
        waves = []
        for utt_id, (start, count) in zip(ids, spans):
            row = self.manifest[utt_id]
            wave = load_audio(row["path"], row["start"], row["end"])
            if count < self.extractor.num_frames(len(wave)):  # a crop: only the audio under it
                first = start * self.hop
                wave = wave[first : first + (count - 1) * self.hop + self.extractor.min_samples]
            waves.append(wave)
        features = self.extractor.extract_batch(waves)
        out = torch.zeros((len(ids), max(count for _, count in spans), self.dim), dtype=torch.float32)
        for row, ((_, count), feats) in enumerate(zip(spans, features)):
            frames = torch.from_numpy(feats[0, :count])
            out[row, : len(frames)] = frames
        return out.to(self.device), torch.tensor([c for _, c in spans], dtype=torch.long, device=self.device)


def clock_loader(bank: FeatureBank) -> FeatureBank:
    """Make ``bank.loader_s`` count (from zero) the seconds its ``iterate`` spends producing
    batches, and ``bank.loader_batches`` the batches."""
    iterate = type(bank).iterate.__get__(bank)  # the class's own method: clocking twice counts once
    bank.loader_s, bank.loader_batches = 0.0, 0

    def timed(*args: Any, **kwargs: Any) -> Iterator:
        batches = iterate(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(batches)
            except StopIteration:
                return
            finally:
                bank.loader_s += time.perf_counter() - start
            bank.loader_batches += 1
            yield item

    bank.iterate = timed
    return bank


def first_fold(store: FeatureStore, seed: int = 0) -> Fold:
    """Fold 1 of leave-one-session-out with 20 % of the training sessions for validation."""
    return make_folds(store.manifest, "loso", by="session", seed=seed)[0]


def timed_training(store: FeatureStore, bank: FeatureBank, fold: Fold, config: TrainConfig) -> dict[str, Any]:
    """Train ``fold`` on ``bank``: wall seconds, seconds per epoch, loader share of the run."""
    clock_loader(bank)
    with clock(bank.device) as run:
        train_fold(store, bank, fold, config, progress=False)
    result = {
        "train_utts": len(fold.train),
        "epochs": config.epochs,
        "run_s": round(run["s"], 3),
        "epoch_s": round(run["s"] / config.epochs, 3),
        "loader_fraction": round(bank.loader_s / run["s"], 4),
    }
    if run["peak_gpu_mb"] is not None:
        result["peak_gpu_mb"] = run["peak_gpu_mb"]
    return result


def warm_up(store: FeatureStore, bank: FeatureBank, fold: Fold, config: TrainConfig) -> None:
    """One untimed epoch on a few utterances, so one-off set-up costs stay out of the timings."""
    few = fold.train[:8]
    small = Fold(0, few, few, few)  # scored on its training rows: every label known, several classes
    train_fold(store, bank, small, dataclasses.replace(config, epochs=1), progress=False)


def epoch_seconds(store: FeatureStore, fold: Fold, channels: int, epochs: int, device: str = "cpu") -> dict[str, Any]:
    """Cache-fed training of ECAPA with ``channels`` channels (192-d embedding, batches of 64).

    ``epoch_s`` is the marginal cost of an epoch (training and validation): the run of
    ``1 + epochs`` epochs minus the run of one, divided by ``epochs``; the test scoring
    and set-up that both runs pay cancel out.
    """
    config = TrainConfig.from_dict({"epochs": 1, "channels": channels, "device": device})
    bank = open_bank(store, device=device)
    warm_up(store, bank, fold, config)
    one = timed_training(store, bank, fold, config)
    more = timed_training(store, bank, fold, dataclasses.replace(config, epochs=1 + epochs))
    return {
        **more,
        "epoch_s": round((more["run_s"] - one["run_s"]) / epochs, 3),
        "one_epoch_run_s": one["run_s"],
        "streaming": bank.streaming,
    }


def streaming_run(store: FeatureStore, fold: Fold, channels: int, device: str = "cpu") -> dict[str, Any]:
    """One epoch with every batch read from the store while training (:class:`~trainer.data.StreamingBank`,
    the path for stores larger than memory): the loader's share of the run."""
    bank = open_bank(store, device=device, budget_bytes=0)
    return {
        **timed_training(
            store, bank, fold, TrainConfig.from_dict({"epochs": 1, "channels": channels, "device": device})
        ),
        "streaming": bank.streaming,
    }


def cache_vs_onthefly(
    store: FeatureStore,
    extractor: FeatureExtractor,
    fold: Fold,
    config: TrainConfig,
    rounds: int = 2,
    device: str = "cpu",
) -> dict[str, Any]:
    """The same training run fed from the cache and recomputing features from audio.

    After a warm-up, the two alternate for ``rounds`` rounds (so a change in the machine's
    load hits both alike); ``ratio`` is the on-the-fly seconds over the cache-fed seconds.
    """
    cached_bank = open_bank(store, device=device)
    warm_up(store, cached_bank, fold, config)
    onthefly_bank = OnTheFlyBank(store, extractor, cached_bank.statistics(fold.train), device)
    runs: dict[str, list[dict[str, Any]]] = {"cached": [], "onthefly": []}
    for _ in range(rounds):
        for name, bank in (("cached", cached_bank), ("onthefly", onthefly_bank)):
            runs[name].append(timed_training(store, bank, fold, config))
    seconds = {name: sum(run["run_s"] for run in rows) for name, rows in runs.items()}
    return {
        **runs,
        "ratio": round(seconds["onthefly"] / seconds["cached"], 2),
        "channels": config.network.channels,
        "epochs_per_run": config.epochs,
        "audio_s_per_epoch": round(_epoch_audio_seconds(store, fold, config), 1),
    }


def _epoch_audio_seconds(store: FeatureStore, fold: Fold, config: TrainConfig) -> float:
    """Audio an on-the-fly epoch decodes and runs: training crops plus whole validation utterances."""
    manifest = store.manifest
    train = sum(min(float(manifest[u]["duration"]), config.crop_seconds) for u in fold.train)
    return train + sum(float(manifest[u]["duration"]) for u in fold.valid)


def per_epoch_at(result: dict[str, Any], train_utts: int) -> float:
    """Seconds per epoch scaled linearly to ``train_utts`` training utterances."""
    return round(result["epoch_s"] * train_utts / max(1, result["train_utts"]), 1)


def folds_together(
    store_path: Path, epochs: int, channels: int, device: str, workdir: Path, ranks: int = 5
) -> dict[str, Any]:
    """The 5 leave-one-session-out folds trained at once by ``ranks`` processes on the same
    device (``torchrun --nproc-per-node RANKS … sermtl cv``; 5: one fold each), against the same
    ``sermtl cv`` in one process training them one after another; both as whole commands,
    side by side. A failed command's whole stderr (every rank's) is in the error."""
    args = [
        "cv",
        "--store",
        str(store_path),
        "--protocol",
        "loso",
        "--by",
        "session",
        "--epochs",
        str(epochs),
        "--channels",
        str(channels),
        "--device",
        device,
    ]
    sermtl = [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py")]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(ranks),
        "--no-python",
    ]
    timings = {}
    for name, command in (("one_after_another", [*sermtl, *args]), ("together", [*torchrun, *sermtl, *args])):
        shutil.rmtree(workdir / f"cv_{name}", ignore_errors=True)
        with clock() as timing:
            done = subprocess.run([*command, "--out", str(workdir / f"cv_{name}")], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{name}: {' '.join(command)} failed: {done.stderr.strip()}")
        timings[f"{name}_s"] = round(timing["s"], 1)
    ratio = timings["one_after_another_s"] / timings["together_s"]
    return {**timings, "ranks": ranks, "together_vs_one_after_another": round(ratio, 2)}
