"""A corpus described by lhotse manifests: a ``CutSet`` (``cuts.jsonl.gz``), or a
``RecordingSet`` with a ``SupervisionSet`` (a folder holding ``*recordings*.jsonl*`` and
``*supervisions*.jsonl*``).

One row per supervision: ``utt_id`` is its ``id``; ``path`` the recording's file (lhotse
``file`` sources); ``start``/``end`` the supervision's span in that file; ``speaker`` and
``gender`` the supervision's; the label (``label`` option, default ``emotion``) and every
other ``custom`` field of the supervision become columns. A cut holding more than one
supervision (overlapping speech), a supervision of a recording the manifests do not have,
or a recording that is not a file is one line naming it. Needs ``pip install 'sermtl[lhotse]'``.

The manifests are JSON lines (``.jsonl``, or ``.jsonl.gz`` as lhotse writes them), read here a
line at a time with :func:`featurestore.textfile.iter_jsonl` (a line over
:data:`~featurestore.textfile.MAX_LINE_BYTES` or more than
:data:`~featurestore.textfile.MAX_TEXT_BYTES` of text is refused before it is held); each
line becomes its lhotse object. Then, one line naming the supervision (or file and line) for:

- a ``custom`` field named like a column the recipe writes (every standard manifest column:
  ``utt_id``, ``path``, ``start``, ``end``, ``duration``, ``speaker``, ``gender``,
  ``corpus``, ...): refused, never written over the column;
- a label that is not text or an integer (a list, a dict, a bool, nothing), another custom
  field that is not a single value;
- a supervision outside its recording: starting before 0 or ending after the recording's
  duration by more than :data:`SPAN_TOLERANCE` (10 ms); within it, the span is clipped to the
  recording;
- a cut without a recording (features only, a mix), a recording listed twice, an item that
  lhotse cannot read or whose id is not text.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from featurestore.corpora.base import CorpusManifest, CorpusReport, finish, label_value, normalise_gender, scalar_value
from featurestore.errors import CorpusError, SermtlError, describe_error, quote
from featurestore.manifest import STANDARD_COLUMNS
from featurestore.textfile import iter_jsonl

#: How far (seconds) a supervision may reach outside its recording (rounding in manifests).
SPAN_TOLERANCE = 0.010

T = TypeVar("T")


def prepare_lhotse(root: str | os.PathLike, label: str = "emotion") -> CorpusManifest:
    """Manifest of lhotse manifests (see the module docstring)."""
    try:
        import lhotse
    except ImportError:
        raise SermtlError("lhotse manifests need the lhotse package: pip install 'sermtl[lhotse]'") from None
    root = Path(root).expanduser()
    name = root.name.split(".")[0] or "lhotse"
    report = CorpusReport(name)
    rows = []
    for supervision, recording, offset in _segments(lhotse, root):
        path = _file_of(recording, supervision.id)
        if not path.is_file():
            report.add("missing_audio", path)
            continue
        rows.append(_row(supervision, recording, offset, path, label, name))
    return finish(name, root, rows, report)


def _row(supervision, recording, offset: float, path: Path, label: str, corpus: str) -> dict[str, Any]:
    """The manifest row of one supervision, its fields checked (module docstring)."""
    what = f"lhotse: supervision {supervision.id}"
    emotion, extras = _custom(supervision.custom, label, what)
    start, end = _span(supervision, recording, offset, what)
    speaker = label_value(supervision.speaker, f"{what}: speaker")
    return {
        "utt_id": supervision.id,
        "path": str(path.resolve()),
        "start": round(start, 6),
        "end": round(end, 6),
        "duration": end - start,
        "emotion": emotion,
        "speaker": None if speaker is None else str(speaker),
        "gender": normalise_gender(supervision.gender),
        "corpus": corpus,
        **extras,
    }


def _custom(custom: Any, label: str, what: str) -> tuple[str, dict[str, str | None]]:
    """The emotion and the other custom fields (as text) of a supervision."""
    custom = custom or {}
    if not isinstance(custom, dict):
        raise CorpusError(f"{what}: 'custom' must be a mapping of fields, got {quote(custom)}")
    emotion = label_value(custom.get(label), f"{what}: custom field {label!r}")
    if emotion is None or str(emotion).strip() == "":
        raise CorpusError(f"{what} has no {label!r} in its custom fields (has: {', '.join(custom) or 'none'})")
    extras = {}
    for key, value in custom.items():
        if key == label:
            continue
        if key.strip() in STANDARD_COLUMNS:
            raise CorpusError(
                f"{what}: custom field {key!r} is named like the manifest's own column "
                f"{key.strip()!r}, which it would replace; rename the field"
            )
        value = scalar_value(value, f"{what}: custom field {key!r}")
        extras[key] = None if value is None else str(value)
    return str(emotion).strip().lower(), extras


def _seconds(value: Any, what: str) -> float:
    """A finite number of seconds (not a bool), one line naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CorpusError(f"{what} must be a finite number of seconds, got {quote(value)}")
    return float(value)


def _span(supervision, recording, offset: float, what: str) -> tuple[float, float]:
    """``(start, end)`` of the supervision in its recording's file, which it must lie inside
    (to :data:`SPAN_TOLERANCE`), clipped to the recording."""
    length = _seconds(recording.duration, f"lhotse: recording {recording.id}: duration")
    start = _seconds(offset, f"{what}: its cut's start") + _seconds(supervision.start, f"{what}: start")
    end = start + _seconds(supervision.duration, f"{what}: duration")
    if start < -SPAN_TOLERANCE or end > length + SPAN_TOLERANCE:
        raise CorpusError(
            f"{what} spans {start:.3f}..{end:.3f} s ({end - start:.3f} s), outside its recording "
            f"{recording.id} ({length:.3f} s long; tolerance {SPAN_TOLERANCE * 1000:g} ms)"
        )
    return max(start, 0.0), min(end, length)


def _segments(lhotse, root: Path) -> Iterator[tuple[Any, Any, float]]:
    """``(supervision, recording, offset of the cut in the recording)`` for every supervision."""
    if root.is_file():
        for where, cut in _items(root, lambda data: next(iter(lhotse.CutSet.from_dicts([data])))):
            recording = getattr(cut, "recording", None)
            if recording is None:
                raise CorpusError(
                    f"lhotse: cut {cut.id} has no recording ({where}); sermtl reads a cut's "
                    "audio from its recording's file"
                )
            if len(cut.supervisions) > 1:
                raise CorpusError(
                    f"lhotse: cut {cut.id} in {root} holds {len(cut.supervisions)} (overlapping) "
                    "supervisions; give one supervision per cut (e.g. cuts.trim_to_supervisions())"
                )
            for supervision in cut.supervisions:
                yield _with_id(supervision, "supervision", where), recording, cut.start
        return
    recordings_file, supervisions_file = (_find(root, kind) for kind in ("recordings", "supervisions"))
    recordings = {}
    for where, recording in _items(recordings_file, lhotse.Recording.from_dict):
        if recording.id in recordings:
            raise CorpusError(f"lhotse: recording {recording.id} is listed twice ({where})")
        recordings[recording.id] = recording
    for _, supervision in _items(supervisions_file, lhotse.SupervisionSegment.from_dict):
        recording = recordings.get(supervision.recording_id) if isinstance(supervision.recording_id, str) else None
        if recording is None:
            raise CorpusError(
                f"lhotse: supervision {supervision.id} names recording {quote(supervision.recording_id)}, "
                f"which {recordings_file} does not have"
            )
        yield supervision, recording, 0.0


def _items(path: Path, build: Callable[[dict], T]) -> Iterator[tuple[str, T]]:
    """``(where, item)`` for each line of the manifest ``path``, built by ``build`` from its
    JSON object; ``where`` names the file and line."""
    for number, data in iter_jsonl(path, f"lhotse: {path}"):
        where = f"{path}, line {number}"
        if not isinstance(data, dict):
            raise CorpusError(f"lhotse: {where}: not a JSON object")
        try:
            item = build(data)
        except Exception as exc:  # lhotse raises many types for an item it cannot read
            raise CorpusError(f"lhotse: {where}: not a lhotse manifest item ({describe_error(exc)})") from None
        yield where, _with_id(item, "item", where)


def _with_id(item: T, kind: str, where: str) -> T:
    """``item``, refused in one line when its ``id`` is not text."""
    if not isinstance(item.id, str) or not item.id.strip():
        raise CorpusError(f"lhotse: {where}: the {kind}'s id must be text, got {quote(item.id)}")
    return item


def _find(folder: Path, kind: str) -> Path:
    found = sorted(p for p in folder.glob(f"*{kind}*.jsonl*") if p.is_file())
    if len(found) != 1:
        raise CorpusError(
            f"lhotse: {folder} holds {len(found)} {kind} manifests (*{kind}*.jsonl*); "
            "give a CutSet file or a folder with one of each"
        )
    return found[0]


def _file_of(recording, supervision_id: str) -> Path:
    sources = [s for s in recording.sources if s.type == "file"]
    if not sources:
        kinds = ", ".join(sorted({str(s.type) for s in recording.sources}))
        raise CorpusError(
            f"lhotse: recording {recording.id} (supervision {supervision_id}) has no file source "
            f"({kinds}); sermtl reads audio files"
        )
    if not isinstance(sources[0].source, str) or not sources[0].source:
        raise CorpusError(
            f"lhotse: recording {recording.id}: its file source must be a path, got {quote(sources[0].source)}"
        )
    return Path(sources[0].source)
