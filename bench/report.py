"""The figures of a ``bench/run.py --json`` file as the Markdown table of ``docs/performance.md``.

python bench/report.py run.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: (figure, summary key, unit or baseline measured in the same run, target)
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("MFCC extraction, decoding and store writing included", "mfcc_x_realtime", "× real time", "≥ 1000×"),
    ("MFCC features alone (audio decoded beforehand)", "mfcc_compute_only_x_realtime", "× real time", ""),
    ("MFCC batched vs one by one", "mfcc_batched_vs_sequential", "× one-by-one speed", ""),
    ("wav2vec2-large extraction (CPU, float32)", "w2v2_x_realtime", "× real time", "(GPU: ≥ 500×)"),
    ("wav2vec2-large length-bucketed vs one by one", "w2v2_batched_vs_sequential", "× one-by-one speed", ""),
    ("wav2vec2-large length-bucketed vs naive padded", "w2v2_bucketed_vs_naive", "× naive padded speed", ""),
    (
        "wav2vec2 bucketed vs one-by-one features, largest difference",
        "w2v2_batched_max_abs_diff",
        "float16 store values",
        "exact",
    ),
    ("Random reads, Zarr (1024-d float16)", "store_read_utts_per_s_zarr", "utterances/s", ""),
    ("Random reads, Zarr", "store_read_GB_per_s_zarr", "GB/s", ""),
    ("Random reads, Zarr, shipped vs array per utterance", "store_read_vs_per_utterance_zarr", "×", ""),
    ("Random reads, HDF5 (1024-d float16)", "store_read_utts_per_s_hdf5", "utterances/s", ""),
    ("Random reads, HDF5", "store_read_GB_per_s_hdf5", "GB/s", ""),
    ("Random reads, HDF5, shipped vs array per utterance", "store_read_vs_per_utterance_hdf5", "×", ""),
    ("Loader share of training, in memory, C = 512", "loader_fraction_c512", "of run time", "< 5 %"),
    ("Loader share of training, in memory, C = 128", "loader_fraction_c128", "of run time", "< 5 %"),
    ("Loader share of training, streamed from Zarr, C = 512", "loader_fraction_streaming_c512", "of run time", "< 5 %"),
    ("Seconds per epoch, C = 512, 1024-d (measured fold)", "cpu_epoch_s_c512", "s", ""),
    ("Seconds per epoch, C = 512, scaled to an IEMOCAP fold", "cpu_epoch_s_c512_iemocap", "s", ""),
    ("Seconds per epoch, C = 128, 1024-d (measured fold)", "cpu_epoch_s_c128", "s", ""),
    ("Seconds per epoch, C = 128, scaled to an IEMOCAP fold", "cpu_epoch_s_c128_iemocap", "s", ""),
    ("Cache-fed vs on-the-fly training, wav2vec2-large", "cache_vs_onthefly_w2v2", "× on-the-fly speed", "≥ 10×"),
    ("Cache-fed vs on-the-fly training, MFCC", "cache_vs_onthefly_mfcc", "× on-the-fly speed", "as measured"),
    ("Scale 1×/4×/16×: extraction seconds", "scale_extract_s", "s", "linear"),
    ("Scale: extraction time per utterance, 16× over 1×", "scale_extract_time_per_utt_ratio", "(1 = linear)", "≈ 1"),
    ("Scale: extraction memory growth", "scale_extract_rss_growth_mb", "MB over the start", "flat"),
    ("Scale 1×/4×/16×: read seconds", "scale_read_s", "s", "linear"),
    ("Scale: read time per utterance, 16× over 1×", "scale_read_time_per_utt_ratio", "(1 = linear)", "≈ 1"),
    ("Scale: read memory growth", "scale_read_rss_growth_mb", "MB over the start", "flat"),
    (
        "Folds trained together (2 processes) vs one after another, CPU",
        "sweep_ratio",
        "× one-after-another speed",
        "ratio",
    ),
)


def _format(value: Any, key: str) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, list):
        return " / ".join(_format(v, key) for v in value)
    if key.startswith("loader_fraction"):
        return f"{100 * value:.2f} %"
    if isinstance(value, float) and abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:g}"


def table(summary: dict[str, Any]) -> str:
    """Markdown table of the summary's figures (rows whose key the summary lacks are left out)."""
    lines = ["| figure | value | unit / baseline | target |", "|---|---:|---|---|"]
    lines += [
        f"| {label} | {_format(summary[key], key)} | {unit} | {target} |"
        for label, key, unit, target in ROWS
        if key in summary
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json_file", type=Path, help="written by bench/run.py --json")
    args = parser.parse_args(argv)
    print(table(json.loads(args.json_file.read_text())["summary"]))


if __name__ == "__main__":
    main()
