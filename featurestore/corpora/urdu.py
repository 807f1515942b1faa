"""URDU (Latif et al., 2018): spontaneous Urdu speech from TV talk shows; research use only.

Layout: ``<root>/<Emotion>/S<G><id>_F<n>_<E><k>.wav`` with ``<Emotion>`` in Angry, Happy,
Neutral, Sad; ``<G>`` gender (M/F), ``<id>`` speaker number, ``F<n>`` the speaker's file
number, ``<E>`` the emotion code (A, H, N, S), ``<k>`` a running number. 400 files,
44.1 kHz (resampled when loaded, not here).

Rows: ``utt_id`` ``urdu-SM1_F10_A010``, ``speaker`` ``SM1``, ``gender`` from ``<G>``,
``expression`` ``spontaneous``. A file whose folder and code disagree is left out and
reported (``label_mismatch``); a wav not named this way is reported (``unparsed``).
"""

from __future__ import annotations

import os
import re

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

CORPUS = "urdu"
LABELS = ClassMap({"A": "angry", "H": "happy", "N": "neutral", "S": "sad"})
#: Emotion code -> folder name.
FOLDERS = {"A": "Angry", "H": "Happy", "N": "Neutral", "S": "Sad"}
_NAME = re.compile(r"^(S([MF])\d+)_F\d+_([A-Z])\d+$", re.IGNORECASE)


def prepare_urdu(root: str | os.PathLike, classes: Classes = "all") -> CorpusManifest:
    """Manifest of the URDU corpus.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding ``Angry/``, ``Happy/``, ``Neutral/``, ``Sad/``.
    classes : Classes
        Emotions to keep (default all four).

    Raises
    ------
    SermtlError
        Bad root, or an emotion code URDU does not define (names the file).
    """
    root = check_root(root, CORPUS)
    class_map = LABELS.select(classes)
    report = CorpusReport(CORPUS)
    rows = []
    for path, groups in named_files(root, _NAME, report):
        speaker, gender, code = (group.upper() for group in groups)
        emotion = class_map.resolve(code, path, report)
        if path.parent.name.lower() != FOLDERS.get(code, "").lower():
            report.add("label_mismatch", f"{path} (code {code}, folder {path.parent.name})")
        elif emotion is not None:
            rows.append(make_row(report, path.stem, path, emotion, speaker, expression="spontaneous", gender=gender))
    return finish(CORPUS, root, rows, report)
