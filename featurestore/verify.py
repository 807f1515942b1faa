"""Checking a store (``sermtl verify``) and summarising it (``sermtl info``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.store.reader import FeatureStore, open_store
from featurestore.store.writer import store_fingerprint

_BLOCK_FRAMES = 1 << 16
#: Frames an entry may differ from ``duration × frame_rate`` (edge rounding of the framing).
FRAME_TOLERANCE = 2


@dataclasses.dataclass
class VerifyResult:
    """Outcome of :func:`verify_store`; ``ok`` only when nothing is wrong or missing."""

    path: Path
    checked: int
    problems: list[str]
    missing: list[str]
    skipped: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing


def _finite_frames(store: FeatureStore, end: int) -> np.ndarray:
    """Per frame: True when every value of every layer is finite (read block by block)."""
    finite = np.ones(end, dtype=bool)
    for layer in range(store.num_layers):
        for start in range(0, end, _BLOCK_FRAMES):
            block = store.read_frames(layer, start, min(end, start + _BLOCK_FRAMES))
            finite[start : start + len(block)] &= np.isfinite(block).all(axis=1)
    return finite


def verify_store(path: str | Path) -> VerifyResult:
    """Check every entry of a store: bounds, overlaps, frame counts, finite values,
    fingerprint, and which manifest rows are missing."""
    with open_store(path) as store:
        problems: list[str] = []
        attrs = store.attrs
        expected_fp = store_fingerprint({"feature": attrs.get("feature"), "dtype": attrs.get("dtype")})
        if attrs.get("fingerprint") != expected_fp:
            problems.append(f"fingerprint {attrs.get('fingerprint')} does not match the stored config ({expected_fp})")
        if attrs.get("dtype") != store.dtype.name:
            problems.append(f"features are {store.dtype.name}, attributes say {attrs.get('dtype')}")
        total = store.stored_frames
        entries = sorted((offset, frames, utt_id) for utt_id, (offset, frames) in store.entries().items())
        frame_rate = float(attrs.get("frame_rate") or 0.0)
        previous_end = 0
        for offset, frames, utt_id in entries:
            if frames <= 0 or offset < 0 or offset + frames > total:
                problems.append(f"{utt_id}: entry ({offset}, {frames}) outside the {total} stored frames")
                continue
            if offset < previous_end:
                problems.append(f"{utt_id}: frames overlap the previous entry")
            previous_end = max(previous_end, offset + frames)
            duration = store.manifest[utt_id]["duration"]
            if duration and frame_rate and abs(frames - duration * frame_rate) > FRAME_TOLERANCE + 1e-3 * duration * frame_rate:
                problems.append(f"{utt_id}: {frames} frames for {duration:.2f} s (expected about {duration * frame_rate:.0f})")
        finite = _finite_frames(store, previous_end)
        for offset, frames, utt_id in entries:
            if offset + frames <= previous_end and not finite[offset : offset + frames].all():
                problems.append(f"{utt_id}: NaN or infinite values")
        return VerifyResult(Path(path), len(entries), problems, store.pending_ids(), store.skipped())


def store_summary(path: str | Path) -> dict[str, Any]:
    """Counts per label, dims, frames, size on disk and config of a store (``sermtl info``)."""
    with open_store(path) as store:
        manifest = store.manifest
        frames = [store.num_frames(u) for u in store.ids()]
        label_columns = [c for c in ("emotion", "expression", "speaker", "gender", "session", "corpus") if c in manifest.columns]
        return {
            "path": str(store.path),
            "format": store.format,
            "utterances": len(store),
            "manifest_rows": len(store.full_manifest),
            "missing": len(store.pending_ids()),
            "skipped": store.skipped(),
            "layers": store.num_layers,
            "dim": store.dim,
            "dtype": store.dtype.name,
            "frames": {
                "total": int(sum(frames)),
                "min": int(min(frames, default=0)),
                "mean": float(np.mean(frames)) if frames else 0.0,
                "max": int(max(frames, default=0)),
            },
            "audio_hours": manifest.total_duration() / 3600,
            "size_bytes": store.size_on_disk(),
            "counts": {c: manifest.counts(c) for c in label_columns},
            "config": store.attrs,
        }
