"""A classical reference: an RBF-SVM on utterance-level mean and standard deviation.

Each utterance becomes one vector, the per-dimension mean and standard deviation of its
stored frames (80 values for 40-d MFCC). Per fold, a scikit-learn pipeline
``StandardScaler → SVC(kernel="rbf", C=1, gamma="scale", class_weight="balanced")`` is
fitted on the training and validation rows together (the SVM has no epochs to select)
and scored on the test rows with the same metrics as the ECAPA-TDNN runs, so the two can
be compared fold by fold on the same folds.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from featurestore.store.reader import FeatureStore
from trainer.data import resolve_layer
from trainer.folds import Fold
from trainer.metrics import average_folds, evaluate


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
