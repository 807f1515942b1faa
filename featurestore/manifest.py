"""The manifest: one table per corpus, a row per utterance.

Every corpus recipe returns a :class:`Manifest`; the extraction stage reads it and
copies it into the store, so that a store alone is enough to train on.

Standard columns (always present, in this order; empty values are ``None``):

``utt_id, path, start, end, duration, emotion, expression, speaker, gender, session, corpus``

Any other column a recipe or a CSV provides is kept after them ("extras").
``start``/``end`` are seconds inside ``path`` (``None`` = whole file); ``duration`` is
the length in seconds of the audio the row points to.
"""

from __future__ import annotations

import collections
import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from featurestore.atomic import atomic_write
from featurestore.errors import CorpusError, SermtlError
from featurestore.hf_audio import is_reference

STANDARD_COLUMNS: tuple[str, ...] = (
    "utt_id",
    "path",
    "start",
    "end",
    "duration",
    "emotion",
    "expression",
    "speaker",
    "gender",
    "session",
    "corpus",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("utt_id", "path", "emotion", "speaker")
FLOAT_COLUMNS: frozenset[str] = frozenset({"start", "end", "duration"})
#: Columns that decide which audio a row points to: features depend on these only.
AUDIO_COLUMNS: tuple[str, ...] = ("path", "start", "end")


def _normalise_value(column: str, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if column in FLOAT_COLUMNS:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise CorpusError(f"column {column!r} must be a number of seconds, got {value!r}") from None
        if not math.isfinite(seconds) or seconds < 0 or (column == "duration" and seconds == 0):
            raise CorpusError(
                f"column {column!r} must be a finite number of seconds"
                f"{' > 0' if column == 'duration' else ' >= 0'}, got {value!r}"
            )
        return seconds
    if isinstance(value, str) and "\x00" in value:
        raise CorpusError(f"column {column!r} holds a NUL byte: {value!r}")
    return str(value).strip() if isinstance(value, str) else value


class Manifest:
    """An ordered table of utterances keyed by ``utt_id``.

    Rows are plain dicts with every column of :attr:`columns` present.

    Examples
    --------
    >>> m = Manifest([{"utt_id": "a", "path": "/x/a.wav", "emotion": "sad", "speaker": "s1"}])
    >>> len(m), m["a"]["emotion"], m.columns[:3]
    (1, 'sad', ('utt_id', 'path', 'start'))
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), source: str = "manifest") -> None:
        self.source = source
        self._rows: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}
        extras: list[str] = []
        for row in rows:
            for key in row:
                if key not in STANDARD_COLUMNS and key not in extras:
                    extras.append(key)
            self._append(row)
        self.columns: tuple[str, ...] = STANDARD_COLUMNS + tuple(extras)
        for row in self._rows:
            for column in self.columns:
                row.setdefault(column, None)

    def _append(self, row: dict[str, Any]) -> None:
        missing = [c for c in ("utt_id", "path") if not row.get(c)]
        if missing:
            raise CorpusError(f"{self.source}: a row has no {missing[0]!r}: {row}")
        try:
            clean = {k: _normalise_value(k, v) for k, v in row.items()}
        except SermtlError as exc:
            raise CorpusError(f"{self.source}: utterance {row.get('utt_id')!r}: {exc}") from None
        if clean.get("start") is not None and clean.get("end") is not None and clean["end"] <= clean["start"]:
            raise CorpusError(
                f"{self.source}: utterance {clean['utt_id']!r}: end {clean['end']} <= start {clean['start']}"
            )
        utt_id = str(clean["utt_id"])
        clean["utt_id"] = utt_id
        if utt_id in self._index:
            first = self._rows[self._index[utt_id]]["path"]
            raise CorpusError(f"{self.source}: duplicate utterance id {utt_id!r}: {clean['path']} and {first}")
        self._index[utt_id] = len(self._rows)
        self._rows.append(clean)

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._rows)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._index

    def __getitem__(self, utt_id: str) -> dict[str, Any]:
        try:
            return self._rows[self._index[utt_id]]
        except KeyError:
            raise KeyError(f"no utterance {utt_id!r} in {self.source}") from None

    def ids(self) -> list[str]:
        """Utterance ids in manifest order."""
        return [row["utt_id"] for row in self._rows]

    def position(self, utt_id: str) -> int:
        """Row number of ``utt_id``."""
        return self._index[utt_id]

    def column(self, name: str) -> list[Any]:
        """All values of one column, in row order."""
        if name not in self.columns:
            raise CorpusError(f"{self.source} has no column {name!r} (columns: {', '.join(self.columns)})")
        return [row[name] for row in self._rows]

    def counts(self, name: str) -> dict[str, int]:
        """Number of rows per value of column ``name`` (``None`` shown as ``"-"``), sorted by value."""
        counter = collections.Counter("-" if v is None else str(v) for v in self.column(name))
        return dict(sorted(counter.items()))

    def total_duration(self) -> float:
        """Sum of the ``duration`` column in seconds (rows without one count 0)."""
        return float(sum(row["duration"] or 0.0 for row in self._rows))

    def subset(self, utt_ids: Sequence[str]) -> Manifest:
        """A new manifest with the given rows, in the given order."""
        return Manifest((dict(self[u]) for u in utt_ids), source=self.source)

    # -- serialisation --------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """Rows as a list of JSON-serialisable dicts (copies)."""
        return [dict(row) for row in self._rows]

    def to_json(self) -> str:
        return json.dumps({"columns": list(self.columns), "rows": self.to_records()}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        data = json.loads(text)
        return cls(data["rows"], source=source)

    def write_csv(self, path: str | Path, relative: bool = False) -> Path:
        """Write the manifest as CSV (atomically: a reader never sees half a file). With
        ``relative``, audio paths are written relative to the CSV's folder, so the CSV and
        the corpus can move together (:meth:`read_csv` resolves them against that folder)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        base = path.parent.resolve()
        with atomic_write(path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.columns))
            writer.writeheader()
            for row in self._rows:
                values = {k: "" if v is None else v for k, v in row.items()}
                if relative and not is_reference(row["path"]):
                    values["path"] = os.path.relpath(Path(row["path"]).resolve(), base)
                writer.writerow(values)
        return path

    @classmethod
    def read_csv(cls, path: str | Path, base_dir: str | Path | None = None) -> Manifest:
        """Read a CSV manifest (UTF-8) with at least the columns ``utt_id,path,emotion,speaker``.

        Relative paths are resolved against ``base_dir`` (default: the CSV's folder). A file
        that is not UTF-8 CSV, or a bad row (a row with more or fewer fields than the header
        included), is a one-line :class:`SermtlError` naming ``path:line``.
        """
        path = Path(path)
        if not path.is_file():
            raise CorpusError(f"manifest not found: {path}")
        base = Path(base_dir) if base_dir is not None else path.parent
        try:
            return cls._read_csv_rows(path, base)
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
        except csv.Error as exc:
            raise CorpusError(f"{path}: not a readable CSV file ({exc})") from None

    @classmethod
    def _read_csv_rows(cls, path: Path, base: Path) -> Manifest:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CorpusError(f"{path}: missing required column(s) {', '.join(missing)} (has: {', '.join(header)})")
            rows = []
            for raw in reader:
                line_no = reader.line_num
                _check_field_count(raw, len(header), f"{path}:{line_no}")
                row = {k.strip(): v for k, v in raw.items()}
                for column in REQUIRED_COLUMNS:
                    if not (row.get(column) or "").strip():
                        raise CorpusError(f"{path}:{line_no}: empty {column!r}")
                if "\x00" in row["path"]:
                    raise CorpusError(f"{path}:{line_no}: the path holds a NUL byte")
                audio = Path(row["path"].strip())
                if not is_reference(row["path"].strip()):  # a dataset reference stays as it is
                    row["path"] = str(audio if audio.is_absolute() else (base / audio).resolve())
                rows.append(row)
        return cls(rows, source=str(path))


def _check_field_count(raw: dict[Any, Any], expected: int, where: str) -> None:
    """Refuse a CSV row (as :class:`csv.DictReader` reads it) with more or fewer fields than
    the header names: its extra fields would be dropped, or its columns shifted."""
    extra = raw.get(None) or []
    missing = sum(1 for key, value in raw.items() if key is not None and value is None)
    if extra or missing:
        raise CorpusError(
            f"{where}: {expected + len(extra) - missing} fields, but the header has {expected}; "
            "quote values that hold commas"
        )


def same_audio(row: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two manifest rows name the same audio: file name, start and end (a store's
    features of an utterance are reusable only for a row that names the same audio)."""
    return (
        Path(row["path"]).name == Path(other["path"]).name
        and row["start"] == other["start"]
        and row["end"] == other["end"]
    )


def summarise(manifest: Manifest, columns: Sequence[str] = ("emotion", "expression", "speaker")) -> str:
    """A human-readable block of counts per value for the given columns."""
    seconds = manifest.total_duration()
    length = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    lines = [f"{len(manifest)} utterances, {length}"]
    for name in columns:
        if name not in manifest.columns:
            continue
        counts = manifest.counts(name)
        lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)
