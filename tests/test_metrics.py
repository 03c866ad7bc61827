"""Tests for merjax.train.metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from merjax.train import metrics

TOLERANCE = 1e-12


def random_predictions(seed: int, num_classes: int, size: int = 60, absent_label: int | None = None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size)
    if absent_label is not None:
        labels[labels == absent_label] = (absent_label + 1) % num_classes
    predictions = np.where(rng.random(size) < 0.5, labels, rng.integers(0, num_classes, size))
    return labels, predictions


CASES = [(seed, num_classes, absent) for seed in range(4) for num_classes in (2, 3, 5)
         for absent in (None, num_classes - 1)]


@pytest.mark.parametrize("seed,num_classes,absent", CASES)
def test_metrics_match_sklearn(seed, num_classes, absent):
    labels, predictions = random_predictions(seed, num_classes, absent_label=absent)
    classes = list(range(num_classes))
    cm = metrics.confusion_matrix(labels, predictions, num_classes)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(labels, predictions, labels=classes))
    assert cm.dtype == np.int64
    assert abs(metrics.accuracy(cm) - sk.accuracy_score(labels, predictions)) < TOLERANCE
    expected_uf1 = sk.f1_score(labels, predictions, average="macro", labels=classes, zero_division=0)
    expected_uar = sk.recall_score(labels, predictions, average="macro", labels=classes, zero_division=0)
    assert abs(metrics.uf1(cm) - expected_uf1) < TOLERANCE
    assert abs(metrics.uar(cm) - expected_uar) < TOLERANCE


def test_class_neither_true_nor_predicted_counts_as_zero():
    labels, predictions = [0, 0, 1, 1], [0, 1, 1, 1]
    cm = metrics.confusion_matrix(labels, predictions, 3)
    expected = sk.f1_score(labels, predictions, average="macro", labels=[0, 1, 2], zero_division=0)
    assert abs(metrics.uf1(cm) - expected) < TOLERANCE
    assert abs(metrics.uf1(cm) - (2 / 3 + 0.8) / 3) < TOLERANCE
    assert abs(metrics.uar(cm) - 1.5 / 3) < TOLERANCE


def test_uar_present_only_averages_over_classes_with_true_samples():
    cm = metrics.confusion_matrix([0, 0, 1, 1], [0, 1, 1, 2], 3)
    assert metrics.uar(cm) == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert metrics.uar(cm, present_only=True) == pytest.approx(0.5)


def test_classification_metrics_dict():
    result = metrics.classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], 3)
    assert result["confusion"] == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    assert result["num_samples"] == 4
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["uar"] == pytest.approx((1 + 0 + 1) / 3)
    assert result["uf1"] == pytest.approx((1 + 0 + 0.8) / 3)
    assert all(isinstance(result[key], float) for key in ("accuracy", "uf1", "uar"))


def test_pool_folds_pools_predictions_and_summarises_folds():
    rng = np.random.default_rng(0)
    per_fold = [random_predictions(int(rng.integers(1000)), 3, size=int(size)) for size in (7, 12, 20)]
    result = metrics.pool_folds(per_fold, 3, names=["loso_s1", "loso_s2", "loso_s3"])
    labels = np.concatenate([fold[0] for fold in per_fold])
    predictions = np.concatenate([fold[1] for fold in per_fold])
    expected_uf1 = sk.f1_score(labels, predictions, average="macro", labels=[0, 1, 2], zero_division=0)
    assert abs(result["uf1"] - expected_uf1) < TOLERANCE
    assert abs(result["accuracy"] - sk.accuracy_score(labels, predictions)) < TOLERANCE
    assert result["num_samples"] == 39 and result["num_folds"] == 3
    assert [fold["name"] for fold in result["per_fold"]] == ["loso_s1", "loso_s2", "loso_s3"]
    fold_uar = [sk.recall_score(l, p, average="macro", labels=[0, 1, 2], zero_division=0) for l, p in per_fold]
    assert abs(result["fold_mean"]["uar"] - np.mean(fold_uar)) < TOLERANCE
    assert abs(result["fold_std"]["uar"] - np.std(fold_uar)) < TOLERANCE


def test_errors_name_the_offending_value():
    with pytest.raises(ValueError, match=r"prediction 3 is outside 0..2"):
        metrics.confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        metrics.confusion_matrix([0, 1], [0, 1, 1], 3)
    with pytest.raises(ValueError, match=r"'loso_s2' has no sample"):
        metrics.pool_folds([([0], [0]), ([], [])], 2, names=["loso_s1", "loso_s2"])
