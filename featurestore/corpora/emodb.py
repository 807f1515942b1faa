"""Berlin EmoDB (Burkhardt et al., 2005), acted German speech; http://emodb.bilderbar.info.

Layout: ``<root>/wav/<spk><text><emotion><version>.wav`` (``root`` may also be the ``wav``
folder itself), e.g. ``03a01Fa.wav``: speaker ``03``, text ``a01``, emotion letter ``F``
(W angry, L boredom, E disgust, A fear, F happy, T sad, N neutral), version ``a``.
10 speakers, men 03, 10, 11, 12, 15; 535 files.

Rows: ``utt_id`` ``emodb-03a01Fa``, ``speaker`` ``03``, ``gender`` from the speaker,
``expression`` ``acted``; extra ``text``. Wavs not named this way are reported as ``unparsed``.
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

CORPUS = "emodb"
LABELS = ClassMap({"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"})
MALE_SPEAKERS = frozenset({"03", "10", "11", "12", "15"})
_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Za-z])([a-z])$")


def prepare_emodb(root: str | os.PathLike, classes: Classes = "all") -> CorpusManifest:
    """Manifest of EmoDB.

    Parameters
    ----------
    root : str or os.PathLike
        The EmoDB folder (holding ``wav/``) or its ``wav`` folder.
    classes : Classes
        Emotions to keep (default all seven).

    Raises
    ------
    SermtlError
        Bad root, or an emotion letter EmoDB does not define (names the file).
    """
    root = check_root(root, CORPUS)
    wav_dir = root / "wav" if (root / "wav").is_dir() else root
    class_map = LABELS.select(classes)
    report = CorpusReport(CORPUS)
    rows = []
    for path, (speaker, text, letter, _version) in named_files(wav_dir, _NAME, report):
        emotion = class_map.resolve(letter, path, report)
        if emotion is not None:
            rows.append(
                make_row(
                    report,
                    path.stem,
                    path,
                    emotion,
                    speaker,
                    expression="acted",
                    gender="M" if speaker in MALE_SPEAKERS else "F",
                    text=text,
                )
            )
    return finish(CORPUS, wav_dir, rows, report)
