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

Values are read back as plain Python values whatever format the dataset was saved with
(``set_format("numpy")`` or ``"torch"``). A label is text or an integer: with a ``ClassLabel``
the integer is a class index, its name the emotion; -1 (the datasets convention for "no
label", often a whole test split) is skipped and counted in the report; any other index
outside the names is one line naming the row. Labels, speakers and ids that are not text or
integers (bytes, lists, dicts, bools, fractional floats) are one line naming the row and the
column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurestore.corpora.base import CorpusManifest, CorpusReport, finish, label_value, normalise_gender
from featurestore.errors import CorpusError, SermtlError
from featurestore.hf_audio import load_dataset_folder, make_reference

_AUDIO_NAMES = ("audio", "file", "path", "wav")


def prepare_hf(
    root: str | os.PathLike,
    label: str = "emotion",
    speaker: str = "speaker",
    audio: str | None = None,
    utt_id: str | None = None,
    split: str | None = None,
) -> CorpusManifest:
    """Manifest of a saved ``datasets`` dataset (see the module docstring).

    Raises
    ------
    SermtlError
        Not a saved dataset, a named column or split it does not have (the message lists
        what it has), an empty or missing label, a label, speaker or id that is not text
        or an integer, a ``ClassLabel`` index outside its names (-1 aside).
    """
    from featurestore.audio import audio_duration

    folder = Path(root).expanduser()
    loaded = load_dataset_folder(folder)
    splits = {None: loaded} if hasattr(loaded, "features") else dict(loaded)
    if split is not None:
        if split not in splits:
            raise CorpusError(f"hf: {folder} has no split {split!r} (splits: {', '.join(map(str, splits))})")
        splits = {split: splits[split]}
    name = folder.name
    report = CorpusReport(name)
    rows = []
    for split_name, table in splits.items():
        where = f"{folder}" + (f" split {split_name!r}" if split_name else "")
        columns = table.column_names
        for option, column in (
            ("label", label),
            ("speaker", speaker if speaker != "none" else None),
            ("utt_id", utt_id),
        ):
            if column is not None and column not in columns:
                raise CorpusError(
                    f"hf: --option {option}={column}: {where} has no such column (columns: {', '.join(columns)})"
                )
        audio_column = audio or _audio_column(table)
        if audio_column not in columns:
            raise CorpusError(
                f"hf: --option audio={audio_column}: {where} has no such column (columns: {', '.join(columns)})"
            )
        names = getattr(table.features[label], "names", None)
        keep = [c for c in (label, speaker if speaker != "none" else None, utt_id, "gender") if c and c in columns]
        for row, values in enumerate(table.with_format(None).select_columns(keep)):
            at = f"hf: {where} row {row}"
            emotion = _emotion(values[label], names, f"{at}, column {label!r}")
            if emotion is None:
                report.add("no_label", f"{where} row {row}")
                continue
            reference = make_reference(folder, split_name, audio_column, row)
            try:
                duration = audio_duration(reference)
            except SermtlError as exc:
                report.add("unreadable", exc)
                duration = None
            utt = _text(values[utt_id], f"{at}, column {utt_id!r}") if utt_id else f"{split_name or name}-{row}"
            if utt is None:
                raise CorpusError(f"{at} has no {utt_id!r}")
            rows.append(
                {
                    "utt_id": utt,
                    "path": reference,
                    "duration": duration,
                    "emotion": emotion,
                    "speaker": _text(values[speaker], f"{at}, column {speaker!r}") if speaker != "none" else None,
                    "gender": normalise_gender(values.get("gender")),
                    "corpus": name,
                    **({"split": split_name} if split_name else {}),
                }
            )
    return finish(name, folder, rows, report)


def _text(value: Any, what: str) -> str | None:
    """A speaker or id: text or an integer as stripped text, ``None`` when empty."""
    value = label_value(value, what)
    return None if value is None or str(value).strip() == "" else str(value).strip()


def _emotion(value: Any, names: Sequence[str] | None, what: str) -> str | None:
    """The emotion of a label value: a ``ClassLabel`` index's name, or the text; ``None`` for
    the ``ClassLabel`` index -1 ("no label")."""
    value = label_value(value, what)
    if value is None or str(value).strip() == "":
        raise CorpusError(f"{what}: no label")
    if names is not None and isinstance(value, int):
        if value == -1:
            return None
        if not 0 <= value < len(names):
            raise CorpusError(
                f"{what}: class index {value} is outside its ClassLabel's {len(names)} names (0..{len(names) - 1})"
            )
        value = names[value]
    return str(value).strip().lower()


def _audio_column(table) -> str:
    """The ``Audio`` column, else the first column named like audio."""
    for column, feature in table.features.items():
        if type(feature).__name__ == "Audio":
            return column
    for column in _AUDIO_NAMES:
        if column in table.column_names:
            return column
    raise CorpusError(
        f"hf: no audio column found (columns: {', '.join(table.column_names)}); give --option audio=COLUMN"
    )
