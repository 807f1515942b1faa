"""RAVDESS (Livingstone & Russo, 2018), acted North American English; CC BY-NC-SA 4.0.

Layout: ``<root>/Actor_<aa>/<MM>-<VV>-<EE>-<II>-<SS>-<RR>-<AA>.wav``: modality ``MM``
(03 audio-only; 01/02 are video files, left out by design), vocal channel ``VV`` (01
speech, 02 song), emotion ``EE`` (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
06 fear, 07 disgust, 08 surprise), intensity ``II`` (01 normal, 02 strong), statement
``SS``, repetition ``RR``, actor ``AA`` (odd male, even female).

Rows: ``utt_id`` ``ravdess-<file stem>``, ``speaker`` ``Actor_<AA>`` from the file name,
``gender`` from the actor number, ``expression`` ``acted``; extras ``channel``
(speech/song), ``intensity`` (normal/strong), ``statement``, ``repetition``.
``classes="4class"`` keeps neutral, happy, sad, angry as in the paper's IEMOCAP setup.

Copies can hold a stray file in another actor's folder (the shared ``ravdess_subset``
has actor 02's ``03-01-05-01-01-01-02.wav`` in ``Actor_05/``): a file whose folder and
name disagree is reported (``speaker_mismatch``); two files with the same name are an
error naming both, unless ``on_duplicate="skip"``, which keeps the one in its own actor's
folder and reports the other (``duplicate``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from featurestore.corpora.base import (
    Classes,
    ClassMap,
    CorpusManifest,
    CorpusReport,
    check_root,
    finish,
    make_row,
    named_files,
)
from featurestore.errors import CorpusError

CORPUS = "ravdess"
LABELS = ClassMap(
    {
        "01": "neutral",
        "02": "calm",
        "03": "happy",
        "04": "sad",
        "05": "angry",
        "06": "fear",
        "07": "disgust",
        "08": "surprise",
    }
)
_NAME = re.compile(r"^(\d\d)-(0[12])-(\d\d)-(0[12])-(\d\d)-(\d\d)-(\d\d)$")
_FOLDER = re.compile(r"^actor_(\d+)$", re.IGNORECASE)


def _in_own_folder(row: dict[str, Any]) -> bool:
    match = _FOLDER.match(Path(row["path"]).parent.name)
    return bool(match) and f"Actor_{int(match.group(1)):02d}" == row["speaker"]


def _drop_duplicates(
    rows: list[dict[str, Any]], on_duplicate: Literal["fail", "skip"], report: CorpusReport
) -> list[dict[str, Any]]:
    """Rows with unique ids: ``"fail"`` raises on a repeated id (naming both files),
    ``"skip"`` keeps the copy in its own actor's folder and reports the others.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["utt_id"], []).append(row)
    kept = []
    for utt_id, copies in groups.items():
        own = [row for row in copies if _in_own_folder(row)]
        if len(copies) > 1 and (on_duplicate == "fail" or len(own) != 1):
            files = " and ".join(row["path"] for row in copies)
            hint = (
                "; pass on_duplicate='skip' to keep the copy in its own actor's folder"
                if on_duplicate == "fail"
                else ""
            )
            raise CorpusError(f"{CORPUS}: duplicate utterance id {utt_id!r}: {files}{hint}")
        keep = own[0] if len(copies) > 1 else copies[0]
        kept.append(keep)
        for row in copies:
            if row is not keep:
                report.add("duplicate", f"{row['path']} (same name as {keep['path']})")
    return kept


def prepare_ravdess(
    root: str | os.PathLike, classes: Classes = "all", on_duplicate: Literal["fail", "skip"] = "fail"
) -> CorpusManifest:
    """Manifest of RAVDESS audio files.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding ``Actor_01/``, ``Actor_02/``, ...
    classes : Classes
        Emotions to keep (default all eight; ``"4class"`` for the paper's four).
    on_duplicate : {"fail", "skip"}
        ``"fail"`` (default) or ``"skip"``; see the module docstring.

    Raises
    ------
    SermtlError
        Bad root, an emotion code RAVDESS does not define (names the file), or a
        duplicate file name (names both files).
    """
    root = check_root(root, CORPUS)
    if on_duplicate not in ("fail", "skip"):
        raise CorpusError(f"option 'on_duplicate' must be 'fail' or 'skip', got {on_duplicate!r}")
    class_map = LABELS.select(classes)
    report = CorpusReport(CORPUS)
    rows = []
    for path, (modality, channel, code, intensity, statement, repetition, actor) in named_files(root, _NAME, report):
        if modality != "03":
            report.exclude(f"modality {modality}")
            continue
        emotion = class_map.resolve(code, path, report)
        if emotion is None:
            continue
        row = make_row(
            report,
            path.stem,
            path,
            emotion,
            f"Actor_{actor}",
            expression="acted",
            gender="M" if int(actor) % 2 else "F",
            channel="speech" if channel == "01" else "song",
            intensity="normal" if intensity == "01" else "strong",
            statement=statement,
            repetition=repetition,
        )
        if not _in_own_folder(row):
            report.add("speaker_mismatch", f"{path} (name says Actor_{actor})")
        rows.append(row)
    return finish(CORPUS, root, _drop_duplicates(rows, on_duplicate, report), report)
