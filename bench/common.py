"""Helpers shared by the benchmarks: IEMOCAP-like corpora and stores, clocks, memory, machine.

Corpora follow IEMOCAP's length distribution (5531 utterances, mean ≈ 4.5 s, about 7 h,
longest 34.1 s) with the audio of :func:`featurestore.synthetic.synth_utterance`, one wav
per utterance as in IEMOCAP's ``sentences/wav`` folders, and labels cycling over four
emotions, two expressions, five sessions and two speakers per session, so that even a
few dozen utterances make complete leave-one-session-out folds.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shutil
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.manifest import Manifest

IEMOCAP_UTTERANCES = 5531
IEMOCAP_LONGEST_S = 34.1
SAMPLE_RATE = 16000
EMOTIONS = ("neutral", "happy", "angry", "sad")


def iemocap_like_seconds(count: int, rng: np.random.Generator, longest: float = IEMOCAP_LONGEST_S) -> np.ndarray:
    """Utterance lengths in seconds: a gamma with IEMOCAP's mean (4.5 s) and tail, in [0.6, ``longest``]."""
    return np.clip(rng.gamma(shape=2.2, scale=4.5 / 2.2, size=count), 0.6, longest)


def iemocap_like_frames(count: int, rng: np.random.Generator, rate: float = 50.0) -> np.ndarray:
    """Utterance lengths in frames at ``rate`` frames per second (see :func:`iemocap_like_seconds`)."""
    return np.maximum(1, (iemocap_like_seconds(count, rng) * rate).astype(int))


def corpus_row(index: int, utt_id: str, path: str, seconds: float) -> dict[str, Any]:
    """The manifest row of utterance ``index``: labels cycle so that every fold sees every class."""
    session = 1 + index % 5
    gender = "FM"[(index // 5) % 2]
    return {
        "utt_id": utt_id,
        "path": path,
        "duration": round(float(seconds), 6),
        "emotion": EMOTIONS[index % 4],
        "expression": ("acted", "spontaneous")[(index // 4) % 2],
        "speaker": f"Ses{session:02d}{gender}",
        "gender": gender,
        "session": f"Session{session}",
        "corpus": "bench",
    }


def make_corpus(
    root: str | os.PathLike,
    count: int,
    seed: int = 0,
    longest: float = IEMOCAP_LONGEST_S,
    include_longest: bool = True,
    workers: int | None = None,
) -> Manifest:
    """Write ``count`` wavs with IEMOCAP's lengths under ``root`` and return their manifest.

    With ``include_longest`` the first utterance lasts exactly ``longest`` seconds (IEMOCAP's
    longest is 34.1 s), so the slowest case is always in the corpus.
    """
    import soundfile as sf

    from featurestore.synthetic import synth_utterance

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    seconds = iemocap_like_seconds(count, np.random.default_rng(seed), longest)
    if include_longest and count:
        seconds[0] = longest
    seconds = np.round(seconds * SAMPLE_RATE) / SAMPLE_RATE
    rows = [corpus_row(i, f"utt{i:05d}", str(root / f"utt{i:05d}.wav"), s) for i, s in enumerate(seconds)]

    def write(i: int) -> None:
        row = rows[i]
        wave = synth_utterance(
            row["emotion"], row["expression"], seconds[i], SAMPLE_RATE, seed * 100_003 + i, row["gender"]
        )
        sf.write(row["path"], wave, SAMPLE_RATE, subtype="PCM_16")

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(write, range(count)))
    return Manifest(rows, source=f"bench corpus {root}")


def repeat_manifest(manifest: Manifest, times: int) -> Manifest:
    """``times`` copies of every row (ids suffixed ``~k``), pointing to the same audio files."""
    return Manifest(
        ({**row, "utt_id": f"{row['utt_id']}~{k}"} for k in range(times) for row in manifest),
        source=f"{manifest.source} x{times}",
    )


def random_manifest(frames: np.ndarray, rate: float = 50.0) -> Manifest:
    """Labelled rows for features without audio behind them (``/bench/uttNNNNN.wav``)."""
    return Manifest(corpus_row(i, f"utt{i:05d}", f"/bench/utt{i:05d}.wav", n / rate) for i, n in enumerate(frames))


def write_features(
    path: str | os.PathLike,
    manifest: Manifest,
    items: Iterable[tuple[str, np.ndarray]],
    dim: int,
    dtype: str = "float16",
    batch: int = 64,
) -> None:
    """A one-layer store in the shipped layout holding ``(frames, dim)`` arrays, written ``batch`` at a time."""
    from featurestore.store import StoreWriter

    with StoreWriter(
        fresh_store(path), manifest, {"feature": "bench", "dim": dim}, dtype, dim=dim, num_layers=1, frame_rate=50.0
    ) as writer:
        pending: list[tuple[str, np.ndarray]] = []
        for utt_id, array in items:
            pending.append((utt_id, np.asarray(array, dtype=dtype)[None]))
            if len(pending) == batch:
                writer.write(pending)
                pending = []
        writer.write(pending)


def write_random_store(path: str | os.PathLike, frames: np.ndarray, dim: int, rng: np.random.Generator) -> Manifest:
    """A float16 store of random ``dim``-d features, ``frames[i]`` frames for labelled row ``i``; its manifest."""
    manifest = random_manifest(frames)
    write_features(
        path, manifest, ((u, rng.standard_normal((int(n), dim))) for u, n in zip(manifest.ids(), frames)), dim
    )
    return manifest


def fresh_store(path: str | os.PathLike) -> Path:
    """``path`` with no store at it: a store left by an earlier run in a kept ``--workdir``
    would make an extraction a resume with nothing to do, and its timing meaningless."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    for leftover in (path.with_name(path.name + ".lock"), path):
        if leftover.is_file():
            leftover.unlink()
    return path


@contextlib.contextmanager
def clock(device: Any = None) -> Iterator[dict[str, Any]]:
    """``with clock() as c: ...`` then ``c["s"]`` holds the wall-clock seconds.

    On a CUDA ``device`` the clock waits for queued GPU work at both ends and
    ``c["peak_gpu_mb"]`` holds the block's peak allocated GPU memory (None elsewhere).
    """
    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    result: dict[str, Any] = {"s": 0.0, "peak_gpu_mb": None}
    start = time.perf_counter()
    try:
        yield result
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        result["s"] = time.perf_counter() - start


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@contextlib.contextmanager
def peak_memory() -> Iterator[dict[str, float | None]]:
    """Peak resident memory (MB) of this process during the block, and its growth over the start.

    Linux: the peak (``VmHWM``) is reset through ``/proc/self/clear_refs`` first, so
    consecutive blocks are measured separately. Elsewhere both values are None.
    """
    result: dict[str, float | None] = {"peak_rss_mb": None, "rss_growth_mb": None}
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = _status_kb("VmRSS")
    except OSError:
        before = None
    try:
        yield result
    finally:
        peak = _status_kb("VmHWM") if before is not None else None
        if peak is not None:
            result["peak_rss_mb"] = round(peak / 1024, 1)
            result["rss_growth_mb"] = round((peak - before) / 1024, 1)


def ssl_model(workdir: str | os.PathLike, size: str = "large") -> Path:
    """Folder of a random-weight wav2vec2 model of ``size`` (``large``: wav2vec2-large-960h), built once."""
    from featurestore.features.random_models import save_random_ssl_model

    folder = Path(workdir) / f"wav2vec2-{size}-random"
    if not (folder / "model.safetensors").is_file():
        save_random_ssl_model(folder, kind="wav2vec2", size=size)
    return folder


def machine_info() -> dict[str, Any]:
    """CPU, core count, load, library versions, threads, GPU (when there is one) and the date."""
    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
