"""A classical reference: an RBF-SVM on one vector per utterance (functionals).

The vectors (``--functionals``):

- ``mfcc-stats`` (the default for frame stores): the per-dimension mean and standard
  deviation of each utterance's stored frames (80 values for 40-d MFCC; any frame-level
  feature works, e.g. 160 for ``fbank``);
- ``egemaps`` / ``compare``: openSMILE's own utterance functionals (88 eGeMAPSv02 values,
  6373 ComParE_2016 values), read from a store made with ``sermtl extract --feature
  egemaps-functionals`` / ``compare-functionals`` (the default for such a store).

Per fold, a scikit-learn pipeline ``StandardScaler → SVC(kernel="rbf", C=1,
gamma="scale", class_weight="balanced")`` is fitted on the training and validation rows
together (the SVM has no epochs to select) and scored on the test rows with the same
metrics as the ECAPA-TDNN runs, so the two can be compared fold by fold on the same folds.
With ``input_norm="speaker"`` every vector is first standardised with the statistics of
its speaker's vectors (:mod:`trainer.speakers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.atomic import write_json
from featurestore.errors import ConfigError
from featurestore.manifest import Manifest
from featurestore.options import check_fields, check_value, option
from featurestore.registry import Registry
from featurestore.store.fusion import open_stores
from featurestore.store.reader import FeatureStore
from trainer.folds import Fold, check_folds, test_digest
from trainer.metrics import average_folds, describe_repeats, describe_results, evaluate, summarise_repeats
from trainer.protocols import Protocol, default_protocol
from trainer.run_options import ResolvedRun, RunOptions
from trainer.speakers import speaker_groups, speaker_normalised_vectors, warn_if_speakers_do_not_span_the_classes

INPUT_NORMS = ("global", "speaker")


def utterance_statistics(store: FeatureStore, ids: Sequence[str], layer: str | int | None = None) -> np.ndarray:
    """``(len(ids), 2·dim)``: mean and standard deviation over each utterance's frames."""
    from trainer.data import resolve_layer  # torch: only when vectors are computed

    index = resolve_layer(store, layer)
    if index == "weighted":
        index = None
    rows = []
    for utt_id in ids:
        frames = store.read(utt_id, layer=index).astype(np.float64)
        rows.append(np.concatenate([frames.mean(axis=0), frames.std(axis=0)]))
    return np.stack(rows)


def stored_functionals(store: FeatureStore, ids: Sequence[str], layer: str | int | None = None) -> np.ndarray:
    """``(len(ids), dim)``: the one stored vector of each utterance (a functionals store)."""
    return np.stack([store.read(utt_id).astype(np.float64)[0] for utt_id in ids])


#: ``--functionals`` name → (the store feature it needs, None for any frame feature; its vectors).
FUNCTIONALS = Registry(
    "--functionals",
    {
        "mfcc-stats": (None, utterance_statistics),
        "egemaps": ("egemaps-functionals", stored_functionals),
        "compare": ("compare-functionals", stored_functionals),
    },
    find=lambda entry: entry,
)


@dataclasses.dataclass(frozen=True)
class SvmOptions:
    """The SVM baseline's own options (declared once; the store, protocol, label, seed and
    repeats are those of ``cv``)."""

    c: float = option(1.0, "SVM regularisation C.", low=0, open_low=True)
    functionals: str | None = option(
        None,
        "Utterance vectors: mean/std of the stored frames (mfcc-stats, the default for frame stores), or "
        "openSMILE's eGeMAPS/ComParE functionals (from a store of --feature egemaps-functionals or "
        "compare-functionals, their default).",
        choices=tuple(FUNCTIONALS),
    )
    input_norm: str = option(
        "global",
        "Standardise the vectors on the training rows (global), or first per speaker over each "
        "speaker's utterances, test speakers' unlabelled ones included (speaker).",
        choices=INPUT_NORMS,
    )
    out: str | None = option(None, "Write the results as JSON here.", path="file")

    def __post_init__(self) -> None:
        check_fields(self)


def store_feature(store: FeatureStore) -> str:
    return str((store.attrs.get("feature") or {}).get("feature"))


def resolve_functionals(store: FeatureStore, functionals: str | None) -> str:
    """``functionals``, or the store's default (its own vectors for a functionals store,
    ``mfcc-stats`` for a frame store); a one-line error when they do not fit the store."""
    needs = None if functionals is None else FUNCTIONALS.load(functionals)[0]  # a bogus name: the nearest
    feature = store_feature(store)
    per_utterance = store.attrs.get("frame_rate") == 0
    if functionals is None:
        return next((name for name in FUNCTIONALS if FUNCTIONALS.load(name)[0] == feature), "mfcc-stats")
    if needs is None and per_utterance:
        raise ConfigError(
            f"--functionals {functionals}: store {store.path} holds one {feature} vector per utterance, "
            f"not frames; use --functionals {resolve_functionals(store, None)}"
        )
    if needs is not None and needs != feature:
        raise ConfigError(
            f"--functionals {functionals}: store {store.path} holds {feature}; make a store of "
            f"{functionals} functionals with: sermtl extract --feature {needs} …"
        )
    return functionals


def utterance_vectors(
    store: FeatureStore, functionals: str | None = None, input_norm: str = "global", layer: str | int | None = None
) -> dict[str, np.ndarray]:
    """``{utt_id: vector}`` of every stored utterance (speaker-normalised for ``input_norm``
    ``speaker``)."""
    check_value(SvmOptions, "input_norm", input_norm)
    name = resolve_functionals(store, functionals)
    ids = store.ids()
    vectors = dict(zip(ids, FUNCTIONALS.load(name)[1](store, ids, layer)))
    if input_norm == "speaker":
        vectors = speaker_normalised_vectors(vectors, speaker_groups(store.manifest, ids))
    return vectors


SVM_DESCRIPTION = "StandardScaler + SVC(rbf, C={c}, gamma=scale, balanced)"


def svm_cv(
    manifest: Manifest, vectors: Mapping[str, np.ndarray], folds: Sequence[Fold], label: str = "emotion", c: float = 1.0
) -> dict[str, Any]:
    """Fit and score the SVM on every fold of ``vectors`` (:func:`utterance_vectors`);
    returns averages (percent) and the per-fold list."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    per_fold = []
    for fold in folds:
        fit_ids = list(fold.train) + list(fold.valid)
        model = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=c, gamma="scale", class_weight="balanced"))
        model.fit(np.stack([vectors[u] for u in fit_ids]), [manifest[u][label] for u in fit_ids])
        predicted = model.predict(np.stack([vectors[u] for u in fold.test]))
        truth = [manifest[u][label] for u in fold.test]
        classes = sorted({manifest[u][label] for u in fit_ids})
        per_fold.append(
            {**evaluate(truth, list(predicted), classes), "fold": fold.fold, "test_digest": test_digest(fold.test)}
        )
    return {**average_folds(per_fold), "folds": per_fold, "model": SVM_DESCRIPTION.format(c=c)}


def svm_repeats(
    store_path: str | Path,
    protocol: Protocol | None,
    label: str = "emotion",
    c: float = 1.0,
    seed: int = 0,
    repeats: int = 1,
    functionals: str | None = None,
    input_norm: str = "global",
) -> dict[str, Any]:
    """:func:`svm_cv` on the folds of seeds ``seed`` … ``seed + repeats − 1`` (the folds
    ``cv`` draws with those seeds; ``protocol`` ``None``: the store's default). The vectors
    do not depend on the seed and are computed once. Returns ``{"name", "results"}``: one
    seed's results, or for several the mean ± std over seeds
    (:func:`~trainer.metrics.summarise_repeats`) with every seed's results."""
    check_value(RunOptions, "repeats", repeats)
    per_seed = {}
    with open_stores(store_path) as store:
        name_of_vectors = resolve_functionals(store, functionals)
        if input_norm == "speaker":
            warn_if_speakers_do_not_span_the_classes(store.manifest, store.ids(), label)
        vectors = utterance_vectors(store, name_of_vectors, input_norm)
        chosen = protocol or default_protocol(store.manifest)
        for fold_seed in range(seed, seed + repeats):
            folds = chosen.make(store.manifest, fold_seed)
            check_folds(folds, store.manifest, label_column=label)
            per_seed[fold_seed] = {
                **svm_cv(store.manifest, vectors, folds, label=label, c=c),
                "seed": fold_seed,
                "functionals": name_of_vectors,
                "input_norm": input_norm,
            }
    grouped = f" by {chosen.by}" if chosen.by and chosen.name != "kfold" else ""
    norm = ", speaker-normalised" if input_norm == "speaker" else ""
    name = f"SVM on {name_of_vectors}{norm} ({chosen.name}{grouped}, {len(folds)} folds)"
    if repeats == 1:
        return {"name": name, "results": per_seed[seed]}
    return {
        "name": name,
        "results": {**summarise_repeats(per_seed), "results": {str(s): r for s, r in per_seed.items()}},
    }


def run_baseline(run: ResolvedRun, svm: SvmOptions, repeats: int = 1) -> dict[str, Any]:
    """``sermtl baseline``: :func:`svm_repeats` on ``run``'s store, protocol, label and seed,
    the results written to ``svm.out`` when given; returns ``{"name", "results"}``."""
    outcome = svm_repeats(
        run.store,
        run.protocol,
        label=run.config.label,
        c=svm.c,
        seed=run.config.seed,
        repeats=repeats,
        functionals=svm.functionals,
        input_norm=svm.input_norm,
    )
    if svm.out:
        write_json(svm.out, outcome["results"])
    return outcome


def describe_baseline(outcome: dict[str, Any]) -> str:
    """The line ``sermtl baseline`` prints: the model and its results (mean ± std over seeds)."""
    results = outcome["results"]
    return f"{outcome['name']}: {describe_repeats(results) if 'seeds' in results else describe_results(results)}"
