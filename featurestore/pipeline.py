"""The extraction stage: manifest → audio → features → store, batched and resumable.

Utterances still missing from the store are sorted by duration (longest first, so a
batch that does not fit in memory fails at once, not after hours) and cut into batches
of at most ``batch_seconds`` of padded audio and ``max_batch`` utterances. Audio is decoded
by a thread pool ahead of the extractor: the next batch, and more while the batches
decoded ahead hold at most 600 s of audio (:data:`AHEAD_SECONDS`). Each batch is committed to the
store as soon as it is computed, so an interrupted run loses at most one batch and the
next run goes on from there. With ``repair=True`` the entries of the manifest that
``verify`` finds wrong are forgotten first (under the writer's lock) and recomputed with
the missing ones.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from featurestore.audio import TARGET_SR, audio_duration, audio_identity, load_audio
from featurestore.errors import ConfigError, SermtlError, StoreError
from featurestore.extract_options import ExtractOptions
from featurestore.features.base import FeatureExtractor
from featurestore.manifest import Manifest
from featurestore.options import check_value
from featurestore.progress import progress_bar
from featurestore.store.writer import StoreWriter


@dataclasses.dataclass
class ExtractionReport:
    """What one ``extract`` run did."""

    store: Path
    stored: int = 0
    already_done: int = 0
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    repaired: list[str] = dataclasses.field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed: float = 0.0

    @property
    def realtime_factor(self) -> float:
        """Audio seconds processed per wall-clock second."""
        return self.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0


def plan_batches(durations: dict[str, float], batch_seconds: float, max_batch: int | None = None) -> list[list[str]]:
    """Group utterances, longest first, so that ``count × longest ≤ batch_seconds``.

    Sorting by length keeps padding small; an utterance longer than ``batch_seconds``
    gets a batch of its own.

    >>> plan_batches({"a": 1.0, "b": 3.0, "c": 2.9, "d": 0.5}, batch_seconds=6)
    [['b', 'c'], ['a', 'd']]
    """
    order = sorted(durations, key=lambda u: (-durations[u], u))
    batches: list[list[str]] = []
    current: list[str] = []
    for utt_id in order:
        longest = durations[current[0]] if current else durations[utt_id]
        full = max_batch is not None and len(current) >= max_batch
        if current and (full or (len(current) + 1) * longest > batch_seconds):
            batches.append(current)
            current = []
        current.append(utt_id)
    if current:
        batches.append(current)
    return batches


def planned_durations(manifest: Manifest, ids: Sequence[str], batch_seconds: float) -> dict[str, float]:
    """Seconds of each utterance, for batching and progress: the manifest's ``duration``,
    else measured (a segment's span, or the audio's header), so a manifest built without
    durations is not put into one batch; audio that cannot be measured gets a batch of
    its own (extraction then fails on it or skips it)."""
    durations = {}
    for utt_id in ids:
        row = manifest[utt_id]
        seconds = row["duration"]
        if not seconds and row["end"] is not None:
            seconds = row["end"] - (row["start"] or 0.0)
        if not seconds:
            try:
                seconds = audio_duration(row["path"]) - (row["start"] or 0.0)
            except SermtlError:
                seconds = batch_seconds
        durations[utt_id] = float(max(seconds, 0.0))
    return durations


def _load_row(row: dict, max_duration: float | None) -> tuple[np.ndarray, tuple[int | None, int | None]]:
    """A row's decoded wave, ``(samples,)`` float32 at 16 kHz, and its file's signature and
    state (:func:`~featurestore.audio.audio_identity`), taken before decoding: a file
    changed in between is then refused by the next run, never recorded as what it became."""
    identity = audio_identity(row["path"])
    wave = load_audio(row["path"], row["start"], row["end"], target_sr=TARGET_SR, max_duration=max_duration)
    return wave, identity


#: Audio seconds decoded ahead of the batch being extracted (38 MB of 16 kHz float32), beyond
#: the next batch, which is always decoded while one is extracted.
AHEAD_SECONDS = 600.0


def _prefetch(
    manifest: Manifest,
    batches: Sequence[list[str]],
    seconds: Mapping[str, float],
    workers: int,
    max_duration: float | None,
    ahead_seconds: float = AHEAD_SECONDS,
) -> Iterator[tuple[list[str], list[Future]]]:
    """Yield each batch with futures of its decoded waves and file signatures and states (see
    :func:`_load_row`), decoding early the next batch and more while the batches decoded
    ahead hold at most ``ahead_seconds`` of audio (``seconds``: each utterance's), so the
    audio held stays bounded however long the batches."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sermtl-audio") as pool:
        queue: collections.deque[tuple[list[str], list[Future], float]] = collections.deque()
        ahead = 0.0  # seconds of the queued batches after queue[0]
        try:
            for batch in batches:
                size = sum(seconds[u] for u in batch)
                # queue[0] is the next to extract; the rest (``ahead`` s), and this batch, are decoded ahead of it
                while len(queue) > 1 and ahead + size > ahead_seconds:
                    yield queue.popleft()[:2]
                    ahead -= queue[0][2]  # the new next one is no longer ahead
                ahead += size if queue else 0.0
                queue.append((batch, [pool.submit(_load_row, manifest[u], max_duration) for u in batch], size))
            while queue:
                yield queue.popleft()[:2]
        finally:
            for _, futures, _ in queue:
                for future in futures:
                    future.cancel()


def extract_to_store(
    manifest: Manifest,
    extractor: FeatureExtractor,
    store_path: str | Path,
    *,
    format: str | None = None,
    dtype: str = "float32",
    batch_seconds: float = 200.0,
    max_batch: int | None = None,
    on_error: str = ExtractOptions.on_error,
    workers: int = ExtractOptions.workers,
    progress: bool = True,
    on_item_error: Callable[[str], None] | None = None,
    repair: bool = False,
    max_duration: float | None = ExtractOptions.max_duration,
) -> ExtractionReport:
    """Compute ``extractor`` features for every manifest row missing from the store.

    Re-running with the same arguments only does what is missing. Entries whose audio file
    changed since they were extracted are refused in one line (``repair`` recomputes them).

    Parameters
    ----------
    manifest : Manifest
        The utterances to extract.
    extractor : FeatureExtractor
        Computes the features; its ``describe()`` must match the store's, if it exists.
    store_path : str or Path
        The store, created or resumed.
    format : str or None
        Backend of a new store (``zarr``, ``hdf5``); ``None``: from the path's suffix.
    dtype : str
        Storage dtype of the features.
    batch_seconds : float
        Most padded audio seconds per batch (see :func:`plan_batches`).
    max_batch : int or None
        Most utterances per batch; ``None``: no cap.
    on_error : str
        ``"fail"`` stops at the first bad item with a :class:`SermtlError` naming it
        (everything committed before stays); ``"skip"`` records the item in the store's
        report and goes on.
    workers : int
        Threads decoding audio ahead of the extractor.
    progress : bool
        Show a progress bar in audio seconds.
    on_item_error : Callable[[str], None] or None
        Gets a line for each skipped item.
    repair : bool
        First check the store like :func:`~featurestore.verify.verify_store`, once the
        writer holds its lock, and recompute the manifest's entries whose stored features it
        finds wrong (the ones rewritten are listed in ``report.repaired``); entries whose
        only finding is a frame count against the duration, and whose checksum is known and
        matches, are reported by ``verify`` but left, since recomputing gives the same count.
    max_duration : float or None
        Audio longer than this many seconds is not decoded: it fails or is skipped like any
        bad item; ``None``: no cap.

    Returns
    -------
    ExtractionReport
        What the run stored, found done, skipped and repaired.
    """
    _check_options(on_error, max_batch, max_duration, batch_seconds)
    started = time.perf_counter()
    report = ExtractionReport(store=Path(store_path))
    # Opened here, not in a helper, so that the warnings about damage it repairs on opening
    # point at this call and at its caller.
    with StoreWriter(
        store_path,
        manifest,
        extractor.describe(),
        dtype=dtype,
        dim=extractor.dim,
        num_layers=extractor.num_layers,
        frame_rate=extractor.frame_rate,
        format=format,
    ) as writer:
        to_repair = _forget_or_refuse_stale(writer, manifest, repair)
        todo = writer.pending(manifest.ids())
        report.already_done = len(manifest) - len(todo)
        if not todo:
            report.elapsed = time.perf_counter() - started
            return report
        run = _ExtractionRun(writer, extractor, manifest, report, on_error, on_item_error)
        _extract_pending(
            run,
            todo,
            batch_seconds=batch_seconds,
            max_batch=max_batch,
            workers=workers,
            max_duration=max_duration,
            progress=progress,
        )
    report.repaired = [u for u in to_repair if u in run.written]
    report.elapsed = time.perf_counter() - started
    return report


def _check_options(on_error: str, max_batch: int | None, max_duration: float | None, batch_seconds: float) -> None:
    """Refuse an option value of :func:`extract_to_store` that its declaration
    (:class:`~featurestore.extract_options.ExtractOptions`) does not allow, naming the flag."""
    for name, value in (
        ("on_error", on_error),
        ("max_batch", max_batch),
        ("max_duration", max_duration),
        ("batch_seconds", batch_seconds),
    ):
        check_value(ExtractOptions, name, value)


def _forget_or_refuse_stale(writer: StoreWriter, manifest: Manifest, repair: bool) -> list[str]:
    """With ``repair``, forget the entries of ``manifest`` that ``verify`` finds wrong (they
    become pending) and return their ids; without, refuse entries whose audio changed."""
    if not repair:
        _refuse_changed_audio(writer, manifest)
        return []
    to_repair = _entries_to_repair(writer, manifest)
    writer.invalidate(to_repair)
    return to_repair


@dataclasses.dataclass
class _ExtractionRun:
    """One run's batches into an open writer: decoded, extracted, checked and committed,
    each bad item failing the run or skipped (``on_error``), counted in ``report``."""

    writer: StoreWriter
    extractor: FeatureExtractor
    manifest: Manifest
    report: ExtractionReport
    on_error: str
    on_item_error: Callable[[str], None] | None
    #: Ids committed by this run.
    written: set[str] = dataclasses.field(default_factory=set)

    def extract_batch(self, batch: list[str], futures: Sequence[Future]) -> None:
        """Commit the features of ``batch``, whose decoded audio ``futures`` give (see
        :func:`_prefetch`)."""
        ids, waves, identities = self._decoded(batch, futures)
        items = self._checked_features(ids, waves)
        self.writer.write(
            items,
            {u: signature for u, (signature, _) in identities.items() if signature is not None},
            {u: key for u, (_, key) in identities.items() if key is not None},
        )
        self.written.update(u for u, _ in items)
        self.report.stored += len(items)
        self.report.audio_seconds += sum(len(w) for w in waves) / TARGET_SR

    def _decoded(
        self, batch: list[str], futures: Sequence[Future]
    ) -> tuple[list[str], list[np.ndarray], dict[str, tuple[int | None, int | None]]]:
        """The ids whose audio decoded and is long enough, their ``(samples,)`` waves, and
        the file signature and state of every id whose audio decoded."""
        ids, waves, identities = [], [], {}
        for utt_id, future in zip(batch, futures):
            try:
                wave, identities[utt_id] = future.result()
                self.extractor.check_length(len(wave), f"{utt_id} ({self.manifest[utt_id]['path']})")
            except SermtlError as exc:
                self._fail_or_skip(utt_id, exc)
                continue
            ids.append(utt_id)
            waves.append(wave)
        return ids, waves, identities

    def _checked_features(self, ids: list[str], waves: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """``(utt_id, features (layers, frames, dim))`` of the ``waves`` whose features the
        store can hold (:func:`feature_problem`)."""
        items = []
        for utt_id, feats in zip(ids, self.extractor.extract_batch(waves) if waves else []):
            problem = feature_problem(feats, self.writer.dtype)
            if problem:
                self._fail_or_skip(utt_id, ConfigError(f"{utt_id}: {problem} ({self.manifest[utt_id]['path']})"))
                continue
            items.append((utt_id, feats))
        return items

    def _fail_or_skip(self, utt_id: str, error: SermtlError) -> None:
        """Raise ``error``, or with ``on_error="skip"`` record it in the store and the report."""
        if self.on_error == "fail":
            raise error
        message = str(error)
        self.writer.skip(utt_id, message)
        self.report.skipped.append({"utt_id": utt_id, "error": message})
        if self.on_item_error is not None:
            self.on_item_error(f"skipped {utt_id}: {message}")


def _extract_pending(
    run: _ExtractionRun,
    todo: Sequence[str],
    *,
    batch_seconds: float,
    max_batch: int | None,
    workers: int,
    max_duration: float | None,
    progress: bool,
) -> None:
    """Plan ``todo`` into batches and extract them one by one, decoding ahead, with a
    progress bar in audio seconds."""
    durations = planned_durations(run.manifest, todo, batch_seconds)
    batches = plan_batches(durations, batch_seconds, max_batch)
    bar = progress_bar(
        total=sum(durations.values()),
        unit="s",
        unit_scale=False,
        desc=f"{run.extractor.name} → {run.report.store.name}",
        enabled=progress,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio s [{elapsed}<{remaining}, {rate_fmt}]",
    )
    with bar:
        for batch, futures in _prefetch(run.writer.manifest, batches, durations, workers, max_duration):
            run.extract_batch(batch, futures)
            bar.update(sum(durations[u] for u in batch))


def _entries_to_repair(writer: StoreWriter, manifest: Manifest) -> list[str]:
    """Ids of ``manifest`` whose stored features ``verify`` finds wrong, checked through
    ``writer`` (which holds the lock, so nothing changes before they are invalidated)."""
    from featurestore.verify import check_store

    wanted = set(manifest.ids())
    return [u for u in check_store(writer.read_view()).bad_ids if u in wanted]


def _refuse_changed_audio(writer: StoreWriter, manifest: Manifest) -> None:
    """One line when entries of ``manifest`` were computed from audio files that have
    changed since (same name, other content): their features would be silently stale.

    Files whose state (one ``stat``) is the one recorded are not read; those that had to be
    hashed and were found unchanged get their current state recorded, so that the next run
    does not hash them again (:func:`featurestore.verify.check_audio`).
    """
    from featurestore.verify import check_audio

    view = writer.read_view()
    check = check_audio(view, [u for u in manifest.ids() if u in view])
    if check.changed:
        utt_id, reason = next(iter(check.changed.items()))
        raise StoreError(
            f"{len(check.changed)} stored utterance(s) have stale features ({utt_id}: {reason}); "
            "run the same extract with --repair to recompute them"
        )
    writer.record_audio_stat(check.confirmed)


def feature_problem(features: np.ndarray, dtype: np.dtype) -> str | None:
    """Why ``features`` (``(layers, frames, dim)``) cannot be stored as ``dtype`` (non-finite
    values, or values beyond its range, as ComParE energies are for float16), or ``None``."""
    if not np.isfinite(features).all():
        return "non-finite features"
    largest = float(np.abs(features).max()) if features.size else 0.0
    if largest > np.finfo(dtype).max:
        return f"features up to {largest:.3g} exceed {np.dtype(dtype).name}'s range; extract with --dtype float32"
    return None
