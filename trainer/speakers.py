"""Speaker normalisation (``--input-norm speaker``): each utterance's features standardised
with the statistics of its own speaker's utterances.

Statistics come from features only, never from labels, over every utterance of the speaker
in the store: for a training speaker, their training utterances; for a test speaker of a
speaker-independent protocol, their (unlabelled) test utterances. This is the usual
transductive practice of speaker-independent SER, and it is what the numbers of a
``--input-norm speaker`` run mean: the test speaker's recordings are all available, as
they are when a deployed model adapts to a new speaker's session.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from featurestore.errors import ConfigError

SPEAKER_COLUMN = "speaker"


def speaker_groups(manifest: Any, ids: Sequence[str], column: str = SPEAKER_COLUMN) -> dict[str, list[str]]:
    """``{speaker: [utt_id, …]}`` for ``ids``; a one-line error when the manifest has no
    speaker column or an utterance has no speaker."""
    if column not in manifest.columns:
        raise ConfigError(f"--input-norm speaker: the store's manifest has no {column!r} column")
    groups: dict[str, list[str]] = defaultdict(list)
    missing = []
    for utt_id in ids:
        speaker = manifest[utt_id][column]
        if speaker in (None, ""):
            missing.append(utt_id)
        else:
            groups[str(speaker)].append(utt_id)
    if missing:
        raise ConfigError(
            f"--input-norm speaker: {len(missing)} utterance(s) have no {column} "
            f"(first: {missing[0]}); give every row a speaker or use --input-norm global"
        )
    return dict(groups)


def classes_per_speaker(manifest: Any, ids: Sequence[str], label: str, column: str = SPEAKER_COLUMN) -> dict[str, set]:
    """``{speaker: the values of label among their utterances}`` over ``ids`` (``None`` for
    an unlabelled row)."""
    classes: dict[str, set] = defaultdict(set)
    for utt_id in ids:
        classes[str(manifest[utt_id][column])].add(manifest[utt_id][label])
    return dict(classes)


def warn_if_speakers_do_not_span_the_classes(
    manifest: Any, ids: Sequence[str], label: str, column: str = SPEAKER_COLUMN
) -> None:
    """Warn when most speakers' utterances hold a single class: their statistics then carry
    the class itself, and standardising with them removes it (on URDU, where 26 of 29 speakers
    have one emotion, speaker normalisation cost 20 UWA points; docs/training.md). A
    diagnostic of the corpus before training; it changes nothing the model sees."""
    classes = classes_per_speaker(manifest, ids, label, column)
    single = [speaker for speaker, values in classes.items() if len(values) == 1]
    if classes and len(single) > len(classes) / 2:
        warnings.warn(
            f"--input-norm speaker: {len(single)} of {len(classes)} speakers have utterances of a single "
            f"{label} only, so their statistics carry the {label} itself and normalising by them removes it; "
            "this corpus is likely better served by --input-norm global",
            stacklevel=2,
        )


def choose_input_norm(manifest: Any, ids: Sequence[str], label: str, column: str = SPEAKER_COLUMN) -> tuple[str, str]:
    """What ``--input-norm auto`` becomes for a run training on ``ids``: ``speaker`` when more
    than half of the speakers have utterances of more than half of the ``label`` classes
    (their statistics then describe the voice, not the class), else ``global``; with the
    reason, in words. Of the labels, only the training rows' are read; every row needs a
    speaker (test speakers are normalised with their own statistics), else ``global``.
    """
    if column not in manifest.columns or label not in manifest.columns:
        return "global", f"the manifest has no {column if column not in manifest.columns else label!r} column"
    unknown = sum(speaker in (None, "") for speaker in manifest.column(column))
    if unknown:
        return "global", f"{unknown} utterance(s) have no {column}"
    labelled = {
        speaker: values - {None} for speaker, values in classes_per_speaker(manifest, ids, label, column).items()
    }
    classes = {speaker: values for speaker, values in labelled.items() if values}
    labels = set().union(*classes.values())
    covering = sum(2 * len(values) > len(labels) for values in classes.values())
    counts = (
        f"{covering} of {len(classes)} speakers have utterances of more than half of the {len(labels)} {label} classes"
    )
    if classes and 2 * covering > len(classes):
        return "speaker", counts
    return "global", f"only {counts}, so speaker statistics would carry the {label} itself"


def speaker_normalised_vectors(
    vectors: Mapping[str, np.ndarray], groups: Mapping[str, Sequence[str]]
) -> dict[str, np.ndarray]:
    """Utterance vectors z-scored per speaker (standard deviations below 1e-8 count as 1).

    A speaker with a single utterance has no spread of their own: their vector is
    standardised with the statistics of all utterances instead (a warning says how many).
    """
    everyone = np.stack([vectors[u] for ids in groups.values() for u in ids])
    pooled = (everyone.mean(axis=0), _safe_std(everyone))
    out, alone = {}, []
    for speaker, ids in groups.items():
        block = np.stack([vectors[u] for u in ids])
        mean, std = (block.mean(axis=0), _safe_std(block)) if len(ids) > 1 else pooled
        if len(ids) == 1:
            alone.append(speaker)
        for utt_id, row in zip(ids, (block - mean) / std):
            out[utt_id] = row
    if alone:
        warnings.warn(
            f"--input-norm speaker: {len(alone)} speaker(s) with a single utterance (first: {alone[0]}) "
            "are standardised with the statistics of all utterances",
            stacklevel=2,
        )
    return out


def _safe_std(block: np.ndarray) -> np.ndarray:
    std = block.std(axis=0)
    return np.where(std < 1e-8, 1.0, std)
