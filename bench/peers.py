"""sermtl's extraction against the field's fastest tools, whole processes side by side.

On one generated corpus of real-length utterances (``--count`` wavs at 22.05 kHz, resampled
to 16 kHz by every tool, lengths a gamma around ``--mean-seconds``), each row runs as its own
process and is timed from start to exit, its peak memory read from the kernel's accounting
of that process (``wait4``'s ``ru_maxrss``, which for a child of this small parent is the
child's own peak):

- ``import torch``: the floor every torch-based tool starts from;
- ``sermtl extract --feature mfcc`` and ``--feature fbank`` into Zarr;
- lhotse's ``compute_and_store_features`` (MFCC and Fbank, lilcom storage, one job);
- a plain loop: soundfile + soxr + kaldi-native-fbank (80 bins) + h5py, one dataset per
  utterance.

Each row is run ``--repeats`` times in turn (rows interleaved, so background load hits all
alike) and its best wall time kept. The figures go to stdout as a table and, as JSON, to
``--out``. Peers that are not installed (``pip install 'sermtl[bench]'``) are reported as
missing, not failed. ``--quick``: 40 utterances, one repeat (CI).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO))
SOURCE_RATE = 22050

#: lhotse's own pipeline: recordings → cuts → features computed and stored (lilcom), one job.
LHOTSE_SCRIPT = """
import sys
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, Mfcc, MfccConfig, RecordingSet, Recording
paths, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]
recordings = RecordingSet.from_recordings(Recording.from_file(p.strip()) for p in open(paths))
cuts = CutSet.from_manifests(recordings=recordings).resample(16000)
extractor = Mfcc(MfccConfig(num_ceps=40, num_filters=40)) if kind == "mfcc" else Fbank(FbankConfig(num_filters=80))
cuts.compute_and_store_features(extractor, storage_path=out, storage_type=LilcomChunkyWriter, num_jobs=1)
"""

#: The shortest honest loop with the fastest CPU fbank: decode, resample, fbank, one HDF5 dataset each.
KALDI_NATIVE_SCRIPT = """
import sys
import h5py, kaldi_native_fbank as knf, numpy as np, soundfile as sf, soxr
paths, out = sys.argv[1], sys.argv[2]
options = knf.FbankOptions()
options.frame_opts.dither = 0.0
options.mel_opts.num_bins = 80
with h5py.File(out, "w") as store:
    for i, path in enumerate(open(paths)):
        wave, rate = sf.read(path.strip(), dtype="float32")
        wave = soxr.resample(wave, rate, 16000)
        fbank = knf.OnlineFbank(options)
        fbank.accept_waveform(16000, wave.tolist())
        fbank.input_finished()
        frames = np.stack([fbank.get_frame(k) for k in range(fbank.num_frames_ready)])
        store.create_dataset(f"utt{i:05d}", data=frames)
"""


def make_corpus(root: Path, count: int, mean_seconds: float, seed: int = 0) -> Path:
    """``count`` wavs at 22.05 kHz (lengths: a gamma with mean ``mean_seconds``, in [0.5, 12] s)
    and their CSV manifest; returns the manifest's path."""
    import soundfile as sf

    from bench.common import EMOTIONS
    from featurestore.synthetic import synth_utterance

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.gamma(shape=4.0, scale=mean_seconds / 4.0, size=count), 0.5, 12.0)
    rows = []
    for i, length in enumerate(seconds):
        path = root / f"utt{i:05d}.wav"
        emotion = EMOTIONS[i % len(EMOTIONS)]
        wave = synth_utterance(emotion, "acted", float(length), SOURCE_RATE, seed * 100_003 + i, "FM"[i % 2])
        sf.write(path, wave, SOURCE_RATE, subtype="PCM_16")
        rows.append({"utt_id": f"utt{i:05d}", "path": str(path), "emotion": emotion, "speaker": f"spk{i % 10}"})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "paths.txt").write_text("".join(f"{row['path']}\n" for row in rows))
    return manifest


def run_measured(argv: list[str], cwd: Path) -> dict[str, float]:
    """Run ``argv`` to its end: wall seconds and peak resident memory (MiB) of that process."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} … failed ({child.returncode}): {errors[-2000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def _installed(module: str) -> bool:
    found = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return found.returncode == 0


def rows_to_run(work: Path, manifest: Path) -> dict[str, list[str] | None]:
    """Every row's command line (``None``: its tool is not installed)."""
    python, paths = sys.executable, str(manifest.parent / "paths.txt")
    lhotse = _installed("lhotse") and _installed("lilcom")
    knf = _installed("kaldi_native_fbank")
    sermtl = [python, str(REPO / "cli.py"), "extract", "--manifest", str(manifest), "--device", "cpu", "-q"]
    return {
        "import torch": [python, "-c", "import torch"],
        "sermtl mfcc": [*sermtl, "--feature", "mfcc", "--store", str(work / "sermtl_mfcc.zarr")],
        "lhotse mfcc": [python, "-c", LHOTSE_SCRIPT, paths, str(work / "lhotse_mfcc"), "mfcc"] if lhotse else None,
        "sermtl fbank": [*sermtl, "--feature", "fbank", "--store", str(work / "sermtl_fbank.zarr")],
        "lhotse fbank": [python, "-c", LHOTSE_SCRIPT, paths, str(work / "lhotse_fbank"), "fbank"] if lhotse else None,
        "kaldi-native-fbank loop": [python, "-c", KALDI_NATIVE_SCRIPT, paths, str(work / "knf.h5")] if knf else None,
    }


def _clean(work: Path) -> None:
    for path in work.iterdir():
        if path.name != "corpus":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def run(work: Path, count: int, mean_seconds: float, repeats: int) -> dict[str, Any]:
    """Make the corpus under ``work`` and run every row ``repeats`` times, interleaved."""
    manifest = make_corpus(work / "corpus", count, mean_seconds)
    commands = rows_to_run(work, manifest)
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for name, argv in commands.items():
            if argv is None:
                continue
            _clean(work)  # every extraction starts from nothing
            measured = run_measured(argv, work)
            kept = best.get(name)
            if kept is None or measured["wall_s"] < kept["wall_s"]:
                best[name] = measured
            else:
                kept["peak_rss_mib"] = max(kept["peak_rss_mib"], measured["peak_rss_mib"])
    audio_s = sum(float(row["duration"]) for row in _durations(manifest))
    return {"utterances": count, "audio_s": audio_s, "repeats": repeats, "rows": best, **ratios(best)}


def _durations(manifest: Path) -> list[dict[str, Any]]:
    import soundfile as sf

    with open(manifest) as handle:
        return [{"duration": sf.info(row["path"]).duration} for row in csv.DictReader(handle)]


def ratios(rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The headline figures: peers' wall over sermtl's (higher: sermtl faster) and each
    sermtl row's peak memory over ``import torch``'s."""

    def wall_ratio(peer: str, ours: str) -> float | None:
        if peer in rows and ours in rows:
            return round(rows[peer]["wall_s"] / rows[ours]["wall_s"], 2)
        return None

    torch_mib = rows["import torch"]["peak_rss_mib"]
    return {
        "speedup": {
            "lhotse mfcc / sermtl mfcc": wall_ratio("lhotse mfcc", "sermtl mfcc"),
            "lhotse fbank / sermtl fbank": wall_ratio("lhotse fbank", "sermtl fbank"),
            "kaldi-native-fbank loop / sermtl fbank": wall_ratio("kaldi-native-fbank loop", "sermtl fbank"),
        },
        "memory_over_import_torch": {
            name: round(row["peak_rss_mib"] / torch_mib, 2) for name, row in rows.items() if name != "import torch"
        },
    }


def table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table (wall, peak memory, memory over ``import torch``)."""
    lines = ["| command | wall s | peak MiB | memory / import torch |", "|---|---:|---:|---:|"]
    over = result["memory_over_import_torch"]
    for name, row in result["rows"].items():
        ratio = f"{over[name]:.2f}" if name in over else "1.00"
        lines.append(f"| {name} | {row['wall_s']:.2f} | {row['peak_rss_mib']:.0f} | {ratio} |")
    lines += ["", *(f"{name}: {value}x" for name, value in result["speedup"].items() if value is not None)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 utterances, one repeat (CI).")
    parser.add_argument("--count", type=int, default=535, help="Utterances in the corpus.")
    parser.add_argument("--mean-seconds", type=float, default=2.0, help="Mean utterance length.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per row; the best wall time is kept.")
    parser.add_argument("--workdir", type=Path, help="Where the corpus and stores go (default: a temporary folder).")
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    args = parser.parse_args(argv)
    count, repeats = (40, 1) if args.quick else (args.count, args.repeats)
    with tempfile.TemporaryDirectory(prefix="sermtl-peers-") as temporary:
        work = args.workdir or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        result = run(work, count, args.mean_seconds, repeats)
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
