"""A Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (a ``Dataset`` or a
``DatasetDict`` of splits): the way most emotion corpora are shared now.

Options name the columns: ``label`` (default ``emotion``; a ``ClassLabel`` gives its class
names), ``speaker`` (default ``speaker``; ``none`` for a dataset without speakers), ``audio``
(default: the ``Audio`` column, else a column named ``audio``, ``file`` or ``path``), ``id``
(default: none, rows are named ``<split>-<row>``) and ``split`` (default: every split).
The audio may be decoded arrays at any sampling rate, encoded bytes or file paths; it is
read from the dataset when features are extracted (:mod:`featurestore.hf_audio`), so
nothing is copied out. ``gender`` is kept when the dataset has that column. Durations are
measured (each row's audio is read once); a row whose audio does not decode is reported and
kept without a duration, for ``extract`` to fail on or skip.
"""

from __future__ import annotations

import os
from pathlib import Path

from featurestore.corpora.base import CorpusManifest, CorpusReport, finish, normalise_gender
from featurestore.errors import SermtlError
from featurestore.hf_audio import load_dataset_folder, make_reference

_AUDIO_NAMES = ("audio", "file", "path", "wav")


def prepare_hf(root: str | os.PathLike, label: str = "emotion", speaker: str = "speaker", audio: str | None = None,
               utt_id: str | None = None, split: str | None = None) -> CorpusManifest:
    """Manifest of a saved ``datasets`` dataset (see the module docstring).

    Raises:
        SermtlError: not a saved dataset, a named column or split it does not have (the
            message lists what it has), an empty or missing label.
    """
    from featurestore.audio import audio_duration

    folder = Path(root).expanduser()
    loaded = load_dataset_folder(folder)
    splits = {None: loaded} if hasattr(loaded, "features") else dict(loaded)
    if split is not None:
        if split not in splits:
            raise SermtlError(f"hf: {folder} has no split {split!r} (splits: {', '.join(map(str, splits))})")
        splits = {split: splits[split]}
    name = folder.name
    report = CorpusReport(name)
    rows = []
    for split_name, table in splits.items():
        where = f"{folder}" + (f" split {split_name!r}" if split_name else "")
        columns = table.column_names
        for option, column in (("label", label), ("speaker", speaker if speaker != "none" else None), ("utt_id", utt_id)):
            if column is not None and column not in columns:
                raise SermtlError(f"hf: --option {option}={column}: {where} has no such column (columns: {', '.join(columns)})")
        audio_column = audio or _audio_column(table)
        if audio_column not in columns:
            raise SermtlError(f"hf: --option audio={audio_column}: {where} has no such column (columns: {', '.join(columns)})")
        names = getattr(table.features[label], "names", None)
        keep = [c for c in (label, speaker if speaker != "none" else None, utt_id, "gender") if c and c in columns]
        for row, values in enumerate(table.select_columns(keep)):
            value = values[label]
            if value is None or str(value).strip() == "":
                raise SermtlError(f"hf: {where} row {row} has no {label!r}")
            emotion = names[value] if names is not None and isinstance(value, int) else str(value)
            reference = make_reference(folder, split_name, audio_column, row)
            try:
                duration = audio_duration(reference)
            except SermtlError as exc:
                report.add("unreadable", exc)
                duration = None
            utt = str(values[utt_id]) if utt_id else f"{split_name or name}-{row}"
            rows.append({"utt_id": utt, "path": reference, "duration": duration, "emotion": emotion.strip().lower(),
                         "speaker": str(values[speaker]) if speaker != "none" and values[speaker] is not None else None,
                         "gender": normalise_gender(values.get("gender")), "corpus": name,
                         **({"split": split_name} if split_name else {})})
    return finish(name, folder, rows, report)


def _audio_column(table) -> str:
    """The ``Audio`` column, else the first column named like audio."""
    for column, feature in table.features.items():
        if type(feature).__name__ == "Audio":
            return column
    for column in _AUDIO_NAMES:
        if column in table.column_names:
            return column
    raise SermtlError(f"hf: no audio column found (columns: {', '.join(table.column_names)}); give --option audio=COLUMN")
