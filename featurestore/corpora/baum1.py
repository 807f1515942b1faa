"""BAUM-1 (Zhalehpour et al., 2017): Turkish audio-visual clips, acted (1a) and spontaneous (1s).

Layout (copies differ; folder names are matched case-insensitively)::

    BAUM1a_MP4_all/<speaker>/<clip>.mp4     or  BAUM1a_MP4 - All/...    acted
    BAUM1s_MP4 - All/<speaker>/<clip>.mp4   or  BAUM1s_MP4_all/...      spontaneous
    Annotations_BAUM1a.xlsx, Annotations_BAUM1s.xlsx                    a row per clip

Speaker folders look like ``s001``, clips like ``S001_001``; case varies between folder,
file and annotation, so clip names are compared in upper case. The annotation columns are
found by header (case-insensitive): the clip (``clip``/``file``/``name``), the emotion name
(``emotion``), the emotion code (``code``) and, if present, the gender; other columns
are ignored. The audio track is 44.1 kHz AAC, read with PyAV.

Rows: ``utt_id`` ``baum1-a-S001_001`` / ``baum1-s-S001_001``, ``speaker`` ``S001``,
``expression`` acted (1a) or spontaneous (1s), ``gender`` from the annotation; extra
``original_label`` (the annotation's emotion name, lower case). By default the paper's six
emotions are kept; the others (interest, neutral, thinking, ...) are left out by design
and counted in ``manifest.report.excluded``. A clip whose emotion name and code disagree
is left out and reported (``label_mismatch``), since real annotation files contain such
rows and one should not stop a run; a code outside the part's table is an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from featurestore.corpora.base import (
    Classes,
    ClassMap,
    CorpusManifest,
    CorpusReport,
    check_root,
    find_files,
    finish,
    index_files,
    join_labels,
    make_row,
    normalise_gender,
)
from featurestore.errors import CorpusError

CORPUS = "baum1"
PARTS = {"a": "acted", "s": "spontaneous"}


def _numbered(*names: str) -> dict[str, str]:
    return {str(code): name for code, name in enumerate(names, start=1)}


#: Emotion code -> annotation emotion name, per part (field notes).
CODES: dict[str, dict[str, str]] = {
    "a": _numbered("anger", "boredom", "disgust", "fear", "happiness", "interest", "sadness", "surprise", "unsure"),
    "s": _numbered(
        "anger",
        "boredom",
        "bothered",
        "concentrating",
        "contempt",
        "disgust",
        "fear",
        "happiness",
        "neutral",
        "sadness",
        "surprise",
        "thinking",
        "unsure",
    ),
}
#: Annotation emotion name -> emotion name.
LABELS = ClassMap(
    {
        "anger": "angry",
        "boredom": "boredom",
        "disgust": "disgust",
        "fear": "fear",
        "happiness": "happy",
        "sadness": "sad",
        "interest": "interest",
        "surprise": "surprise",
        "unsure": "unsure",
        "bothered": "bothered",
        "concentrating": "concentrating",
        "contempt": "contempt",
        "neutral": "neutral",
        "thinking": "thinking",
    }
)
#: The six emotions used in the paper.
PAPER_CLASSES = ("angry", "boredom", "disgust", "fear", "happy", "sad")
_CLIP_FOLDER = re.compile(r"^baum1([as])_mp4(?:_all| - all)$", re.IGNORECASE)
_COLUMNS = {  # role -> test on a lower-case header
    "clip": lambda h: "clip" in h or "file" in h or ("name" in h and "emotion" not in h),
    "emotion": lambda h: "emotion" in h and "code" not in h,
    "code": lambda h: "code" in h,
    "gender": lambda h: "gender" in h or "sex" in h,
}


def _same_emotion(written: str, canonical: str) -> bool:
    """Whether an annotation's emotion name means ``canonical`` (``Happy`` ~ ``happiness``).

    Names agree when equal, when ``written`` is the mapped name (``angry``), or when their
    first four letters match (which keeps ``contempt`` and ``concentrating`` apart).
    """
    written = written.strip().lower()
    return written in (canonical, LABELS.codes[canonical]) or (len(written) >= 4 and written[:4] == canonical[:4])


def _header(values: tuple[Any, ...]) -> dict[str, int] | None:
    headers = [str(v or "").strip().lower() for v in values]
    found = {}
    for role, test in _COLUMNS.items():
        index = next((i for i, h in enumerate(headers) if h and test(h)), None)
        if index is not None:
            found[role] = index
    return found if "clip" in found and "code" in found else None


def read_annotations(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of an annotation workbook's first sheet as dicts with keys ``clip`` (upper case,
    no suffix), ``emotion``, ``code`` and ``gender`` (``None`` when there is no such column).

    Raises
    ------
    SermtlError
        No header row with a clip and a code column, or no emotion column.
    """
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        columns = None
        for values in book.worksheets[0].iter_rows(values_only=True):
            if columns is None:
                columns = _header(values)
                if columns is not None and "emotion" not in columns:
                    raise CorpusError(f"{path}: no emotion name column in the header")
                continue
            row = {role: values[index] if index < len(values) else None for role, index in columns.items()}
            clip = str(row["clip"] or "").strip()
            if clip:
                row["clip"] = re.sub(r"\.mp4$", "", clip, flags=re.IGNORECASE).upper()
                yield row
    finally:
        book.close()
    if columns is None:
        raise CorpusError(f"{path}: no header row with a clip name and an emotion code column")


def _find_annotations(root: Path, part: str) -> Path:
    wanted = f"annotations_baum1{part}.xlsx"
    for path in root.iterdir():
        if path.name.lower() == wanted:
            return path
    raise CorpusError(f"{CORPUS}: annotation file {root / f'Annotations_BAUM1{part}.xlsx'} not found")


def _code(value: Any, source: str) -> str:
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        raise CorpusError(f"{source}: emotion code {value!r} is not a number") from None


def prepare_baum1(root: str | os.PathLike, classes: Classes = PAPER_CLASSES) -> CorpusManifest:
    """Manifest of BAUM-1's annotated clips (both parts, or the one present).

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding the clip folders and the two annotation workbooks.
    classes : Classes
        Emotions to keep (default the paper's six).

    Raises
    ------
    SermtlError
        Bad root, no clip folder, a missing annotation workbook, a clip in two folders
        (names both) or with two annotation rows, or an emotion code outside the part's
        table (names the workbook and clip).
    """
    root = check_root(root, CORPUS)
    class_map = LABELS.select(classes)
    report = CorpusReport(CORPUS)
    folders: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        match = _CLIP_FOLDER.match(path.name)
        if match and path.is_dir():
            folders.setdefault(match.group(1).lower(), []).append(path)
    if not folders:
        raise CorpusError(f"{CORPUS}: no BAUM1a_MP4_all / 'BAUM1s_MP4 - All' clip folder in {root}")
    rows = []
    for part, part_folders in sorted(folders.items()):
        workbook = _find_annotations(root, part)
        annotations: dict[str, dict[str, Any]] = {}
        for note in read_annotations(workbook):
            if note["clip"] in annotations:
                raise CorpusError(f"{workbook}: clip {note['clip']} has two annotation rows")
            annotations[note["clip"]] = note
        clips = index_files(
            (p for f in part_folders for p in find_files(f, (".mp4",))), CORPUS, key=lambda p: p.stem.upper()
        )
        for clip, path, note in join_labels(clips, annotations, report, {clip: workbook for clip in annotations}):
            source = f"{workbook}: clip {clip}"
            code = _code(note["code"], source)
            if code not in CODES[part]:
                known = ", ".join(CODES[part])
                raise CorpusError(f"{source}: unknown BAUM1{part} emotion code {code} (known: {known})")
            canonical, written = CODES[part][code], str(note["emotion"] or "")
            if not _same_emotion(written, canonical):
                report.add("label_mismatch", f"{path} (annotation says {written!r} but code {code} = {canonical})")
                continue
            emotion = class_map.resolve(canonical, source, report)
            if emotion is None:
                continue
            gender = normalise_gender(note.get("gender"))
            if gender is None and note.get("gender") not in (None, ""):
                report.add("gender", f"{source} (gender {note['gender']!r})")
            rows.append(
                make_row(
                    report,
                    f"{part}-{clip}",
                    path,
                    emotion,
                    clip.split("_")[0],
                    expression=PARTS[part],
                    gender=gender,
                    original_label=written.strip().lower(),
                )
            )
    return finish(CORPUS, root, rows, report)
