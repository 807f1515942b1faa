"""A classical reference: an RBF-SVM on utterance-level mean and standard deviation.

Each utterance becomes one vector, the per-dimension mean and standard deviation of its
stored frames (80 values for 40-d MFCC). Per fold, a scikit-learn pipeline
``StandardScaler → SVC(kernel="rbf", C=1, gamma="scale", class_weight="balanced")`` is
fitted on the training and validation rows together (the SVM has no epochs to select)
and scored on the test rows with the same metrics as the ECAPA-TDNN runs, so the two can
be compared fold by fold on the same folds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featurestore.errors import SermtlError
from featurestore.store.reader import FeatureStore, open_store
from trainer.data import resolve_layer
from trainer.folds import Fold, Protocol, check_folds, default_protocol
from trainer.metrics import average_folds, evaluate, summarise_repeats


def utterance_statistics(store: FeatureStore, ids: Sequence[str], layer: str | int | None = None) -> np.ndarray:
    """``(len(ids), 2·dim)``: mean and standard deviation over each utterance's frames."""
    index = resolve_layer(store, layer)
    if index == "weighted":
        index = None
    rows = []
    for utt_id in ids:
        frames = store.read(utt_id, layer=index).astype(np.float64)
        rows.append(np.concatenate([frames.mean(axis=0), frames.std(axis=0)]))
    return np.stack(rows)


def svm_cv(store: FeatureStore, folds: Sequence[Fold], label: str = "emotion", c: float = 1.0,
           layer: str | int | None = None) -> dict[str, Any]:
    """Fit and score the SVM on every fold; returns averages (percent) and the per-fold list."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    manifest = store.manifest
    ids = store.ids()
    features = dict(zip(ids, utterance_statistics(store, ids, layer)))
    per_fold = []
    for fold in folds:
        fit_ids = list(fold.train) + list(fold.valid)
        model = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=c, gamma="scale", class_weight="balanced"))
        model.fit(np.stack([features[u] for u in fit_ids]), [manifest[u][label] for u in fit_ids])
        predicted = model.predict(np.stack([features[u] for u in fold.test]))
        truth = [manifest[u][label] for u in fold.test]
        classes = sorted({manifest[u][label] for u in fit_ids})
        per_fold.append({**evaluate(truth, list(predicted), classes), "fold": fold.fold})
    return {**average_folds(per_fold), "folds": per_fold, "model": f"StandardScaler + SVC(rbf, C={c}, gamma=scale, balanced)"}


def svm_repeats(store_path: str | Path, protocol: Protocol | None, label: str = "emotion", c: float = 1.0,
                seed: int = 0, repeats: int = 1) -> dict[str, Any]:
    """:func:`svm_cv` on the folds of seeds ``seed`` … ``seed + repeats − 1`` (the folds
    ``cv`` draws with those seeds; ``protocol`` ``None``: the store's default). Returns
    ``{"name", "results"}``: one seed's results, or for several the mean ± std over seeds
    (:func:`~trainer.metrics.summarise_repeats`) with every seed's results."""
    if repeats < 1:
        raise SermtlError(f"--repeats must be >= 1, got {repeats}")
    per_seed = {}
    with open_store(store_path) as store:
        chosen = protocol or default_protocol(store.manifest)
        for fold_seed in range(seed, seed + repeats):
            folds = chosen.make(store.manifest, fold_seed)
            check_folds(folds, store.manifest, label_column=label)
            per_seed[fold_seed] = svm_cv(store, folds, label=label, c=c)
    grouped = f" by {chosen.by}" if chosen.by and chosen.name != "kfold" else ""
    name = f"SVM ({chosen.name}{grouped}, {len(folds)} folds)"
    if repeats == 1:
        return {"name": name, "results": per_seed[seed]}
    return {"name": name, "results": {**summarise_repeats(per_seed), "results": {str(s): r for s, r in per_seed.items()}}}
