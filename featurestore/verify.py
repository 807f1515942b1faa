"""Checking a store (``sermtl verify``) and summarising it (``sermtl info``)."""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.audio import audio_exists, audio_identity, audio_stat_key
from featurestore.errors import describe_error
from featurestore.store.creation import store_fingerprint
from featurestore.store.reader import FeatureStore, open_store, rows_inside
from featurestore.store.writer import frames_checksum

_BLOCK_FRAMES = 1 << 16
#: Frames an entry may differ from ``duration × frame_rate`` (edge rounding of the framing).
FRAME_TOLERANCE = 2


@dataclasses.dataclass
class VerifyResult:
    """Outcome of :func:`verify_store`; ``ok`` only when nothing is wrong or missing.

    ``problems`` lists every finding, one line each; ``bad_ids`` are the utterances whose
    stored features are wrong, or may be (what ``extract --repair`` recomputes);
    ``duration_mismatch_ids`` those whose only finding is a frame count that disagrees with
    the manifest's duration while their checksum is known and matches (the manifest is
    wrong: recomputing gives the same count, so repair leaves them). Without a known
    checksum such an entry is in ``bad_ids``: a damaged index could not be told apart.
    """

    path: Path
    checked: int
    problems: list[str]
    missing: list[str]
    skipped: list[dict[str, Any]]
    bad_ids: list[str] = dataclasses.field(default_factory=list)
    duration_mismatch_ids: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing


def _store_problems(store: FeatureStore) -> list[str]:
    """Store-level findings: damage found on opening, fingerprint, dtype and shape against
    the attributes, index length."""
    attrs = store.attrs
    problems = list(store.problems)
    expected_fp = store_fingerprint({"feature": attrs.get("feature"), "dtype": attrs.get("dtype")})
    if attrs.get("fingerprint") != expected_fp:
        problems.append(f"fingerprint {attrs.get('fingerprint')} does not match the stored config ({expected_fp})")
    if attrs.get("dtype") != store.dtype.name:
        problems.append(f"features are {store.dtype.name}, attributes say {attrs.get('dtype')}")
    for key, actual in (("num_layers", store.num_layers), ("dim", store.dim)):
        if attrs.get(key) != actual:
            problems.append(f"features have {key} {actual}, attributes say {attrs.get(key)}")
    if store.index_rows < len(store.full_manifest):
        problems.append(f"index has {store.index_rows} rows for {len(store.full_manifest)} manifest rows")
    return problems


def _overlap_problems(entries: list[tuple[int, int, str]]) -> dict[str, str]:
    """Entries (sorted by offset) whose frames overlap an earlier entry's."""
    found: dict[str, str] = {}
    previous_end, previous_id = 0, None
    for offset, frames, utt_id in entries:
        if offset < previous_end:
            found[utt_id] = f"frames overlap those of {previous_id}"
        if offset + frames > previous_end:
            previous_end, previous_id = offset + frames, utt_id
    return found


def _duration_problems(store: FeatureStore, entries: list[tuple[int, int, str]]) -> dict[str, str]:
    """Entries whose frame count disagrees with their duration × the store's frame rate."""
    found: dict[str, str] = {}
    frame_rate = float(store.attrs.get("frame_rate") or 0.0)
    for _, frames, utt_id in entries:
        duration = store.full_manifest[utt_id]["duration"]
        expected = (duration or 0.0) * frame_rate
        if expected and abs(frames - expected) > FRAME_TOLERANCE + 1e-3 * expected:
            found[utt_id] = f"{frames} frames for {duration:.2f} s (expected about {expected:.0f})"
    return found


def _read_part(store: FeatureStore, layer: int, start: int, stop: int) -> np.ndarray | str:
    """Frames ``start:stop`` of one layer, or the reason they cannot be read."""
    try:
        return store.read_frames(layer, start, stop)
    except Exception as exc:  # a damaged chunk: zarr/h5py raise many types
        return f"cannot read its frames ({describe_error(exc)})"


def _value_problems(store: FeatureStore, entries: list[tuple[int, int, str]]) -> dict[str, str]:
    """Per-entry findings from the values, read block by block: unreadable frames,
    NaN/inf, and a CRC-32 that differs from the one recorded at write time."""
    found: dict[str, str] = {}
    if not entries:
        return found
    checksums = store.checksums()
    crc = dict.fromkeys(checksums, 0)
    offsets = [offset for offset, _, _ in entries]
    longest = max(frames for _, frames, _ in entries)
    end = max(offset + frames for offset, frames, _ in entries)
    for layer in range(store.num_layers):
        for start in range(0, end, _BLOCK_FRAMES):
            stop = min(end, start + _BLOCK_FRAMES)
            block = _read_part(store, layer, start, stop)
            # one test for the whole block; each entry's own only when the block holds a NaN/inf
            finite = isinstance(block, np.ndarray) and bool(np.isfinite(block).all())
            first = bisect.bisect_left(offsets, start - longest)
            for offset, frames, utt_id in entries[first : bisect.bisect_left(offsets, stop)]:
                lo, hi = max(offset, start), min(offset + frames, stop)
                if lo >= hi or utt_id in found:
                    continue
                part = (
                    block[lo - start : hi - start]
                    if isinstance(block, np.ndarray)
                    else _read_part(store, layer, lo, hi)
                )
                if isinstance(part, str):
                    found[utt_id] = part
                elif not finite and not np.isfinite(part).all():
                    found[utt_id] = "NaN or infinite values"
                elif utt_id in crc:
                    crc[utt_id] = frames_checksum(part, crc[utt_id])
    for utt_id, value in crc.items():
        if utt_id not in found and value != checksums[utt_id]:
            found[utt_id] = "checksum mismatch: the stored values changed after they were written"
    return found


@dataclasses.dataclass
class AudioCheck:
    """Outcome of :func:`check_audio`.

    ``changed``: ``{utt_id: reason}`` of the entries whose audio file differs from the one
    their features were computed from; ``confirmed``: ``{utt_id: stat key}`` of the entries
    whose file had to be hashed (its state differed from the recorded one, or none was
    recorded) and matched its signature, with the file's current
    :func:`~featurestore.decode.stat_key` where it is settled, for a writer to record
    (:meth:`~featurestore.store.writer.StoreWriter.record_audio_stat`).
    """

    changed: dict[str, str]
    confirmed: dict[str, int]


def check_audio(store: FeatureStore, utt_ids: Iterable[str] | None = None) -> AudioCheck:
    """Check the audio files of entries (of ``utt_ids``, default all) against the signatures
    recorded when their features were computed.

    A file whose :func:`~featurestore.audio.audio_stat_key` (size, modification and change
    times, inode: one ``stat``) equals the one recorded when its signature was last found
    right has not been written since, and is not read. Any other file is hashed
    (:func:`~featurestore.audio.audio_identity`: its size and first and last 4 KiB) and
    compared with the signature. Entries without a recorded signature, or whose file is
    absent, are not judged. Each file is looked at once, however many entries it holds.
    """
    recorded = store.audio_signatures()
    known = store.audio_stat_keys()
    rows = store.full_manifest
    stats: dict[str, int | None] = {}
    hashed: dict[str, tuple[int | None, int | None]] = {}
    check = AudioCheck({}, {})
    for utt_id in store.ids() if utt_ids is None else utt_ids:
        signature = recorded.get(utt_id)
        if signature is None:
            continue
        path = rows[utt_id]["path"]
        if path not in stats:
            stats[path] = audio_stat_key(path)
        if stats[path] is not None and stats[path] == known.get(utt_id):
            continue  # not written since its signature was last found right
        if path not in hashed:
            exists = stats[path] is not None or audio_exists(path)
            hashed[path] = audio_identity(path) if exists else (None, None)
        current, key = hashed[path]
        if current is None:
            continue
        if current != signature:
            check.changed[utt_id] = f"its audio {path} changed since its features were extracted"
        elif key is not None:
            check.confirmed[utt_id] = key
    return check


def audio_changes(store: FeatureStore, utt_ids: Iterable[str] | None = None) -> dict[str, str]:
    """Entries (of ``utt_ids``, default all) whose audio file is present but differs from the
    one their features were computed from (:func:`check_audio`'s ``changed``)."""
    return check_audio(store, utt_ids).changed


def verify_store(path: str | Path) -> VerifyResult:
    """Check a store and every entry in it.

    Store level: damage found on opening (an unreadable checksum array), fingerprint,
    dtype, layers and dim against the attributes, index rows against the manifest. Per
    entry: bounds, overlaps, frame count against duration, readable frames, finite values
    and the CRC-32 recorded at write time; the audio file, where it is present, against the
    signature recorded at write time. Also lists manifest rows without features
    (``missing``) and skipped items.
    """
    with open_store(path) as store:
        return check_store(store)


def check_store(store: FeatureStore) -> VerifyResult:
    """:func:`verify_store` on a store that is already open (e.g. a writer's :meth:`read_view`)."""
    problems = _store_problems(store)
    entries = sorted((offset, frames, utt_id) for utt_id, (offset, frames) in store.entries().items())
    total = store.stored_frames
    rows = np.array([(o, f) for o, f, _ in entries], dtype=np.int64).reshape(-1, 2)
    inside = [entry for entry, ok in zip(entries, rows_inside(rows[:, 0], rows[:, 1], total)) if ok]
    bad = {u: f"entry ({o}, {f}) outside the {total} stored frames" for o, f, u in sorted(set(entries) - set(inside))}
    bad.update(_overlap_problems(inside))
    for utt_id, problem in {**audio_changes(store), **_value_problems(store, inside)}.items():
        bad.setdefault(utt_id, problem)
    counts = _duration_problems(store, inside)
    ids = [u for u in store.ids() if u in bad or u in counts]
    problems += [f"{u}: {'; '.join(p for p in (counts.get(u), bad.get(u)) if p)}" for u in ids]
    # A wrong frame count is the manifest's fault only when a matching checksum vouches for the
    # stored entry; without one, a damaged index reads the same, so the entry is recomputed.
    vouched = store.checksums()
    repair = [u for u in ids if u in bad or u not in vouched]
    return VerifyResult(
        store.path,
        len(entries),
        problems,
        store.pending_ids(),
        store.skipped(),
        bad_ids=repair,
        duration_mismatch_ids=[u for u in ids if u not in repair],
    )


def store_summary(path: str | Path) -> dict[str, Any]:
    """Counts per label, dims, frames, size on disk and config of a store (``sermtl info``)."""
    with open_store(path) as store:
        manifest = store.manifest
        frames = [store.num_frames(u) for u in store.ids()]
        label_columns = [
            c for c in ("emotion", "expression", "speaker", "gender", "session", "corpus") if c in manifest.columns
        ]
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


def format_summary(summary: dict[str, Any]) -> str:
    """``sermtl info``'s table of a :func:`store_summary`."""
    frames = summary["frames"]
    feature = summary["config"].get("feature", {})
    lines = [
        f"store     {summary['path']} ({summary['format']}, {summary['size_bytes'] / 2**20:.1f} MiB)",
        f"feature   {feature.get('feature')} {feature.get('model', '')}".rstrip(),
        f"shape     {summary['layers']} layer(s) x {summary['dim']} dims, {summary['dtype']}",
        f"entries   {summary['utterances']} of {summary['manifest_rows']} manifest rows "
        f"({summary['missing']} missing, {len(summary['skipped'])} skipped), {summary['audio_hours']:.2f} h",
        f"frames    total {frames['total']}, min {frames['min']}, mean {frames['mean']:.1f}, max {frames['max']}",
    ]
    for column, counts in summary["counts"].items():
        lines.append(f"{column:<9} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for item in summary["skipped"]:
        lines.append(f"skipped   {item['utt_id']}: {item['error']}")
    lines.append(
        f"fingerprint {summary['config'].get('fingerprint')}, sermtl {summary['config'].get('sermtl_version')}"
    )
    return "\n".join(lines)


def describe_verification(result: VerifyResult) -> str:
    """``sermtl verify``'s lines: each problem, missing and skipped entry, then the counts."""
    lines = [
        *(f"problem: {problem}" for problem in result.problems),
        *(f"missing: {utt_id}" for utt_id in result.missing),
        *(f"skipped: {item['utt_id']}: {item['error']}" for item in result.skipped),
        f"{result.path}: {result.checked} entries checked, {len(result.problems)} problem(s), "
        f"{len(result.missing)} missing",
    ]
    return "\n".join(lines)
