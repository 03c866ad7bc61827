"""Tests for merjax.train.metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import itertools

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
    present = sorted(set(labels.tolist()))
    assert metrics.present_classes(cm).tolist() == [c in present for c in classes]
    present_uf1 = sk.f1_score(labels, predictions, average="macro", labels=present, zero_division=0)
    present_uar = sk.recall_score(labels, predictions, average="macro", labels=present, zero_division=0)
    assert abs(metrics.uf1(cm, present_only=True) - present_uf1) < TOLERANCE
    assert abs(metrics.uar(cm, present_only=True) - present_uar) < TOLERANCE


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


def test_uf1_present_only_leaves_out_an_absent_class_but_counts_its_predictions_as_misses():
    cm = metrics.confusion_matrix([0, 0, 1, 1], [0, 1, 1, 2], 3)   # class 2 predicted once, never true
    # class 0: 2*1 / (2*1 + 0 + 1) = 2/3; class 1: 2*1 / (2*1 + 1 + 1) = 1/2 (its clip predicted 2 is a miss)
    assert metrics.uf1(cm) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert metrics.uf1(cm, present_only=True) == pytest.approx((2 / 3 + 1 / 2) / 2)


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
    assert result["fold_std_ddof"] == 1
    assert abs(result["fold_std"]["uar"] - np.std(fold_uar, ddof=1)) < TOLERANCE


def test_pool_folds_reports_present_only_metrics_and_absent_classes_per_fold():
    per_fold = [([0, 0, 1], [0, 2, 1]), ([0, 1, 2, 2], [0, 1, 2, 1])]   # the first fold has no class 2
    result = metrics.pool_folds(per_fold, 3, names=["loso_s1", "loso_s2"])
    first, second = result["per_fold"]
    assert first["absent_classes"] == [2] and second["absent_classes"] == [] and result["absent_classes"] == []
    expected = sk.f1_score([0, 0, 1], [0, 2, 1], average="macro", labels=[0, 1], zero_division=0)
    assert abs(first["uf1_present"] - expected) < TOLERANCE
    assert first["uf1_present"] > first["uf1"]
    assert abs(first["uar_present"] - 0.75) < TOLERANCE and abs(first["uar"] - 0.5) < TOLERANCE
    assert second["uf1_present"] == second["uf1"]
    values = [first["uar_present"], second["uar_present"]]
    assert abs(result["fold_mean"]["uar_present"] - np.mean(values)) < TOLERANCE
    assert abs(result["fold_std"]["uar_present"] - np.std(values, ddof=1)) < TOLERANCE


def test_pool_folds_has_no_fold_std_for_a_single_fold():
    result = metrics.pool_folds([([0, 1], [0, 0])], 2)
    assert result["fold_std"] == {key: None for key in metrics.FOLD_METRICS}
    assert result["fold_mean"]["accuracy"] == 0.5


def test_bootstrap_interval_is_the_percentile_interval_of_sklearn_scores_on_resamples():
    labels, predictions = random_predictions(7, 3, size=40, absent_label=None)
    resamples, seed = 50, 3
    interval = metrics.bootstrap_interval(labels, predictions, 3, resamples=resamples, confidence=0.9, seed=seed)
    chosen = np.random.default_rng(seed).integers(0, labels.size, (resamples, labels.size))
    classes = [0, 1, 2]
    scores = {"accuracy": [], "uf1": [], "uar": []}
    for index in chosen:
        resampled_labels, resampled_predictions = labels[index], predictions[index]
        scores["accuracy"].append(sk.accuracy_score(resampled_labels, resampled_predictions))
        scores["uf1"].append(sk.f1_score(resampled_labels, resampled_predictions, average="macro",
                                         labels=classes, zero_division=0))
        scores["uar"].append(sk.recall_score(resampled_labels, resampled_predictions, average="macro",
                                             labels=classes, zero_division=0))
    for key, values in scores.items():
        np.testing.assert_allclose(interval[key], np.quantile(values, [0.05, 0.95]), atol=TOLERANCE)
    point = metrics.classification_metrics(labels, predictions, 3)
    for key in scores:
        low, high = interval[key]
        assert low < point[key] < high


def test_bootstrap_interval_of_perfect_predictions_is_a_point_and_grows_with_fewer_samples():
    assert metrics.bootstrap_interval([0, 1, 2, 1], [0, 1, 2, 1], 3)["accuracy"] == [1.0, 1.0]
    small_labels, small_predictions = random_predictions(1, 3, size=30)
    large_labels, large_predictions = random_predictions(1, 3, size=600)
    small = metrics.bootstrap_interval(small_labels, small_predictions, 3)["uf1"]
    large = metrics.bootstrap_interval(large_labels, large_predictions, 3)["uf1"]
    assert small[1] - small[0] > 2 * (large[1] - large[0])


@pytest.mark.parametrize("labels,num_classes", [([0, 0, 1, 2], 3), ([0, 1, 1, 1], 3), ([0, 1, 1, 1, 1], 2)])
def test_expected_uniform_metrics_equal_the_mean_over_every_possible_guess(labels, num_classes):
    classes = list(range(num_classes))
    guesses = [np.array(guess) for guess in itertools.product(classes, repeat=len(labels))]
    expected = {
        "accuracy": np.mean([sk.accuracy_score(labels, guess) for guess in guesses]),
        "uf1": np.mean([sk.f1_score(labels, guess, average="macro", labels=classes, zero_division=0)
                        for guess in guesses]),
        "uar": np.mean([sk.recall_score(labels, guess, average="macro", labels=classes, zero_division=0)
                        for guess in guesses]),
    }
    result = metrics.expected_uniform_metrics(labels, num_classes)
    for key, value in expected.items():
        assert abs(result[key] - value) < 1e-10, key


def test_expected_uniform_uf1_matches_a_monte_carlo_estimate_on_hundreds_of_samples():
    labels = np.repeat([0, 1, 2, 3], [120, 40, 25, 15])
    exact = metrics.expected_uniform_metrics(labels, 4)["uf1"]
    rng = np.random.default_rng(0)
    draws = [metrics.uf1(metrics.confusion_matrix(labels, rng.integers(0, 4, labels.size), 4)) for _ in range(4000)]
    assert abs(exact - np.mean(draws)) < 4 * np.std(draws) / np.sqrt(len(draws))


def test_errors_name_the_offending_value():
    with pytest.raises(ValueError, match=r"prediction 3 is outside 0..2"):
        metrics.confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        metrics.confusion_matrix([0, 1], [0, 1, 1], 3)
    with pytest.raises(ValueError, match=r"'loso_s2' has no sample"):
        metrics.pool_folds([([0], [0]), ([], [])], 2, names=["loso_s1", "loso_s2"])
