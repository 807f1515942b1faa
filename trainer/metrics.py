"""Evaluation metrics, each defined by its scikit-learn twin.

Units: the metric functions return **fractions** (0-1); :func:`evaluate` and
:func:`average_folds` report **percent** (0-100), as the paper's tables do.

- WA (weighted accuracy) = ``sklearn.metrics.accuracy_score``.
- UWA / UA (unweighted accuracy) = ``sklearn.metrics.balanced_accuracy_score``: the mean of
  per-class recalls over the classes present in ``y_true``.
- Per-class recall (the paper's per-emotion TPR, Table VI) =
  ``recall_score(average=None, zero_division=np.nan)``.
- ERA (expression recognition accuracy) = ``aux_accuracy``, WA of the auxiliary task.

Cross-validation results are **averaged over folds** (the mean of the per-fold metrics, as
the paper reports); :func:`average_folds` also gives **pooled** metrics (from the summed
confusion matrices, i.e. all test predictions taken together), labelled as such.

Pattern separability (paper IV-C) is the mean over all class pairs of a Fisher discriminant
ratio; see :func:`fisher_ratio` for the exact formula.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from trainer.folds import natural_key


def _pair(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> tuple[list, list]:
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no labels to score")
    return y_true, y_pred


def _counts(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]) -> np.ndarray:
    """(L, L + 1) counts: row = true label, column = predicted label, last column = a
    prediction outside ``labels``; rows whose true label is outside ``labels`` are dropped."""
    y_true, y_pred = _pair(y_true, y_pred)
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(index), len(index) + 1), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t in index:
            counts[index[t], index.get(p, len(index))] += 1
    return counts


def _recalls(counts: np.ndarray) -> np.ndarray:
    """Per-row recall ``(L,)`` of a counts matrix ``(L, K)`` (rows = true labels, the first
    ``L`` columns the same labels predicted); NaN for an empty row."""
    support = counts.sum(axis=1)
    hits = np.diagonal(counts)
    return np.divide(hits, support, out=np.full(len(support), np.nan), where=support > 0)


def weighted_accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Fraction of correct predictions (= ``sklearn.metrics.accuracy_score``)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def unweighted_accuracy(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> float:
    """Mean per-class recall over the classes present in ``y_true``
    (= ``sklearn.metrics.balanced_accuracy_score``).

    ``labels`` restricts the classes averaged; classes of ``labels`` absent from ``y_true``
    are skipped (they have no recall). NaN when no class of ``labels`` occurs in ``y_true``.
    """
    if labels is None:
        labels = sorted(set(y_true), key=str)
    recalls = _recalls(_counts(y_true, y_pred, labels))
    return float(np.nanmean(recalls)) if np.isfinite(recalls).any() else float("nan")


def per_class_recall(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]
) -> dict[str, float]:
    """Recall (true positive rate) per label, keyed by ``str(label)``
    (= ``recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)``).

    NaN for a label absent from ``y_true``.
    """
    recalls = _recalls(_counts(y_true, y_pred, labels))
    return {str(label): float(r) for label, r in zip(labels, recalls)}


def confusion(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable]) -> np.ndarray:
    """(L, L) counts, row = true, column = predicted, in ``labels`` order
    (= ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=labels)``: pairs with a
    label outside ``labels`` are not counted)."""
    return _counts(y_true, y_pred, labels)[:, :-1]


# -- reports ---------------------------------------------------------------------------------
def _percent(value: float) -> float | None:
    """Fraction to percent; NaN becomes ``None`` (JSON null)."""
    return None if np.isnan(value) else 100.0 * float(value)


def _summary(y_true: list, y_pred: list, labels: list, aux_true: list | None, aux_pred: list | None) -> dict[str, Any]:
    recalls = per_class_recall(y_true, y_pred, labels)
    out: dict[str, Any] = {
        "n": len(y_true),
        "wa": _percent(weighted_accuracy(y_true, y_pred)),
        "uwa": _percent(unweighted_accuracy(y_true, y_pred, labels)),
        "per_class_recall": {k: _percent(v) for k, v in recalls.items()},
    }
    if aux_true is not None and aux_pred is not None:
        out["aux_accuracy"] = _percent(weighted_accuracy(aux_true, aux_pred))
    return out


def _take(values: list | None, rows: list[int]) -> list | None:
    return None if values is None else [values[i] for i in rows]


def evaluate(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    labels: Sequence[Hashable],
    subsets: dict[str, Sequence[Hashable]] | None = None,
    aux_true: Sequence[Hashable] | None = None,
    aux_pred: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """All metrics of one test set, JSON-serialisable, accuracies in percent.

    Parameters
    ----------
    y_true, y_pred : sequence of hashable, length N
        Emotion labels per test row; every one must be in ``labels``.
    labels : sequence of hashable, length L
        The class order of ``confusion`` and ``per_class_recall``.
    subsets : dict of str to sequence, optional
        Per-row values (N each) of other columns, e.g. ``{"expression": [...]}``; each
        value gets its own ``wa``/``uwa``/``per_class_recall``/``n`` (and ``aux_accuracy``).
    aux_true, aux_pred : sequence of hashable, length N, optional
        Auxiliary-task labels per row (expression), for ``aux_accuracy`` (ERA).

    Returns
    -------
    dict
        ``{"n", "labels", "wa", "uwa", "per_class_recall", "confusion", ["aux_accuracy"],
        "subsets": {column: {value: {...}}}}``, ``confusion`` an (L, L) list of lists; a
        recall of a class absent from the rows is ``None``.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    labels = list(labels)
    known = set(labels)
    unknown = sorted({str(v) for v in y_true + y_pred if v not in known})
    if unknown:
        raise ValueError(f"label {unknown[0]!r} is not one of labels {[str(label) for label in labels]}")
    if (aux_true is None) != (aux_pred is None):
        raise ValueError("give both aux_true and aux_pred, or neither")
    if aux_true is not None:
        aux_true, aux_pred = _pair(aux_true, aux_pred)
        if len(aux_true) != len(y_true):
            raise ValueError(f"aux labels have {len(aux_true)} rows, y_true has {len(y_true)}")
    result = _summary(y_true, y_pred, labels, aux_true, aux_pred)
    result["labels"] = [str(label) for label in labels]
    result["confusion"] = confusion(y_true, y_pred, labels).tolist()
    result["subsets"] = {}
    for column, values in (subsets or {}).items():
        values = ["-" if v is None else str(v) for v in values]
        if len(values) != len(y_true):
            raise ValueError(f"subset {column!r} has {len(values)} values, y_true has {len(y_true)}")
        result["subsets"][column] = {}
        for value in sorted(set(values), key=natural_key):
            rows = [i for i, v in enumerate(values) if v == value]
            result["subsets"][column][value] = _summary(
                _take(y_true, rows), _take(y_pred, rows), labels, _take(aux_true, rows), _take(aux_pred, rows)
            )
    return result


_NOT_AVERAGED = frozenset({"n", "labels", "confusion", "fold"})
AVERAGING = (
    "metrics are means over folds (std: population std over folds); 'pooled' scores all folds' test rows as one set"
)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _mean_std(trees: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and std over folds of every numeric leaf of the result dicts (NaN-aware; a key
    missing from a fold counts as absent there; other leaves are skipped)."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for tree in trees for k in tree if k not in _NOT_AVERAGED))
    for key in keys:
        values = [tree.get(key) for tree in trees]
        if any(isinstance(v, dict) for v in values):
            mean[key], std[key] = _mean_std([v for v in values if isinstance(v, dict)])
            continue
        if not all(_is_number(v) for v in values):
            continue
        array = np.array([np.nan if v is None else v for v in values], dtype=float)
        finite = array[~np.isnan(array)]
        mean[key] = float(finite.mean()) if finite.size else None
        std[key] = float(finite.std()) if finite.size else None
    return mean, std


def average_folds(fold_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine per-fold :func:`evaluate` results.

    Returns
    -------
    dict
        The keys of one fold (``wa``, ``uwa``, ``per_class_recall``, ``aux_accuracy``,
        ``subsets``, and any other numeric entry a caller added, e.g. ``separability``; not
        ``fold``) holding their **mean over folds** (macro over folds, as the paper reports;
        a class or subset absent from a fold is skipped there); ``std`` the same keys' population
        standard deviation over folds (``numpy.std``, ddof=0); ``pooled`` all folds' test rows
        scored as one set (``wa``, ``uwa``, ``per_class_recall`` from the summed ``confusion``,
        ``aux_accuracy`` weighted by ``n``); ``n_folds``, ``n`` (test rows), ``labels`` and
        ``averaging`` (a one-line statement of the above, kept in result files).
    """
    if not fold_results:
        raise ValueError("no fold results to average")
    labels = fold_results[0]["labels"]
    for i, result in enumerate(fold_results[1:], start=2):
        if result["labels"] != labels:
            raise ValueError(f"fold result {i} has labels {result['labels']}, the first has {labels}")
    mean, std = _mean_std(fold_results)
    summed = np.sum([np.asarray(r["confusion"], dtype=np.int64) for r in fold_results], axis=0)
    recalls = _recalls(summed)
    n = sum(r["n"] for r in fold_results)
    pooled: dict[str, Any] = {
        "wa": _percent(np.trace(summed) / summed.sum()),
        "uwa": _percent(np.nanmean(recalls)) if np.isfinite(recalls).any() else None,
        "per_class_recall": {label: _percent(r) for label, r in zip(labels, recalls)},
        "confusion": summed.tolist(),
    }
    if all("aux_accuracy" in r for r in fold_results):
        pooled["aux_accuracy"] = sum(r["aux_accuracy"] * r["n"] for r in fold_results) / n
    return {
        **mean,
        "std": std,
        "pooled": pooled,
        "n_folds": len(fold_results),
        "n": n,
        "labels": labels,
        "averaging": AVERAGING,
    }


# -- pattern separability ------------------------------------------------------------------
def fisher_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """Fisher discriminant ratio of two classes' embeddings, summed over dimensions.

    ``J = Σ_d (μa_d − μb_d)² / (σa_d² + σb_d²)``, with per-class means μ and population
    variances σ² (ddof=0) of each dimension d. In one dimension this is the classic Fisher
    discriminant ratio; in D dimensions it equals the multivariate Fisher criterion
    ``(μa − μb)ᵀ (Σa + Σb)⁻¹ (μa − μb)`` with the covariances replaced by their diagonals,
    which stays well defined when a class has fewer rows than dimensions (BAUM-1's small
    test folds against 192-d embeddings). It is invariant to swapping the classes and to
    rescaling or permuting dimensions. A dimension with zero variance in both classes (a
    class of one utterance, or a dead unit) adds 0 if its means agree; if they differ, its
    within-class variance is floored at ``1e-6 ×`` the variance of both classes pooled on
    that dimension, so the ratio stays finite and fold averages stay defined.

    Parameters
    ----------
    a : numpy.ndarray, shape (N_a, D)
        Embeddings of one class, N_a ≥ 1; a 1-D array is taken as (N_a, 1).
    b : numpy.ndarray, shape (N_b, D)
        Embeddings of the other class, N_b ≥ 1; a 1-D array is taken as (N_b, 1).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = (x[:, None] if x.ndim == 1 else x for x in (a, b))
    if a.ndim != 2 or b.ndim != 2 or not len(a) or not len(b) or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two non-empty (N, D) arrays with the same D, got {a.shape} and {b.shape}")
    between = (a.mean(axis=0) - b.mean(axis=0)) ** 2
    floor = 1e-6 * np.concatenate([a, b]).var(axis=0)
    within = np.maximum(a.var(axis=0) + b.var(axis=0), floor)
    terms = np.divide(between, within, out=np.zeros_like(between), where=within > 0)
    return float(terms.sum())


def pattern_separability(embeddings: np.ndarray, labels: Sequence[Hashable]) -> float:
    """Mean :func:`fisher_ratio` over all C(N, 2) pairs of the N classes in ``labels``
    (paper IV-C, Fig. 2).

    Parameters
    ----------
    embeddings : numpy.ndarray, shape (M, D)
        Embeddings, one row per utterance.
    labels : sequence of hashable, length M
        Class labels (emotions, or expressions for expression separability).
    """
    embeddings = np.asarray(embeddings, dtype=float)
    labels = np.asarray([str(label) for label in labels])
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"need (M, D) embeddings and M labels, got {embeddings.shape} and {len(labels)}")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ValueError(f"pattern separability needs at least 2 classes, got {classes}")
    ratios = [
        fisher_ratio(embeddings[labels == x], embeddings[labels == y]) for x, y in itertools.combinations(classes, 2)
    ]
    return float(np.mean(ratios))


def summarise_repeats(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and population standard deviation over seeds of each run's fold-mean WA, UWA and
    aux accuracy and of its pooled WA and UWA (percent), with every seed's own figures."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    figures = {
        seed: {
            "wa": r["wa"],
            "uwa": r["uwa"],
            "aux_accuracy": r.get("aux_accuracy"),
            "pooled_wa": r["pooled"]["wa"],
            "pooled_uwa": r["pooled"]["uwa"],
        }
        for seed, r in runs.items()
    }
    names = [
        n
        for n in ("wa", "uwa", "aux_accuracy", "pooled_wa", "pooled_uwa")
        if all(f[n] is not None for f in figures.values())
    ]
    return {
        "seeds": list(runs),
        **{n: spread([f[n] for f in figures.values()]) for n in names},
        "runs": {str(seed): f for seed, f in figures.items()},
    }


def describe_results(results: dict[str, Any]) -> str:
    """One line of a run's results: fold-mean WA, UWA (and aux accuracy) and the pooled scores."""
    aux = f", aux accuracy {results['aux_accuracy']:.2f}" if results.get("aux_accuracy") is not None else ""
    return (
        f"WA {results['wa']:.2f}, UWA {results['uwa']:.2f}{aux} (%, mean over {len(results['folds'])} fold(s); "
        f"pooled WA {results['pooled']['wa']:.2f}, UWA {results['pooled']['uwa']:.2f})"
    )


def describe_repeats(summary: dict[str, Any]) -> str:
    """One line of :func:`summarise_repeats`: mean ± std over seeds."""
    return (
        f"over seeds {', '.join(map(str, summary['seeds']))}: "
        f"WA {summary['wa']['mean']:.2f} ± {summary['wa']['std']:.2f}, "
        f"UWA {summary['uwa']['mean']:.2f} ± {summary['uwa']['std']:.2f}, "
        f"pooled UWA {summary['pooled_uwa']['mean']:.2f} ± {summary['pooled_uwa']['std']:.2f} (%, mean ± std)"
    )
