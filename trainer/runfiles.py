"""The files a run directory holds, each declared once (:mod:`featurestore.schema`) and
checked when read back: a wrong type, a NaN, an absurd size or a missing key in any of
them is one line naming the file and the key, before anything uses the data.

============================  =====================  ==================================
file                          shape                  read by
============================  =====================  ==================================
``RUN/config.json``           :data:`RUN_CONFIG`     resume, ``compare``, ``report``,
                                                     ``train --all-data --config``
``RUN/folds.json``            :data:`FOLDS`          resume, ``compare``
``RUN/fold_<k>/metrics.json`` :data:`FOLD_METRICS`   resume, ``compare``, ``report``
``RUN/fold_<k>/history.json`` :data:`HISTORY`        ``report``
``RUN/results.json``          :data:`RESULTS`        ``report``, ``train --all-data``
``RUN/repeats.json``          :data:`REPEATS`        ``report``
``SWEEP/sweep.json``          :data:`SWEEP`          ``report``
``baseline --out`` JSON       :data:`SVM_RESULTS`    ``compare``
``RUN/ensemble.json``         :data:`ENSEMBLE`       ``compare``
``report --paper`` JSON       :data:`PAPER`          ``report``
============================  =====================  ==================================

A fold's ``predictions.csv`` is read back (for the seed ensemble) by :func:`read_predictions`.
Accuracies are percentages in [0, 100]; epochs lie in the range of ``--epochs``
(:data:`trainer.limits.MAX_EPOCHS`); class lists hold at most
:data:`~trainer.limits.MAX_CLASSES` names and fold lists at most
:data:`~trainer.limits.MAX_FOLDS` folds.

>>> check({"wa": 50.0, "uwa": 1e308}, FOLD_METRICS, "fold_1/metrics.json")
Traceback (most recent call last):
...
featurestore.errors.SermtlError: fold_1/metrics.json: uwa: expected a finite number in [0, 100], got 1e+308
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.atomic import atomic_write, read_json
from featurestore.errors import ConfigError, RunError, SermtlError, describe_error
from featurestore.schema import Anything, ListOf, MapOf, Number, OneOf, Record, Shape, Text, check, maybe
from trainer.limits import MAX_CLASSES, MAX_EPOCHS, MAX_FOLDS, MAX_SEEDS

PERCENT = Number(0, 100)
EPOCH = Number(1, MAX_EPOCHS, integer=True)
SEED = Number(0, 2**32 - 1, integer=True)
COUNT = Number(0, 10**9, integer=True)
NAME = Text(max_length=1000)
CLASS_NAMES = ListOf(NAME, max_items=MAX_CLASSES)
RECALLS = MapOf(maybe(PERCENT), max_items=MAX_CLASSES)


def _square(labels: Any, matrix: Any, key: str) -> tuple[str, str] | None:
    if isinstance(labels, list) and isinstance(matrix, list):
        if len(matrix) != len(labels) or any(len(row) != len(labels) for row in matrix):
            return key, f"expected {len(labels)} x {len(labels)} counts (one per pair of labels)"
    return None


def _square_confusion(value: dict) -> tuple[str, str] | None:
    """The confusion matrices (the fold's, and the pooled one of results) are
    ``len(labels)`` rows of ``len(labels)`` counts."""
    pooled = value.get("pooled") or {}
    return _square(value.get("labels"), value.get("confusion"), "confusion") or _square(
        value.get("labels"), pooled.get("confusion"), "pooled.confusion"
    )


CONFUSION = ListOf(ListOf(COUNT, max_items=MAX_CLASSES), max_items=MAX_CLASSES)
SUBSET_METRICS = Record(
    {
        "n": maybe(COUNT),
        "wa": maybe(PERCENT),
        "uwa": maybe(PERCENT),
        "per_class_recall": maybe(RECALLS),
        "aux_accuracy": maybe(PERCENT),
    }
)
_METRICS = {
    "n": maybe(COUNT),
    "wa": PERCENT,
    "uwa": PERCENT,
    "per_class_recall": maybe(RECALLS),
    "aux_accuracy": maybe(PERCENT),
    "labels": maybe(CLASS_NAMES),
    "confusion": maybe(CONFUSION),
    "subsets": maybe(MapOf(MapOf(SUBSET_METRICS, max_items=MAX_CLASSES), max_items=64)),
    "separability": maybe(MapOf(maybe(Number()), max_items=64)),
    "best_valid_uwa": maybe(PERCENT),
}
#: ``RUN/fold_<k>/metrics.json`` (and a fold of ``baseline --out``: with its ``seed`` and ``test_digest``).
FOLD_METRICS = Record(
    {
        **_METRICS,
        "fold": maybe(Number(1, MAX_FOLDS, integer=True)),
        "best_epoch": maybe(EPOCH),
        "averaged_epochs": maybe(ListOf(EPOCH, max_items=MAX_EPOCHS)),
        "seed": maybe(SEED),
        "test_digest": maybe(Text(max_length=64)),
    },
    rules=(_square_confusion,),
)
SPREAD = Record({"mean": maybe(Number()), "std": maybe(Number(0))})
#: A run's store: its path, or the paths of the stores it fused (``--store A --store B``).
STORE = OneOf((Text(), ListOf(Text(), min_items=2, max_items=16)))
#: ``RUN/results.json``: the folds' means (best epochs averaged), their spread and the folds.
SPREADS = Record(
    {
        "wa": maybe(Number(0)),
        "uwa": maybe(Number(0)),
        "aux_accuracy": maybe(Number(0)),
        "per_class_recall": maybe(MapOf(maybe(Number(0)), max_items=MAX_CLASSES)),
        "subsets": maybe(
            MapOf(
                MapOf(
                    Record({"wa": maybe(Number(0)), "uwa": maybe(Number(0)), "aux_accuracy": maybe(Number(0))}),
                    max_items=MAX_CLASSES,
                ),
                max_items=64,
            )
        ),
        "separability": maybe(MapOf(maybe(Number(0)), max_items=64)),
    }
)
RESULTS = Record(
    {
        **_METRICS,
        "best_epoch": maybe(Number(1, MAX_EPOCHS)),
        "std": maybe(SPREADS),
        "pooled": maybe(
            Record({"wa": PERCENT, "uwa": PERCENT, "per_class_recall": maybe(RECALLS), "confusion": maybe(CONFUSION)})
        ),
        "folds": ListOf(FOLD_METRICS, min_items=1, max_items=MAX_FOLDS),
        "n_folds": maybe(COUNT),
        "protocol": maybe(NAME),
        "aux": maybe(NAME),
        "store": maybe(STORE),
        "seed": maybe(SEED),
    },
    rules=(_square_confusion,),
)
#: ``baseline --out`` of several seeds: the mean ± std over seeds and each seed's :data:`RESULTS`.
SVM_REPEATS = Record({"results": MapOf(RESULTS, max_items=MAX_SEEDS)})
#: ``baseline --out``: one seed's :data:`RESULTS`, or :data:`SVM_REPEATS`.
SVM_RESULTS = Record({"results": maybe(MapOf(RESULTS, max_items=MAX_SEEDS))})
#: ``RUN/config.json``: the run's identity (``protocol`` and ``train`` are then built, and
#: so checked, by :class:`trainer.protocols.Protocol` and :class:`trainer.config.TrainConfig`).
RUN_CONFIG = Record(
    {
        "store": STORE,
        "store_fingerprint": maybe(Text(max_length=256)),
        "store_entries": maybe(COUNT),
        "store_digest": maybe(Text(max_length=256)),
        "protocol": MapOf(Anything(), max_items=64),
        "train": MapOf(Anything(), max_items=256),
    }
)
FOLD = Record(
    {"fold": Number(1, MAX_FOLDS, integer=True), "train": ListOf(NAME), "valid": ListOf(NAME), "test": ListOf(NAME)}
)
#: ``RUN/folds.json``: the header (protocol parameters) and the folds' utterance ids.
FOLDS = Record({"header": MapOf(Anything(), max_items=256), "folds": ListOf(FOLD, min_items=1, max_items=MAX_FOLDS)})
#: ``RUN/fold_<k>/history.json``: one record per epoch trained.
HISTORY = ListOf(
    Record(
        {
            "epoch": EPOCH,
            "alpha": maybe(Number(0, 1)),
            "train_loss": maybe(Number()),
            "valid_loss": maybe(Number()),
            "valid_uwa": maybe(PERCENT),
        }
    ),
    max_items=MAX_EPOCHS,
)
SEED_FIGURES = Record({"wa": PERCENT, "uwa": PERCENT, "pooled_uwa": PERCENT, "aux_accuracy": maybe(PERCENT)})
#: ``RUN/repeats.json`` of ``cv --repeats``: mean ± std over seeds and each seed's figures.
REPEATS = Record(
    {
        "seeds": ListOf(SEED, min_items=1, max_items=MAX_SEEDS),
        "wa": SPREAD,
        "uwa": SPREAD,
        "pooled_uwa": SPREAD,
        "runs": MapOf(SEED_FIGURES, max_items=MAX_SEEDS),
    },
    rules=(
        lambda v: (
            None
            if set(v["runs"]) == {str(s) for s in v["seeds"]}
            else ("runs", "expected one entry per seed of 'seeds'")
        ),
    ),
)
#: ``RUN/ensemble.json``'s all-utterance scores: every test utterance's ensemble prediction as one set.
POOLED_METRICS = Record(
    {
        "n": COUNT,
        "wa": PERCENT,
        "uwa": PERCENT,
        "per_class_recall": maybe(RECALLS),
        "labels": CLASS_NAMES,
        "confusion": maybe(CONFUSION),
    },
    rules=(_square_confusion,),
)


def _one_entry_per_seed(value: dict) -> tuple[str, str] | None:
    """Rule of :data:`ENSEMBLE`: ``runs`` and ``results`` hold the seeds of ``seeds``, each
    result and each of its folds names its seed and its folds their test digests."""
    seeds = {str(seed) for seed in value["seeds"]}
    if value["ensemble"]["members"] != len(value["seeds"]):
        return "ensemble.members", f"expected {len(value['seeds'])} (one per seed of 'seeds')"
    for key in ("runs", "results"):
        if set(value[key]) != seeds:
            return key, "expected one entry per seed of 'seeds'"
    for seed, result in value["results"].items():
        if str(result.get("seed")) != seed:
            return f"results.{seed}.seed", f"expected {seed}"
        for index, fold in enumerate(result["folds"]):
            if str(fold.get("seed")) != seed or not fold.get("test_digest") or fold.get("fold") is None:
                return f"results.{seed}.folds[{index}]", f"expected its fold, seed {seed} and test_digest"
    return None


#: ``RUN/ensemble.json`` of ``cv --repeats``: the seed ensemble (mean probabilities) scored
#: on each seed's folds (``results``, one :data:`RESULTS` per seed, their folds with seed and
#: test digest), the mean ± std over seeds (as :data:`REPEATS`) and over all utterances.
ENSEMBLE = Record(
    {
        "ensemble": Record({"members": Number(1, MAX_SEEDS, integer=True), "combination": Text()}),
        "seeds": ListOf(SEED, min_items=1, max_items=MAX_SEEDS),
        "wa": SPREAD,
        "uwa": SPREAD,
        "pooled_uwa": SPREAD,
        "runs": MapOf(SEED_FIGURES, max_items=MAX_SEEDS),
        "pooled": POOLED_METRICS,
        "results": MapOf(RESULTS, max_items=MAX_SEEDS),
    },
    rules=(_one_entry_per_seed,),
)
_SETTING_DIR = re.compile(r"[A-Za-z0-9._=+-]+")
PAIRED = Record(
    {
        "n": COUNT,
        "mean": maybe(Number()),
        "ci": maybe(ListOf(Number(), min_items=2, max_items=2)),
        "wilcoxon_p": maybe(Number(0, 1)),
    }
)
INTERVAL = Record({"mean": Number(), "ci": maybe(ListOf(Number(), min_items=2, max_items=2))})
SWEEP_SETTING = Record(
    {
        "name": Text(),
        "dir": Text(max_length=255),
        "wa": SPREAD,
        "uwa": SPREAD,
        "pooled_uwa": SPREAD,
        "uwa_interval": INTERVAL,
        "paired_uwa": maybe(PAIRED),
    },
    rules=(
        lambda v: (
            None
            if _SETTING_DIR.fullmatch(v["dir"]) and v["dir"] not in (".", "..")
            else ("dir", f"not a setting folder name: {v['dir'][:100]!r}")
        ),
    ),
)
#: ``SWEEP/sweep.json``: per setting, mean ± std over seeds and the paired difference.
SWEEP = Record(
    {
        "baseline": Text(),
        "seeds": ListOf(SEED, min_items=1, max_items=MAX_SEEDS),
        "settings": ListOf(SWEEP_SETTING, min_items=1, max_items=10**4),
    }
)
PAPER_ROW = Record(
    {
        "wa": maybe(PERCENT),
        "uwa": maybe(PERCENT),
        "per_class_recall": maybe(RECALLS),
        "separability": maybe(MapOf(maybe(Number()), max_items=64)),
    }
)
#: ``report --paper``: a title and reference rows by run name or auxiliary task.
PAPER = Record({"title": maybe(Text()), "rows": MapOf(PAPER_ROW, max_items=1000)})


def read_checked(path: str | Path, shape: Shape) -> Any:
    """The JSON file at ``path`` (read as :func:`featurestore.atomic.read_json` does) checked against ``shape``."""
    try:
        data = read_json(path, expect=list if isinstance(shape, ListOf) else dict)
    except SermtlError as exc:  # unreadable or not JSON: a damaged run file all the same
        raise RunError(str(exc)) from None
    return check(data, shape, str(path), RunError)


def read_run_config(path: str | Path) -> dict[str, Any]:
    """A run's ``config.json`` (:data:`RUN_CONFIG`)."""
    return read_checked(path, RUN_CONFIG)


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A finished fold's ``metrics.json`` (:data:`FOLD_METRICS`)."""
    return read_checked(path, FOLD_METRICS)


def read_results(path: str | Path) -> dict[str, Any]:
    """A run's ``results.json`` (:data:`RESULTS`)."""
    return read_checked(path, RESULTS)


def read_ensemble(path: str | Path) -> dict[str, Any]:
    """A ``cv --repeats`` run's ``ensemble.json`` (:data:`ENSEMBLE`)."""
    return read_checked(path, ENSEMBLE)


@dataclasses.dataclass(frozen=True)
class FoldPredictions:
    """A fold's ``predictions.csv``: the test ids, their true labels and, per id, the
    probability of each of ``classes`` (the file's ``p_<class>`` columns, in order)."""

    ids: list[str]
    truth: list[str]
    classes: list[str]
    probabilities: np.ndarray


def write_predictions(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Per-utterance predictions (``utt_id``, ``true``, ``pred``, ``p_<class>``…, as a fold's
    ``predictions.csv`` and a seed ensemble's hold them), written atomically."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["utt_id"])
        writer.writeheader()
        writer.writerows(rows)


def read_predictions(path: str | Path) -> FoldPredictions:
    """A finished fold's ``predictions.csv``, checked before use: the columns ``utt_id``,
    ``true`` and at least two ``p_<class>`` (each name once), every row a new non-empty id, a
    true label and a probability in [0, 1] per class; one :class:`RunError` line naming the
    file (and the line) otherwise."""
    from featurestore.textfile import read_text_file

    path = Path(path)
    try:
        text = read_text_file(path, str(path))
    except SermtlError as exc:
        raise RunError(str(exc)) from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        columns = {name: index for index, name in enumerate(header)}
        classes = [name[2:] for name in header if name.startswith("p_")]
        missing = next((name for name in ("utt_id", "true") if name not in columns), None)
        if missing or len(classes) < 2 or len(columns) != len(header):
            what = f"no {missing!r} column" if missing else "fewer than 2 p_<class> columns or a column twice"
            raise RunError(f"{path} is damaged ({what})")
        ids, truth, seen, rows = [], [], set(), []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise RunError(f"{path}, line {line}: {len(row)} values, the header has {len(header)}")
            utt_id, label = row[columns["utt_id"]], row[columns["true"]]
            if not utt_id or utt_id in seen or not label:
                what = "an utterance listed twice" if utt_id in seen else "no utterance id or true label"
                raise RunError(f"{path}, line {line}: {what}")
            seen.add(utt_id)
            ids.append(utt_id)
            truth.append(label)
            try:
                rows.append([float(row[columns[f"p_{name}"]]) for name in classes])
            except ValueError:
                raise RunError(f"{path}, line {line}: a probability that is not a number in [0, 1]") from None
        probabilities = np.array(rows, dtype=np.float64).reshape(len(rows), len(classes))
    except csv.Error as exc:
        raise RunError(f"{path} is damaged ({describe_error(exc)})") from None
    within = ((probabilities >= 0) & (probabilities <= 1)).all(axis=1)  # NaN fails both
    if not within.all():
        bad = int(np.flatnonzero(~within)[0])
        raise RunError(f"{path}, line {bad + 2}: a probability that is not a number in [0, 1]")
    return FoldPredictions(ids, truth, classes, probabilities)


#: The arrays of ``RUN/fold_<k>/embeddings.npz``: the test rows' ids and labels (text, one
#: per row) and their embeddings (float, one row each).
EMBEDDING_TEXT = ("ids", "emotion", "aux")
#: The most bytes ``embeddings.npz`` may unpack to, and the widest embedding.
MAX_EMBEDDING_BYTES, MAX_EMBEDDING_DIM = 2**30, 65536


def read_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """A fold's ``embeddings.npz``, checked before use: only the declared arrays, at most
    :data:`MAX_EMBEDDING_BYTES` unpacked (read from the archive's directory first), text
    labels one per id, and a finite float matrix of one row per id."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info.file_size for info in archive.infolist()}
            unknown = sorted(set(members) - {*EMBEDDING_TEXT, "embeddings"})
            if unknown or sum(members.values()) > MAX_EMBEDDING_BYTES:
                what = f"unknown array {unknown[0]!r}" if unknown else f"{sum(members.values())} bytes unpacked"
                raise RunError(f"{path} is damaged ({what})")
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise RunError(f"{path} is damaged ({describe_error(exc)})") from None
    for key in ("ids", "emotion", "embeddings"):
        if key not in arrays:
            raise RunError(f"{path}: no {key!r} array")
    rows = len(arrays["ids"]) if arrays["ids"].ndim == 1 else -1
    for key in (k for k in EMBEDDING_TEXT if k in arrays):
        if arrays[key].dtype.kind != "U" or arrays[key].shape != (rows,):
            raise RunError(
                f"{path}: {key}: expected one text label per id ({max(rows, 0)}), "
                f"got {arrays[key].dtype} of shape {arrays[key].shape}"
            )
    matrix = arrays["embeddings"]
    if (
        matrix.dtype.kind != "f"
        or matrix.ndim != 2
        or matrix.shape[0] != rows
        or not 1 <= matrix.shape[1] <= MAX_EMBEDDING_DIM
    ):
        raise RunError(
            f"{path}: embeddings: expected a float matrix of one row per id ({max(rows, 0)} x at most "
            f"{MAX_EMBEDDING_DIM}), got {matrix.dtype} of shape {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        raise RunError(f"{path}: embeddings: {int((~np.isfinite(matrix)).any(axis=1).sum())} row(s) hold NaN or inf")
    return arrays


def read_paper(path: str | Path) -> dict[str, Any]:
    """A ``report --paper`` file (:data:`PAPER`), named by its flag in errors."""
    from featurestore.textfile import parse_json, read_text_file

    name = f"--paper {path}"
    return check(parse_json(read_text_file(path, name), name), PAPER, name, ConfigError)
