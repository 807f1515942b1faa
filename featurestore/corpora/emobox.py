"""A dataset as EmoBox describes it (its ``data/<dataset>/`` metadata folder).

Layout: ``<root>/<dataset>.jsonl`` (``root`` may also be that file), one JSON object per
line: ``key`` (the utterance id, kept as it is, so EmoBox's fold files name the same ids),
``wav`` (the audio file, relative to EmoBox's data folder: ``audio_root``), ``emo`` (the
label), and optionally ``length`` (seconds: a finite positive number; absent or ``null``, the
duration is read from the audio), ``sample_rate``, ``channel``, ``dataset`` (text).
``<root>/label_map.json``, when present, maps the raw labels to EmoBox's class names; the
emotion is that name in lower case (``anger`` → ``Angry`` → ``angry``).

EmoBox's metadata names no speaker; ``speaker_pattern``, a regular expression with one
group matched against ``key``, gives one (e.g. ``emodb-(\\d\\d)`` for EmoDB), for
speaker-grouped protocols and ``--input-norm speaker``. It is required (a manifest row needs
a speaker, and ``extract`` refuses one without): a key it does not match, or matches with an
empty group, is one line naming the file and line. EmoBox's own folds come with
``sermtl cv --folds-file <root>``. Rows whose ``wav`` is missing are reported, like
missing audio in the other recipes, and left out.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from featurestore.corpora.base import CorpusManifest, CorpusReport, check_root, finish, read_duration
from featurestore.errors import CorpusError, quote
from featurestore.textfile import iter_jsonl, parse_json, read_text_file


def prepare_emobox(
    root: str | os.PathLike, audio_root: str | os.PathLike | None = None, speaker_pattern: str | None = None
) -> CorpusManifest:
    """Manifest of an EmoBox dataset.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset's metadata folder (holding ``<dataset>.jsonl``) or the jsonl file.
    audio_root : str or os.PathLike, optional
        The folder ``wav`` paths start from (default: the current directory, where
        EmoBox's scripts run).
    speaker_pattern : str
        Regular expression with one group, matched against ``key`` (required).

    Raises
    ------
    SermtlError
        No jsonl, a line that is not a JSON object with ``key``, ``wav`` and ``emo`` or
        whose ``length`` or ``dataset`` is of the wrong type (names the file and line), no
        or a bad ``speaker_pattern``, a key it does not match, no audio found.
    """
    path = Path(root).expanduser()
    jsonl = path if path.is_file() else _dataset_file(check_root(root, "emobox"))
    folder = jsonl.parent
    name = jsonl.stem
    audio_base = Path(audio_root).expanduser() if audio_root is not None else Path.cwd()
    try:
        pattern = re.compile(speaker_pattern) if speaker_pattern else None
    except re.error as exc:
        raise CorpusError(
            f"emobox: --option speaker_pattern={speaker_pattern!r} is not a regular expression ({exc})"
        ) from None
    if pattern is not None and pattern.groups != 1:
        raise CorpusError(f"emobox: --option speaker_pattern={speaker_pattern!r} needs exactly one group")
    labels = _label_map(folder / "label_map.json")
    report = CorpusReport(name)
    rows = []
    for number, entry in _lines(jsonl):
        where = f"{jsonl}, line {number}"
        key, wav, emo = entry["key"], Path(entry["wav"]), entry["emo"]
        audio = wav if wav.is_absolute() else audio_base / wav
        if not audio.is_file():
            report.add("missing_audio", audio)
            continue
        length = _length(entry.get("length"), where)
        rows.append(
            {
                "utt_id": key,
                "path": str(audio.resolve()),
                "duration": length if length is not None else read_duration(audio, report),
                "emotion": str(labels.get(emo, emo)).strip().lower(),
                "speaker": _speaker(key, pattern, where),
                "corpus": _dataset(entry.get("dataset"), where) or name,
            }
        )
    if not rows and report.problems.get("missing_audio"):
        raise CorpusError(
            f"emobox: none of the {len(report.problems['missing_audio'])} audio files of {jsonl} is under "
            f"{audio_base} (first: {report.problems['missing_audio'][0]}); "
            "give --option audio_root=DIR, EmoBox's data folder"
        )
    return finish(name, folder, rows, report)


def _dataset_file(folder: Path) -> Path:
    """``<folder>/<folder name>.jsonl``, else the only ``.jsonl`` directly in ``folder``."""
    named = folder / f"{folder.name}.jsonl"
    if named.is_file():
        return named
    found = sorted(folder.glob("*.jsonl"))
    if len(found) != 1:
        raise CorpusError(f"emobox: {folder} holds {len(found)} .jsonl files; give the dataset's jsonl as --root")
    return found[0]


def _label_map(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    data = parse_json(read_text_file(path, f"emobox: {path}"), f"emobox: {path}")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CorpusError(f"emobox: {path} is not a mapping of labels to class names")
    return data


def _lines(jsonl: Path):
    """``(line number, row)`` for each non-empty line, checked for ``key``, ``wav`` and ``emo``."""
    for number, entry in iter_jsonl(jsonl, f"emobox: {jsonl}"):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry.get(k) for k in ("key", "wav", "emo")
        ):
            raise CorpusError(f"{jsonl}, line {number}: not a JSON object with text 'key', 'wav' and 'emo'")
        yield number, entry


def _length(value: object, where: str) -> float | None:
    """A row's ``length`` in seconds; ``None`` when it gives none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CorpusError(f"{where}: 'length' must be a finite positive number of seconds, got {quote(value)}")
    return float(value)


def _speaker(key: str, pattern: re.Pattern[str] | None, where: str) -> str:
    """The speaker ``pattern``'s group finds in ``key``; without a pattern, one line (a row
    without a speaker would be refused by ``extract``)."""
    if pattern is None:
        raise CorpusError(
            f"emobox: {where}: no speaker (EmoBox's metadata names none); give --option "
            "speaker_pattern=REGEX, one group matched against each key (e.g. 'emodb-(\\d\\d)' for EmoDB)"
        )
    match = pattern.search(key)
    if match is None:
        raise CorpusError(f"{where}: key {quote(key)} does not match speaker_pattern {quote(pattern.pattern)}")
    if not match.group(1):
        raise CorpusError(
            f"{where}: speaker_pattern {quote(pattern.pattern)} finds an empty speaker in key {quote(key)}"
        )
    return match.group(1)


def _dataset(value: object, where: str) -> str | None:
    """A row's ``dataset`` (the corpus column); ``None`` when it gives none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CorpusError(f"{where}: 'dataset' must be text, got {quote(value)}")
    return value
