"""A corpus described by lhotse manifests: a ``CutSet`` (``cuts.jsonl.gz``), or a
``RecordingSet`` with a ``SupervisionSet`` (a folder holding ``*recordings*.jsonl*`` and
``*supervisions*.jsonl*``).

One row per supervision: ``utt_id`` is its ``id``; ``path`` the recording's file (lhotse
``file`` sources); ``start``/``end`` the supervision's span in that file; ``speaker`` and
``gender`` the supervision's; the label (``label`` option, default ``emotion``) and every
other ``custom`` field of the supervision become columns. A cut holding more than one
supervision (overlapping speech), a supervision of a recording the manifests do not have,
or a recording that is not a file is one line naming it. Needs ``pip install 'sermtl[lhotse]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from featurestore.corpora.base import CorpusManifest, CorpusReport, finish, normalise_gender
from featurestore.errors import SermtlError, describe_error


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
        custom = dict(supervision.custom or {})
        if custom.get(label) in (None, ""):
            raise SermtlError(f"lhotse: supervision {supervision.id} has no {label!r} in its custom fields "
                              f"(has: {', '.join(custom) or 'none'})")
        start = offset + supervision.start
        rows.append({"utt_id": supervision.id, "path": str(path.resolve()), "start": round(start, 6),
                     "end": round(start + supervision.duration, 6), "duration": supervision.duration,
                     "emotion": str(custom.pop(label)).strip().lower(), "speaker": supervision.speaker,
                     "gender": normalise_gender(supervision.gender), "corpus": name,
                     **{str(k): _text(v) for k, v in custom.items()}})
    return finish(name, root, rows, report)


def _segments(lhotse, root: Path) -> Iterator[tuple[Any, Any, float]]:
    """``(supervision, recording, offset of the cut in the recording)`` for every supervision."""
    try:
        if root.is_file():
            for cut in lhotse.CutSet.from_file(root):
                if len(cut.supervisions) > 1:
                    raise SermtlError(f"lhotse: cut {cut.id} in {root} holds {len(cut.supervisions)} (overlapping) "
                                      "supervisions; give one supervision per cut (e.g. cuts.trim_to_supervisions())")
                for supervision in cut.supervisions:
                    yield supervision, cut.recording, cut.start
            return
        recordings_file, supervisions_file = (_find(root, kind) for kind in ("recordings", "supervisions"))
        recordings = {recording.id: recording for recording in lhotse.RecordingSet.from_file(recordings_file)}
        for supervision in lhotse.SupervisionSet.from_file(supervisions_file):
            if supervision.recording_id not in recordings:
                raise SermtlError(f"lhotse: supervision {supervision.id} names recording {supervision.recording_id!r}, "
                                  f"which {recordings_file} does not have")
            yield supervision, recordings[supervision.recording_id], 0.0
    except SermtlError:
        raise
    except Exception as exc:  # lhotse and its JSON readers raise many types
        raise SermtlError(f"lhotse: cannot read the manifests at {root} ({describe_error(exc)})") from None


def _find(folder: Path, kind: str) -> Path:
    found = sorted(p for p in folder.glob(f"*{kind}*.jsonl*") if p.is_file())
    if len(found) != 1:
        raise SermtlError(f"lhotse: {folder} holds {len(found)} {kind} manifests (*{kind}*.jsonl*); "
                          "give a CutSet file or a folder with one of each")
    return found[0]


def _file_of(recording, supervision_id: str) -> Path:
    sources = [s for s in recording.sources if s.type == "file"]
    if not sources:
        kinds = ", ".join(sorted({s.type for s in recording.sources}))
        raise SermtlError(f"lhotse: recording {recording.id} (supervision {supervision_id}) has no file source "
                          f"({kinds}); sermtl reads audio files")
    return Path(sources[0].source)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
