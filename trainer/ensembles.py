"""Seed ensembles of ``cv --repeats N``: the mean of the seeds' test probabilities.

Each seed's cross-validation (``OUT/seed_<s>``) tests the utterances of its folds by models
that never trained on them (nor, under group protocols, on their speakers), and saves
those predictions (``fold_<k>/predictions.csv``). The ensemble's prediction of an
utterance is the mean, over the seeds that tested it, of those emotion probabilities (a
class missing from a fold's columns, absent from its training rows, counts as 0; the
classes are the union over all folds, sorted), its class the most probable one. A seed
whose folds test an utterance twice (a fold file may) weighs once, with the mean of its
predictions.

**Scoring on each seed's folds.** For seed s and fold k, the ensemble's predictions of the
test utterances of seed s's fold k (``seed_<s>/folds.json``) are scored with
:func:`trainer.metrics.evaluate` (``n``, ``wa``, ``uwa``, ``per_class_recall``,
``labels``, ``confusion``: the keys of a fold's ``metrics.json`` that apply), each fold
recorded with its seed and :func:`~trainer.folds.test_digest`. So the ensemble pairs by
(seed, fold), on the same test utterances, with any run of those seeds: another ``cv
--repeats``, or ``sermtl baseline --repeats`` (the SVM on the same folds), in ``sermtl
compare``. Each seed's folds are averaged as a run's are
(:func:`~trainer.metrics.average_folds`, its own ``pooled`` included), the seeds as in
``repeats.json`` (:func:`~trainer.metrics.summarise_repeats`: mean and population std over
seeds), and every utterance's ensemble prediction is also scored as one set (``pooled``).
When the seeds draw the same folds (leave-one-session-out) the per-seed figures are all
equal and their std is 0. Folds do not save auxiliary probabilities or the store's subset
columns, so the ensemble has no ``aux_accuracy`` and no ``subsets``.

Files (written atomically, only when every fold of every seed is finished)::

    OUT/ensemble.json              the scores (:data:`trainer.runfiles.ENSEMBLE`)
    OUT/ensemble_predictions.csv   utt_id, true, pred, p_<class>…, seeds (how many seeds' predictions were averaged)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.atomic import write_json
from featurestore.errors import RunError
from trainer.folds import Fold, load_folds, test_digest
from trainer.metrics import average_folds, evaluate, summarise_repeats
from trainer.runfiles import FoldPredictions, read_predictions, read_run_config, write_predictions

#: The ensemble's scores and predictions, in ``OUT``.
ENSEMBLE_FILE, PREDICTIONS_FILE = "ensemble.json", "ensemble_predictions.csv"
#: How ``ensemble.json`` says the members were combined.
COMBINATION = "mean over seeds of each test utterance's emotion probabilities"


@dataclasses.dataclass(frozen=True)
class SeedRun:
    """One seed's finished cv run: its folds and each fold's checked predictions."""

    seed: int
    folds: list[Fold]
    predictions: list[tuple[Path, FoldPredictions]]
    store_digest: str | None


def finished_seed(run_dir: Path, seed: int) -> SeedRun | None:
    """The folds and predictions of the cv run ``run_dir`` (made with ``seed``), or ``None``
    while a fold of it is unfinished (no ``metrics.json``). A fold's predictions must be of
    exactly its test utterances (one line naming the file otherwise)."""
    if not (run_dir / "folds.json").is_file():
        return None
    folds = load_folds(run_dir / "folds.json")[0]
    if not all((run_dir / f"fold_{fold.fold}" / "metrics.json").is_file() for fold in folds):
        return None
    predictions = []
    for fold in folds:
        path = run_dir / f"fold_{fold.fold}" / "predictions.csv"
        found = read_predictions(path)
        if sorted(found.ids) != sorted(fold.test):
            raise RunError(
                f"{path} does not hold the test utterances of fold {fold.fold} of {run_dir / 'folds.json'}; "
                f"delete {path.parent} to train that fold again"
            )
        predictions.append((path, found))
    return SeedRun(seed, folds, predictions, read_run_config(run_dir / "config.json").get("store_digest"))


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """The mean probabilities ``(len(ids), len(classes))`` of every utterance some seed
    tested, its true label and how many seeds' predictions were averaged (``seeds``)."""

    ids: list[str]
    truth: list[str]
    classes: list[str]
    probabilities: np.ndarray
    seeds: np.ndarray

    def predicted(self) -> list[str]:
        """The most probable class of each utterance (the first of a tie)."""
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    def rows(self) -> list[dict[str, Any]]:
        """The rows of ``ensemble_predictions.csv``."""
        return [
            {
                "utt_id": utt_id,
                "true": true,
                "pred": pred,
                **{f"p_{c}": float(p) for c, p in zip(self.classes, probabilities)},
                "seeds": int(seeds),
            }
            for utt_id, true, pred, probabilities, seeds in zip(
                self.ids, self.truth, self.predicted(), self.probabilities, self.seeds
            )
        ]


def mean_probabilities(runs: Sequence[SeedRun]) -> Ensemble:
    """Per utterance, the mean over the seeds of ``runs`` that tested it of their emotion
    probabilities (module docstring); the utterances in order of first appearance. A true
    label that differs between two seeds' files is one line naming both."""
    classes = sorted({c for run in runs for _, fold in run.predictions for c in fold.classes})
    column = {c: i for i, c in enumerate(classes)}
    index: dict[str, int] = {}
    truth: list[str] = []
    source: list[Path] = []
    for run in runs:
        for path, fold in run.predictions:
            for utt_id, label in zip(fold.ids, fold.truth):
                i = index.setdefault(utt_id, len(index))
                if i == len(truth):
                    truth.append(label)
                    source.append(path)
                elif truth[i] != label:
                    raise RunError(
                        f"{path}: {utt_id!r} is {label!r} there but {truth[i]!r} in {source[i]}; "
                        "the seeds' runs are not of one store and label"
                    )
    total = np.zeros((len(index), len(classes)))
    seeds = np.zeros(len(index), dtype=np.int64)
    for run in runs:
        sums, tested = np.zeros_like(total), np.zeros(len(index))
        for _, fold in run.predictions:
            rows = np.array([index[u] for u in fold.ids], dtype=np.int64)
            sums[np.ix_(rows, [column[c] for c in fold.classes])] += fold.probabilities
            tested[rows] += 1
        seen = tested > 0
        total[seen] += sums[seen] / tested[seen, None]
        seeds += seen
    return Ensemble(list(index), truth, classes, total / np.maximum(seeds, 1)[:, None], seeds)


def _scores(truth: list[str], predicted: list[str], classes: list[str]) -> dict[str, Any]:
    """:func:`~trainer.metrics.evaluate` of one set, without the (empty) subsets."""
    metrics = evaluate(truth, predicted, classes)
    metrics.pop("subsets", None)
    return metrics


def score_ensemble(ensemble: Ensemble, runs: Sequence[SeedRun]) -> dict[str, Any]:
    """The content of ``ensemble.json``: the ensemble scored on every (seed, fold) of
    ``runs``, per seed (mean over its folds), over seeds and over all utterances."""
    position = {utt_id: i for i, utt_id in enumerate(ensemble.ids)}
    predicted = ensemble.predicted()
    results: dict[int, dict[str, Any]] = {}
    for run in runs:
        per_fold = []
        for fold in run.folds:
            rows = [position[u] for u in fold.test]
            scores = _scores([ensemble.truth[i] for i in rows], [predicted[i] for i in rows], ensemble.classes)
            per_fold.append({**scores, "fold": fold.fold, "seed": run.seed, "test_digest": test_digest(fold.test)})
        results[run.seed] = {**average_folds(per_fold), "aux_accuracy": None, "folds": per_fold, "seed": run.seed}
    return {
        "ensemble": {"members": len(runs), "combination": COMBINATION},
        **summarise_repeats(results),
        "pooled": _scores(ensemble.truth, predicted, ensemble.classes),
        "results": {str(seed): result for seed, result in results.items()},
    }


def seed_ensemble(out: str | Path, seeds: Sequence[int]) -> dict[str, Any] | None:
    """Build the ensemble of the cv runs ``OUT/seed_<s>`` of ``seeds``, write
    ``OUT/ensemble_predictions.csv`` and ``OUT/ensemble.json`` and return the latter's
    content; ``None``, writing nothing, while a fold of a seed is unfinished."""
    out = Path(out)
    runs = []
    for seed in seeds:
        run = finished_seed(out / f"seed_{seed}", seed)
        if run is None:
            return None
        runs.append(run)
    stores = {run.store_digest for run in runs} - {None}
    if len(stores) > 1:
        raise RunError(f"{out}: the seeds' runs were trained on different states of the store; run them again")
    ensemble = mean_probabilities(runs)
    summary = score_ensemble(ensemble, runs)
    write_predictions(out / PREDICTIONS_FILE, ensemble.rows())
    write_json(out / ENSEMBLE_FILE, summary)
    return summary


def describe_ensemble(summary: dict[str, Any]) -> str:
    """One line of ``ensemble.json``: WA and UWA (mean over the seeds' folds) and pooled."""
    return (
        f"ensemble of {summary['ensemble']['members']} seeds: WA {summary['wa']['mean']:.2f}, "
        f"UWA {summary['uwa']['mean']:.2f} (%, mean over the seeds' folds); "
        f"pooled WA {summary['pooled']['wa']:.2f}, UWA {summary['pooled']['uwa']:.2f}"
    )
