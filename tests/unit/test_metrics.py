"""Metrics (trainer.metrics) against scikit-learn and hand-computed values."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from trainer.metrics import (
    average_folds,
    confusion,
    evaluate,
    fisher_ratio,
    pattern_separability,
    per_class_recall,
    unweighted_accuracy,
    weighted_accuracy,
)

LABELS = ["angry", "happy", "neutral", "sad", "fear"]


def random_labels(seed: int) -> tuple[list, list, list]:
    """Random true/predicted labels; true labels miss some classes, predictions include a stray one."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    present = rng.choice(LABELS, size=int(rng.integers(1, 6)), replace=False)
    y_true = list(rng.choice(present, size=n))
    y_pred = list(rng.choice(LABELS + ["other"], size=n, p=[0.19] * 5 + [0.05]))
    labels = list(rng.permutation(LABELS))
    return y_true, y_pred, labels


@pytest.mark.parametrize("seed", range(200))
def test_metrics_match_sklearn(seed):
    y_true, y_pred, labels = random_labels(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes missing from y_true
        balanced = skm.balanced_accuracy_score(y_true, y_pred)
        recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx(balanced)
    np.testing.assert_allclose(list(per_class_recall(y_true, y_pred, labels).values()), recall)
    assert list(per_class_recall(y_true, y_pred, labels)) == labels
    np.testing.assert_array_equal(
        confusion(y_true, y_pred, labels), skm.confusion_matrix(y_true, y_pred, labels=labels)
    )


@pytest.mark.parametrize("seed", range(20))
def test_integer_labels_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(
        confusion(y_true, y_pred, [3, 2, 1, 0]), skm.confusion_matrix(y_true, y_pred, labels=[3, 2, 1, 0])
    )
    assert list(per_class_recall(y_true, y_pred, [0, 1])) == ["0", "1"]


def test_unweighted_accuracy_by_hand():
    y_true = ["a", "a", "a", "a", "b", "c", "c"]
    y_pred = ["a", "a", "a", "b", "b", "a", "c"]
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(5 / 7)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx((3 / 4 + 1 + 1 / 2) / 3)
    assert unweighted_accuracy(y_true, y_pred, labels=["a", "b", "z"]) == pytest.approx((3 / 4 + 1) / 2)
    assert math.isnan(unweighted_accuracy(y_true, y_pred, labels=["z"]))
    assert math.isnan(per_class_recall(y_true, y_pred, ["a", "z"])["z"])


def test_length_mismatch_and_empty_are_refused():
    with pytest.raises(ValueError, match="y_true has 2 labels but y_pred has 1"):
        weighted_accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no labels"):
        unweighted_accuracy([], [])


# -- evaluate / average_folds ----------------------------------------------------------------
EMO = ["angry", "happy", "sad"]
Y_TRUE = ["angry", "angry", "happy", "happy", "happy", "sad", "angry", "sad"]
Y_PRED = ["angry", "happy", "happy", "happy", "sad", "sad", "angry", "angry"]
EXPR = ["acted", "acted", "acted", "spont", "spont", "spont", "spont", "acted"]
EXPR_PRED = ["acted", "spont", "acted", "spont", "spont", "acted", "spont", "acted"]


def test_evaluate_reports_percent_and_subsets():
    result = evaluate(Y_TRUE, Y_PRED, EMO, subsets={"expression": EXPR}, aux_true=EXPR, aux_pred=EXPR_PRED)
    json.dumps(result, allow_nan=False)
    assert result["n"] == 8 and result["labels"] == EMO
    assert result["wa"] == pytest.approx(100 * 5 / 8)
    assert result["uwa"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert result["per_class_recall"] == pytest.approx({"angry": 200 / 3, "happy": 200 / 3, "sad": 50})
    assert result["confusion"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert result["aux_accuracy"] == pytest.approx(100 * 6 / 8)
    acted, spont = result["subsets"]["expression"]["acted"], result["subsets"]["expression"]["spont"]
    # acted rows: angry->angry, angry->happy, happy->happy, sad->angry
    assert acted["n"] == 4 and acted["wa"] == pytest.approx(50)
    assert acted["uwa"] == pytest.approx(100 * (1 / 2 + 1 + 0) / 3)
    assert acted["per_class_recall"] == pytest.approx({"angry": 50, "happy": 100, "sad": 0})
    assert acted["aux_accuracy"] == pytest.approx(75)
    # spont rows: happy->happy, happy->sad, sad->sad, angry->angry
    assert spont["wa"] == pytest.approx(75) and spont["uwa"] == pytest.approx(100 * (1 + 1 / 2 + 1) / 3)


def test_evaluate_absent_class_is_null_and_skipped_by_uwa():
    result = evaluate(["angry", "happy"], ["angry", "angry"], EMO)
    assert result["per_class_recall"] == {"angry": 100.0, "happy": 0.0, "sad": None}
    assert result["uwa"] == pytest.approx(50.0)
    assert result["subsets"] == {} and "aux_accuracy" not in result


def test_evaluate_refuses_mismatches():
    with pytest.raises(ValueError, match="label 'Happy' is not one of labels"):
        evaluate(["angry", "Happy"], ["angry", "angry"], EMO)
    with pytest.raises(ValueError, match="both aux_true and aux_pred"):
        evaluate(Y_TRUE, Y_PRED, EMO, aux_true=EXPR)
    with pytest.raises(ValueError, match="subset 'expression' has 2 values, y_true has 8"):
        evaluate(Y_TRUE, Y_PRED, EMO, subsets={"expression": ["acted", "spont"]})


def test_average_folds_mean_std_and_pooled():
    second_true = ["angry", "happy", "happy", "angry"]
    second_pred = ["angry", "happy", "angry", "happy"]
    second_expr = ["acted", "acted", "acted", "acted"]
    folds = [
        evaluate(Y_TRUE, Y_PRED, EMO, {"expression": EXPR}, EXPR, EXPR_PRED),
        evaluate(second_true, second_pred, EMO, {"expression": second_expr}, second_expr, second_expr),
    ]
    summary = average_folds(folds)
    json.dumps(summary, allow_nan=False)
    assert summary["n_folds"] == 2 and summary["n"] == 12 and summary["labels"] == EMO
    assert "means over folds" in summary["averaging"]
    assert set(summary["std"]) == {"wa", "uwa", "per_class_recall", "aux_accuracy", "subsets"}
    for key in ("wa", "uwa", "aux_accuracy"):
        values = [f[key] for f in folds]
        assert summary[key] == pytest.approx(np.mean(values))
        assert summary["std"][key] == pytest.approx(np.std(values))
    # 'sad' is absent from fold 2: averaged over fold 1 only
    assert summary["per_class_recall"]["sad"] == pytest.approx(50)
    assert summary["std"]["per_class_recall"]["sad"] == 0
    assert summary["per_class_recall"]["angry"] == pytest.approx((200 / 3 + 50) / 2)
    # 'spont' exists in fold 1 only
    subsets = summary["subsets"]["expression"]
    assert subsets["spont"]["wa"] == pytest.approx(75)
    assert subsets["acted"]["wa"] == pytest.approx((50 + 50) / 2)
    # pooled = one evaluation of all predictions together
    pooled = evaluate(
        Y_TRUE + second_true, Y_PRED + second_pred, EMO, aux_true=EXPR + second_expr, aux_pred=EXPR_PRED + second_expr
    )
    for key in ("wa", "uwa", "aux_accuracy"):
        assert summary["pooled"][key] == pytest.approx(pooled[key])
    assert summary["pooled"]["confusion"] == pooled["confusion"]
    assert summary["pooled"]["per_class_recall"] == pytest.approx(pooled["per_class_recall"])


def test_average_folds_averages_caller_numbers_but_not_fold_ids():
    folds = [evaluate(["a"], ["a"], ["a", "b"]), evaluate(["b"], ["a"], ["a", "b"])]
    for k, (fold, separability) in enumerate(zip(folds, (2.0, 4.0)), start=1):
        fold.update(fold=k, separability={"emotion": separability}, note="text", best_valid_uwa=None)
    summary = average_folds(folds)
    assert summary["separability"] == {"emotion": 3.0} and summary["std"]["separability"] == {"emotion": 1.0}
    assert summary["wa"] == 50.0 and summary["best_valid_uwa"] is None
    assert "fold" not in summary and "note" not in summary and "fold" not in summary["std"]


def test_average_folds_refuses_mixed_labels():
    with pytest.raises(ValueError, match="fold result 2 has labels"):
        average_folds([evaluate(["a"], ["a"], ["a", "b"]), evaluate(["a"], ["a"], ["b", "a"])])
    with pytest.raises(ValueError, match="no fold results"):
        average_folds([])


# -- Fisher ratio and pattern separability ---------------------------------------------------
def test_fisher_ratio_by_hand():
    # means 1 and 5, population variances 1 and 1: (1 - 5)^2 / (1 + 1) = 8
    assert fisher_ratio(np.array([0.0, 2.0]), np.array([4.0, 6.0])) == pytest.approx(8.0)
    # two dimensions sum: second dim means 0 and 3, variances 1 and 0.25 -> 9 / 1.25
    a = np.array([[0.0, -1.0], [2.0, 1.0]])
    b = np.array([[4.0, 2.5], [6.0, 3.5]])
    assert fisher_ratio(a, b) == pytest.approx(8.0 + 9 / 1.25)


def test_fisher_ratio_properties():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (50, 8)), rng.normal(0.5, 1, (40, 8))
    far = rng.normal(3, 1, (40, 8))
    assert fisher_ratio(a, b) == pytest.approx(fisher_ratio(b, a))
    assert fisher_ratio(a, far) > 10 * fisher_ratio(a, b)
    scale = rng.uniform(0.1, 10, 8)
    perm = rng.permutation(8)
    assert fisher_ratio(a * scale, b * scale) == pytest.approx(fisher_ratio(a, b))
    assert fisher_ratio(a[:, perm], b[:, perm]) == pytest.approx(fisher_ratio(a, b))
    # zero variance in both classes: 0 when the means agree, floored variance when they differ
    assert fisher_ratio(np.ones((3, 1)), np.ones((2, 1))) == 0.0
    # (pooled variance of [1,1,1,0,0] is 0.24: the floor makes J = 1 / (0.24e-6), finite)
    assert fisher_ratio(np.ones((3, 1)), np.zeros((2, 1))) == pytest.approx(1 / 0.24e-6)
    with pytest.raises(ValueError, match="same D"):
        fisher_ratio(np.ones((3, 2)), np.ones((3, 3)))


def test_pattern_separability_is_the_mean_over_class_pairs():
    rng = np.random.default_rng(1)
    centres = {"angry": 0.0, "happy": 1.0, "sad": 4.0}
    labels = [c for c in centres for _ in range(30)]
    embeddings = np.stack([rng.normal(centres[c], 1.0, 6) for c in labels])
    groups = {c: embeddings[[i for i, x in enumerate(labels) if x == c]] for c in centres}
    expected = np.mean([fisher_ratio(groups[x], groups[y]) for x, y in itertools.combinations(centres, 2)])
    assert pattern_separability(embeddings, labels) == pytest.approx(expected)
    tight = np.stack([rng.normal(3 * centres[c], 1.0, 6) for c in labels])
    assert pattern_separability(tight, labels) > pattern_separability(embeddings, labels)
    with pytest.raises(ValueError, match="at least 2 classes"):
        pattern_separability(embeddings[:30], labels[:30])
    with pytest.raises(ValueError, match="M labels"):
        pattern_separability(embeddings, labels[:5])
