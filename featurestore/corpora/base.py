"""Helpers shared by the corpus recipes.

A recipe walks a corpus folder, reads its labels, and builds one row per utterance with
:func:`make_row`; :func:`finish` then turns the rows into a :class:`CorpusManifest`.

Problems that should not stop a run (an audio file without a label, a label without an
audio file, a clip whose label fields disagree, a stray copy, an audio file whose header
cannot be read) are collected in a
:class:`CorpusReport`. :func:`finish` emits one :class:`CorpusWarning` per kind of
problem (its message names the first few files; its ``items`` attribute holds them all)
and attaches the report to the manifest as ``manifest.report``. Labels left out by
design (IEMOCAP's ``fru``, BAUM-1's ``interest``, ...) are only counted, in
``report.excluded``. A label code that the corpus does not define is an error:
:class:`~featurestore.errors.SermtlError` naming the file.

Emotion names are shared by all recipes: ``angry, boredom, calm, disgust, fear, happy,
neutral, sad, surprise`` plus corpus-specific extras (``frustrated``, ``interest``, ...).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from featurestore.audio import audio_duration
from featurestore.errors import CorpusError, SermtlError, quote
from featurestore.manifest import Manifest

log = logging.getLogger(__name__)

#: Named class selections accepted by every recipe's ``classes`` option.
CLASS_SETS: dict[str, tuple[str, ...]] = {
    "4class": ("angry", "happy", "neutral", "sad"),
}

#: ``classes`` option: ``"all"``, a name from :data:`CLASS_SETS`, a list of emotion
#: names to keep (or one string of comma-separated names, as given on the command line),
#: or a mapping ``{emotion: new name}`` (unlisted emotions are dropped).
Classes = str | Sequence[str] | Mapping[str, str] | None

#: What each kind of problem means, in the warning line.
PROBLEM_KINDS: dict[str, str] = {
    "unlabelled": "audio file(s) without a label, left out",
    "missing_audio": "label(s) without an audio file, left out",
    "label_mismatch": "file(s) whose two label sources disagree, left out",
    "speaker_mismatch": "file(s) in another speaker's folder (speaker taken from the file name)",
    "duplicate": "stray duplicate file(s) skipped",
    "unparsed": "file(s) not named like this corpus's files, left out",
    "gender": "row(s) with an unreadable gender, kept without gender",
    "unreadable": "unreadable audio file(s), kept without duration (extraction decides)",
    "no_label": "row(s) without a label (ClassLabel -1), left out",
    "counts": "count(s) differ from the documented full release",
}
_SHOWN = 3

T = TypeVar("T")


class CorpusWarning(UserWarning):
    """One kind of problem met while preparing a corpus.

    Attributes
    ----------
    corpus : str
        Corpus name.
    kind : str
        A key of :data:`PROBLEM_KINDS`.
    items : list of str
        Every file (or count) concerned, not just the few in the message.
    """

    def __init__(self, corpus: str, kind: str, items: Sequence[str]) -> None:
        shown = "; ".join(items[:_SHOWN]) + ("; ..." if len(items) > _SHOWN else "")
        super().__init__(f"{corpus}: {len(items)} {PROBLEM_KINDS[kind]}: {shown}")
        self.corpus = corpus
        self.kind = kind
        self.items = list(items)


@dataclass
class CorpusReport:
    """What a recipe left out and why.

    Attributes
    ----------
    corpus : str
        Corpus name.
    problems : dict of str to list of str
        Kind (see :data:`PROBLEM_KINDS`) -> files or messages, in the order met.
    excluded : collections.Counter
        Label (or reason) -> number of utterances left out by design.
    """

    corpus: str
    problems: dict[str, list[str]] = field(default_factory=dict)
    excluded: collections.Counter = field(default_factory=collections.Counter)

    def add(self, kind: str, item: str | os.PathLike) -> None:
        """Record one problem of ``kind`` about ``item`` (usually a file path)."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        self.problems.setdefault(kind, []).append(str(item))

    def exclude(self, label: str) -> None:
        """Count one utterance left out by design because of ``label``."""
        self.excluded[label] += 1

    def summary(self) -> str:
        """Excluded labels and problem counts, one line each."""
        lines = []
        if self.excluded:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items()))
            lines.append(f"{self.corpus}: left out by design: {counts}")
        for kind, items in self.problems.items():
            lines.append(f"{self.corpus}: {len(items)} {PROBLEM_KINDS[kind]}")
        return "\n".join(lines)

    def emit(self) -> None:
        """Warn once per problem kind; log the by-design exclusions."""
        if self.excluded:
            log.info("%s: left out by design: %s", self.corpus, dict(sorted(self.excluded.items())))
        for kind, items in self.problems.items():
            warnings.warn(CorpusWarning(self.corpus, kind, items), stacklevel=3)


class CorpusManifest(Manifest):
    """A :class:`Manifest` that also carries the :class:`CorpusReport` of its recipe."""

    def __init__(self, rows: Iterable[dict[str, Any]], source: str, report: CorpusReport) -> None:
        super().__init__(rows, source=source)
        self.report = report


class ClassMap:
    """Maps a corpus's label codes to emotion names.

    A code mapped to ``None`` is a label left out by design; a code missing from the map
    is an error. :meth:`select` narrows the map to the classes a user asks for.

    Examples
    --------
    >>> m = ClassMap({"neu": "neutral", "exc": "happy", "fru": "frustrated"}).select(["happy", "neutral"])
    >>> m.codes
    {'neu': 'neutral', 'exc': 'happy', 'fru': None}
    """

    def __init__(self, codes: Mapping[str, str | None], native: Mapping[str, str | None] | None = None) -> None:
        self.codes = dict(codes)
        self.native = dict(codes if native is None else native)

    def emotions(self) -> list[str]:
        """Sorted emotion names this map produces."""
        return sorted({name for name in self.codes.values() if name is not None})

    def select(self, classes: Classes) -> ClassMap:
        """The map restricted (and optionally renamed) to ``classes``; see :data:`Classes`.

        Raises
        ------
        SermtlError
            A class in ``classes`` that this corpus does not have.
        """
        if classes is None or classes == "all":
            return self
        if isinstance(classes, str):
            classes = CLASS_SETS.get(classes) or [name.strip() for name in classes.split(",")]
        rename = dict(classes) if isinstance(classes, Mapping) else {name: name for name in classes}
        unknown = sorted(set(rename) - set(self.emotions()))
        if unknown:
            raise CorpusError(
                f"option 'classes' names {', '.join(unknown)}, which this corpus does not have "
                f"(it has: {', '.join(self.emotions())}; sets: {', '.join(['all', *CLASS_SETS])})"
            )
        return ClassMap({code: rename.get(name) for code, name in self.codes.items()}, self.native)

    def resolve(self, code: str, source: str | os.PathLike, report: CorpusReport) -> str | None:
        """Emotion name for ``code``, or ``None`` if left out by design.

        Left-out codes are counted in ``report.excluded`` as ``"<code> (<corpus's name>)"``,
        e.g. ``"fru (frustrated)"``, or as the bare code when it is the name.

        Raises
        ------
        SermtlError
            ``code`` is not a label of this corpus; the message names ``source``.
        """
        if code not in self.codes:
            raise CorpusError(f"{source}: unknown emotion label {code!r} (known: {', '.join(sorted(self.codes))})")
        name = self.codes[code]
        if name is None:
            native = self.native[code]
            report.exclude(code if native in (None, code) else f"{code} ({native})")
        return name


def check_root(root: str | os.PathLike, corpus: str) -> Path:
    """``root`` as a :class:`Path`, or :class:`SermtlError` if it is not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise CorpusError(f"{corpus}: corpus folder not found: {path}")
    if not path.is_dir():
        raise CorpusError(f"{corpus}: corpus root is not a folder: {path}")
    return path


def is_hidden(path: Path) -> bool:
    """True for dot files, including macOS ``._*`` resource forks."""
    return path.name.startswith(".")


def find_files(folder: Path, suffixes: Iterable[str] = (".wav",), recursive: bool = True) -> list[Path]:
    """Files in ``folder`` (and its subfolders if ``recursive``) with a suffix in ``suffixes``, sorted.

    Hidden files and folders (``.*``, macOS ``._*``) are skipped. Suffixes are matched
    case-insensitively.
    """
    wanted = {s.lower() for s in suffixes}
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        found.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in wanted
        )
    return sorted(found)


def named_files(folder: Path, pattern: re.Pattern[str], report: CorpusReport) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """``(path, groups)`` for each wav under ``folder`` whose stem matches ``pattern``.

    Files named otherwise are reported as ``unparsed`` and left out.
    """
    for path in find_files(folder):
        match = pattern.match(path.stem)
        if match:
            yield path, match.groups()
        else:
            report.add("unparsed", path)


def index_files(paths: Iterable[Path], corpus: str, key: Callable[[Path], str] = lambda p: p.stem) -> dict[str, Path]:
    """``key(path) -> path`` for each path (by default the file name without suffix).

    Raises
    ------
    SermtlError
        Two paths with the same key; the message names both.
    """
    index: dict[str, Path] = {}
    for path in paths:
        name = key(path)
        if name in index:
            raise CorpusError(f"{corpus}: two files for {name}: {index[name]} and {path}")
        index[name] = path
    return index


def join_labels(
    audio: Mapping[str, Path],
    labels: Mapping[str, T],
    report: CorpusReport,
    label_source: Mapping[str, str | os.PathLike] | None = None,
) -> list[tuple[str, Path, T]]:
    """Pair audio files with labels by key; report the keys that lack one or the other.

    Parameters
    ----------
    audio : Mapping of str to Path
        Key -> audio file.
    labels : Mapping of str to T
        Key -> label record.
    report : CorpusReport
        Gets ``unlabelled`` (audio without label) and ``missing_audio`` problems.
    label_source : Mapping of str to str or os.PathLike, optional
        Key -> where the label came from, named in ``missing_audio`` items.

    Returns
    -------
    list of tuple of (str, Path, T)
        ``(key, path, label)`` for keys with both, in the order of ``labels``.
    """
    for key, path in audio.items():
        if key not in labels:
            report.add("unlabelled", path)
    for key in labels:
        if key not in audio:
            where = f" (label in {label_source[key]})" if label_source else ""
            report.add("missing_audio", f"{key}{where}")
    return [(key, audio[key], label) for key, label in labels.items() if key in audio]


def normalise_gender(value: Any) -> str | None:
    """``"M"``/``"F"`` from values such as ``m``, ``Male``, ``FEMALE``; ``None`` otherwise."""
    text = str(value or "").strip().lower()
    return {"m": "M", "male": "M", "f": "F", "female": "F"}.get(text)


def _plain(value: Any) -> Any:
    """A numpy or torch scalar (what a dataset in numpy or torch format holds) as its Python value."""
    return value.item() if getattr(value, "ndim", None) == 0 and hasattr(value, "item") else value


def label_value(value: Any, what: str) -> str | int | None:
    """``value`` as plain text or an integer, for labels, speakers and ids: a numpy or torch
    scalar is read back as its Python value, a float that is a whole number as that integer,
    ``None`` stays ``None``.

    Raises
    ------
    SermtlError
        Anything else (bytes, a list, a dict, a bool, a fractional or infinite float),
        naming ``what`` (e.g. ``"data row 3, column 'emotion'"``).
    """
    value = _plain(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise CorpusError(f"{what} must be text or an integer, got {quote(value)}")


def scalar_value(value: Any, what: str) -> str | int | float | bool | None:
    """``value`` as a plain scalar (text, number, bool or ``None``), for extra columns.

    Raises
    ------
    SermtlError
        A list, a dict, bytes or any other non-scalar, naming ``what``.
    """
    value = _plain(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise CorpusError(f"{what} must be a single value (text or a number), got {quote(value)}")


def read_duration(path: str | os.PathLike, report: CorpusReport) -> float | None:
    """Length of ``path`` in seconds from its header; ``None`` and an ``unreadable`` problem
    if the file cannot be read, so that one bad file does not stop the whole corpus (the
    extraction stage fails on it or skips it, as the user chooses). A file with no samples
    is reported the same way."""
    try:
        seconds = audio_duration(path)
    except SermtlError as exc:
        report.add("unreadable", exc)
        return None
    if seconds <= 0:
        report.add("unreadable", f"{path}: no audio samples")
        return None
    return seconds


def make_row(
    report: CorpusReport,
    utt: str,
    path: Path,
    emotion: str,
    speaker: str,
    **fields: Any,
) -> dict[str, Any]:
    """One manifest row of ``report.corpus``: ``utt_id`` is ``<corpus>-<utt>``, ``duration``
    read from the file header (see :func:`read_duration`).

    ``fields`` adds standard columns (expression, gender, session) and extras.
    """
    corpus = report.corpus
    return {
        "utt_id": f"{corpus}-{utt}",
        "path": str(path),
        "duration": read_duration(path, report),
        "emotion": emotion,
        "speaker": speaker,
        "corpus": corpus,
        **fields,
    }


def finish(
    corpus: str,
    root: Path,
    rows: list[dict[str, Any]],
    report: CorpusReport,
    check: Callable[[Manifest], list[str]] | None = None,
) -> CorpusManifest:
    """Build the manifest, emit the report's warnings, and attach the report.

    ``check``, if given, returns lines about the finished manifest (count differences),
    reported as ``counts`` problems.

    Raises
    ------
    SermtlError
        No utterance was found, or two rows share an utterance id (the message names
        both files).
    """
    if not rows:
        hint = f" ({report.summary().replace(chr(10), '; ')})" if report.problems or report.excluded else ""
        raise CorpusError(f"{corpus}: no utterances found under {root}{hint}")
    manifest = CorpusManifest(rows, source=f"{corpus} corpus at {root}", report=report)
    for line in check(manifest) if check else ():
        report.add("counts", line)
    report.emit()
    return manifest
