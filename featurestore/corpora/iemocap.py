"""IEMOCAP (Busso et al., 2008), the paper's first corpus; USC SAIL, licence on request.

Layout of ``IEMOCAP_full_release`` (``root`` may be that folder or its parent)::

    Session{1..5}/sentences/wav/<dialog>/<utt>.wav          16 kHz mono, one utterance each
    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt         one line per utterance:
        [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]

Rows: ``utt_id`` ``iemocap-<utt>``; ``speaker`` ``Ses01F`` (session and the gender letter
of the speaking actor, the last part of the utterance id); ``gender`` ``F``/``M``;
``session`` ``Session1``..``Session5`` (the folder name); ``expression`` ``acted`` for
scripted dialogs, ``spontaneous`` for improvised ones; extra ``original_label`` (the code,
e.g. ``exc``). ``start``/``end`` stay empty: each wav already is the utterance.

The default classes are the paper's four: neutral, happy (``hap`` + ``exc``), angry, sad;
the other codes are left out by design and counted in ``manifest.report.excluded``.
On what looks like a full release (all five sessions, at least half the expected
utterances) with the four classes, the counts are compared with :data:`EXPECTED_COUNTS`
(:func:`check_counts`) and each difference is listed in a ``counts`` warning.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
)
from featurestore.errors import CorpusError
from featurestore.manifest import Manifest

CORPUS = "iemocap"
SESSIONS = tuple(f"Session{n}" for n in range(1, 6))

#: Label codes of the release; ``xxx`` (no majority) is never used.
LABELS = ClassMap(
    {
        "neu": "neutral",
        "hap": "happy",
        "exc": "happy",
        "ang": "angry",
        "sad": "sad",
        "fru": "frustrated",
        "sur": "surprise",
        "fea": "fear",
        "dis": "disgust",
        "oth": "other",
        "xxx": None,
    }
)

EXPECTED_TOTAL = 5531
#: Four-class counts of the full release (field notes; SpeechBrain's prep asserts 5531).
EXPECTED_COUNTS: dict[str, dict[str, int]] = {
    "emotion": {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084},
    "original_label": {"exc": 1041},
    "expression": {"acted": 2588, "spontaneous": 2943},
    "session": {"Session1": 1085, "Session2": 1023, "Session3": 1151, "Session4": 1031, "Session5": 1241},
}

_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)")


def find_release(root: Path) -> Path:
    """The folder holding ``Session*``: ``root`` itself or ``root/IEMOCAP_full_release``."""
    for candidate in (root, root / "IEMOCAP_full_release"):
        if any((candidate / s).is_dir() for s in SESSIONS):
            return candidate
    raise CorpusError(f"{CORPUS}: no Session1..Session5 folder in {root} or {root / 'IEMOCAP_full_release'}")


def read_labels(path: Path) -> dict[str, str]:
    """Utterance id -> label code from one ``EmoEvaluation/<dialog>.txt`` file.

    Raises
    ------
    SermtlError
        A line starting with ``[`` that does not parse (names file and line).
    """
    labels = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.startswith("["):
                continue
            match = _LINE.match(line)
            if not match:
                raise CorpusError(f"{path}:{line_no}: unreadable label line {line.strip()!r}")
            labels[match.group(1)] = match.group(2)
    return labels


def expression_of(dialog: str, source: Path) -> str:
    """``acted`` for a scripted dialog, ``spontaneous`` for an improvised one."""
    if "script" in dialog:
        return "acted"
    if "impro" in dialog:
        return "spontaneous"
    raise CorpusError(f"{source}: dialog {dialog!r} is neither scripted nor improvised")


def check_counts(
    manifest: Manifest, expected: dict[str, dict[str, int]] = EXPECTED_COUNTS, total: int = EXPECTED_TOTAL
) -> list[str]:
    """Differences between ``manifest`` and the full release's four-class counts.

    Returns
    -------
    list of str
        One ``"<column> <value>: expected N, found M"`` line per differing count (the
        total first, as ``"utterances: ..."``); empty when every count matches.
    """
    diffs = []
    if len(manifest) != total:
        diffs.append(f"utterances: expected {total}, found {len(manifest)}")
    for column, table in expected.items():
        found = manifest.counts(column) if column in manifest.columns else {}
        for value, count in table.items():
            if found.get(value, 0) != count:
                diffs.append(f"{column} {value}: expected {count}, found {found.get(value, 0)}")
    return diffs


def prepare_iemocap(
    root: str | os.PathLike, classes: Classes = "4class", expect_full_release: bool | None = None
) -> CorpusManifest:
    """Manifest of IEMOCAP's labelled utterances.

    Parameters
    ----------
    root : str or os.PathLike
        ``IEMOCAP_full_release`` or its parent folder.
    classes : Classes
        Emotions to keep (default the paper's four; see
        :data:`featurestore.corpora.base.Classes`).
    expect_full_release : bool or None
        Compare the counts with :data:`EXPECTED_COUNTS` (``True``), never (``False``), or
        when the copy looks like a full release (``None``, the default: all five sessions
        present and at least half the expected utterances found, so that samples and
        test fixtures are not compared). Never compared when ``classes`` is not
        ``"4class"``.

    Returns
    -------
    CorpusManifest
        The manifest; ``manifest.report`` lists wavs without a label line, label lines
        without a wav, excluded codes and, on a full release, count differences.

    Raises
    ------
    SermtlError
        Bad root, an unreadable label line, or an unknown label code.
    """
    release = find_release(check_root(root, CORPUS))
    class_map = LABELS.select(classes)
    report = CorpusReport(CORPUS)
    sessions = [s for s in SESSIONS if (release / s).is_dir()]
    rows = []
    for session in sessions:
        labels, label_files = {}, {}
        # not recursive: Attribute/, Categorical/, Self-evaluation/ hold per-evaluator files
        for label_file in find_files(release / session / "dialog" / "EmoEvaluation", (".txt",), recursive=False):
            for utt, code in read_labels(label_file).items():
                labels[utt], label_files[utt] = code, label_file
        wavs = index_files(find_files(release / session / "sentences" / "wav"), CORPUS)
        for utt, path, code in join_labels(wavs, labels, report, label_files):
            emotion = class_map.resolve(code, label_files[utt], report)
            if emotion is None:
                continue
            dialog, actor = utt.rsplit("_", 1)
            rows.append(
                make_row(
                    report,
                    utt,
                    path,
                    emotion,
                    speaker=utt[:5] + actor[0],
                    expression=expression_of(dialog, label_files[utt]),
                    gender=actor[0],
                    session=session,
                    original_label=code,
                )
            )
    if expect_full_release is None:
        expect_full_release = len(sessions) == len(SESSIONS) and len(rows) >= EXPECTED_TOTAL / 2
    compare = expect_full_release and classes == "4class"
    return finish(CORPUS, release, rows, report, check=check_counts if compare else None)
