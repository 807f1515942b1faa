"""Any corpus described by a CSV file: the long tail (CREMA-D, MSP-Podcast, your own data).

Columns: at least ``utt_id,path,emotion,speaker``; optionally ``start``, ``end``,
``duration``, ``expression``, ``gender``, ``session``, ``corpus`` and any extra column,
which is kept. Relative paths are resolved against the CSV's folder (or ``base_dir``).
Utterance ids are kept as written.

Filled in when empty: ``duration`` (``end - start`` for a segment, else the file's length
from its header minus ``start``) and ``corpus`` (the ``corpus`` option, else the CSV's
file name without suffix). An audio file whose header cannot be read is reported
(``manifest.report``) and kept without a duration, for the extraction stage to fail on
or skip.
"""

from __future__ import annotations

import os
from pathlib import Path

from featurestore.corpora.base import CorpusManifest, CorpusReport, finish, read_duration
from featurestore.errors import CorpusError
from featurestore.manifest import Manifest


def prepare_csv(
    path: str | os.PathLike, corpus: str | None = None, base_dir: str | os.PathLike | None = None
) -> CorpusManifest:
    """Manifest from a CSV file, with ``duration`` and ``corpus`` filled in.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    corpus : str, optional
        Value for rows whose ``corpus`` is empty (default: the CSV file's stem).
    base_dir : str or os.PathLike, optional
        Folder that relative paths start from (default: the CSV's folder).

    Raises
    ------
    SermtlError
        Missing file, missing required column (names it), empty required value, a
        segment with no audio, or a duplicate id (names both files).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CorpusError(f"csv: manifest not found: {path}")
    if not path.is_file():
        raise CorpusError(f"csv: manifest is not a file: {path}")
    name = corpus or path.stem
    report = CorpusReport(name)
    rows = []
    for row in Manifest.read_csv(path, base_dir=base_dir):
        end = row["end"]
        if row["duration"] is None and end is None:
            end = read_duration(row["path"], report)
        if row["duration"] is None and end is not None:
            row["duration"] = end - (row["start"] or 0.0)
        if row["duration"] is not None and row["duration"] <= 0:
            raise CorpusError(f"{path}: utterance {row['utt_id']!r} has no audio between start and end")
        row["corpus"] = row["corpus"] or name
        rows.append(row)
    return finish(name, path, rows, report)
