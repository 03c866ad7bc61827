"""Classification metrics for micro-expression recognition: accuracy, UF1, UAR, confusion matrix.

Micro-expression classes are imbalanced, so besides accuracy the field
reports UF1 (unweighted F1: the mean over classes of the per-class F1) and UAR
(unweighted average recall: the mean over classes of the per-class recall),
as in MEGC 2019. Every metric is computed from a confusion matrix, so the
MEGC/LOSO convention of pooling the predictions of all folds before computing
UF1 and UAR is one sum of matrices (``pool_folds``). The definitions match
scikit-learn's ``f1_score`` / ``recall_score`` with ``average='macro'``,
``labels=range(C)``, ``zero_division=0``: a class absent from the labels
counts as F1 0 and recall 0 and still enters the mean. A single fold's test
side often lacks classes (LOSO), so fold metrics also come averaged over the
classes present only (``present_only=True``; scikit-learn with ``labels=`` the
classes present).

Beside the point estimates: a percentile bootstrap interval over samples
(``bootstrap_interval``) and the exact expected metrics of uniform random
guessing on given labels (``expected_uniform_metrics``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

SUMMARY_METRICS = ("accuracy", "uf1", "uar")
# What pool_folds averages over folds: the summary metrics and their present-only variants.
FOLD_METRICS = SUMMARY_METRICS + ("uf1_present", "uar_present")
# Folds are a sample of the ways to split the subjects: their spread is the sample std (ddof=1).
FOLD_STD_DDOF = 1


def confusion_matrix(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                     num_classes: int) -> np.ndarray:
    """Returns int64 [C, C] counts: rows are true classes, columns predicted classes."""
    label_array = _class_indices("label", labels, num_classes)
    prediction_array = _class_indices("prediction", predictions, num_classes)
    if label_array.shape != prediction_array.shape:
        raise ValueError(f"{label_array.size} labels but {prediction_array.size} predictions")
    flat = np.bincount(label_array * num_classes + prediction_array, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def accuracy(cm: np.ndarray) -> float:
    """Fraction of samples on the diagonal."""
    return float(_accuracy(_checked_confusion(cm)))


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class, 2 TP / (2 TP + FP + FN); 0 where a class is neither true nor predicted."""
    return _per_class_f1(_checked_confusion(cm))


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class, TP / (TP + FN); 0 where a class has no true sample."""
    return _per_class_recall(_checked_confusion(cm))


def present_classes(cm: np.ndarray) -> np.ndarray:
    """Bool [C]: the classes with at least one true sample (a row of ``cm`` that is not empty)."""
    return _checked_confusion(cm).sum(axis=1) > 0


def uf1(cm: np.ndarray, *, present_only: bool = False) -> float:
    """Unweighted F1: the mean of ``per_class_f1``.

    By default over all C classes; ``present_only=True`` averages only over the
    classes with a true sample (scikit-learn's ``f1_score(average='macro',
    labels=<classes present>, zero_division=0)``): predictions of an absent
    class still count as misses of the true class, but the absent class's
    F1 of 0 does not enter the mean.
    """
    return _mean_over_classes(per_class_f1(cm), cm, present_only)


def uar(cm: np.ndarray, *, present_only: bool = False) -> float:
    """Unweighted average recall: the mean of ``per_class_recall``.

    By default over all C classes, an absent class counting as recall 0
    (scikit-learn's ``recall_score(average='macro', labels=range(C),
    zero_division=0)``). ``present_only=True`` averages only over classes
    with at least one true sample, which is what "average recall" means for a
    single test fold that lacks some classes (common in LOSO).
    """
    return _mean_over_classes(per_class_recall(cm), cm, present_only)


def classification_metrics(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                           num_classes: int) -> dict[str, Any]:
    """Returns JSON-ready 'accuracy', 'uf1', 'uar', 'confusion' (list of lists) and 'num_samples'."""
    cm = confusion_matrix(labels, predictions, num_classes)
    return _metrics_of(cm)


def pool_folds(
    per_fold: Sequence[tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray]],
    num_classes: int,
    *,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics over cross-validation folds given as (labels, predictions) per fold.

    The top-level 'accuracy', 'uf1', 'uar', 'confusion', 'num_samples' are
    computed on the predictions of all folds pooled (the MEGC/LOSO
    convention). 'per_fold' lists each fold's own metrics (with 'name' when
    ``names`` is given), each with 'uf1_present' / 'uar_present' (averaged
    over the classes present on that fold's test side) and 'absent_classes'
    (indices of the classes with no test sample there; the top level has them
    too, for the pooled predictions). 'fold_mean' and 'fold_std' give the mean
    and the sample standard deviation (ddof=1, 'fold_std_ddof'; None for a
    single fold) over folds of ``FOLD_METRICS``; 'num_folds' counts the folds.

    Raises:
      ValueError: if there is no fold, a fold has no sample (naming it), or
        ``names`` does not match the folds.
    """
    if not per_fold:
        raise ValueError("pool_folds needs at least one fold")
    fold_names = list(names) if names is not None else [f"fold {i}" for i in range(len(per_fold))]
    if len(fold_names) != len(per_fold):
        raise ValueError(f"{len(fold_names)} names for {len(per_fold)} folds")
    fold_matrices = []
    for fold_name, (labels, predictions) in zip(fold_names, per_fold):
        cm = confusion_matrix(labels, predictions, num_classes)
        if cm.sum() == 0:
            raise ValueError(f"{fold_name!r} has no sample")
        fold_matrices.append(cm)
    per_fold_metrics = [_fold_metrics_of(cm) for cm in fold_matrices]
    if names is not None:
        for fold_name, metrics in zip(fold_names, per_fold_metrics):
            metrics["name"] = fold_name
    summary = {key: np.array([m[key] for m in per_fold_metrics]) for key in FOLD_METRICS}
    several = len(per_fold) > 1
    return {
        **_fold_metrics_of(np.sum(fold_matrices, axis=0)),
        "per_fold": per_fold_metrics,
        "fold_mean": {key: float(values.mean()) for key, values in summary.items()},
        "fold_std": {key: float(values.std(ddof=FOLD_STD_DDOF)) if several else None
                     for key, values in summary.items()},
        "fold_std_ddof": FOLD_STD_DDOF,
        "num_folds": len(per_fold),
    }


def bootstrap_interval(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                       num_classes: int, *, resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap interval of accuracy, UF1 and UAR, resampling samples with replacement.

    Resample ``b`` takes the samples ``np.random.default_rng(seed).integers(0,
    N, (resamples, N))[b]`` and scores them like ``classification_metrics``;
    the interval is the (1 - confidence)/2 and (1 + confidence)/2 quantiles of
    the ``resamples`` scores. It measures how much the scores move with the
    test samples drawn, for fixed predictions: not training variance (seeds)
    and not the correlation of samples of one subject (it treats samples as
    independent, so it is too narrow when they are not).

    Returns:
      ``{'accuracy': [low, high], 'uf1': [...], 'uar': [...]}``.
    """
    cm = confusion_matrix(labels, predictions, num_classes)   # validates the inputs
    label_array, prediction_array = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if cm.sum() == 0:
        raise ValueError("bootstrap_interval needs at least one sample")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"resamples must be >= 1 and confidence in (0, 1), got {resamples} and {confidence}")
    size = label_array.size
    chosen = np.random.default_rng(seed).integers(0, size, (resamples, size))
    codes = label_array[chosen] * num_classes + prediction_array[chosen] + \
        (np.arange(resamples) * num_classes * num_classes)[:, None]
    matrices = np.bincount(codes.ravel(), minlength=resamples * num_classes * num_classes).reshape(
        resamples, num_classes, num_classes)
    scores = {"accuracy": _accuracy(matrices), "uf1": _per_class_f1(matrices).mean(-1),
              "uar": _per_class_recall(matrices).mean(-1)}
    quantiles = [(1 - confidence) / 2, (1 + confidence) / 2]
    return {key: np.quantile(values, quantiles).tolist() for key, values in scores.items()}


def expected_uniform_metrics(labels: Sequence[int] | np.ndarray, num_classes: int) -> dict[str, float]:
    """Exact expected accuracy, UF1 and UAR of predicting each class with probability 1/C, independently.

    Accuracy is 1/C and UAR (present classes)/C². For UF1 the expectation of
    each class's F1 = 2T / (n + T + F) is summed exactly over T ~ Binomial(n,
    1/C) (its n true samples guessed right) and the independent F ~
    Binomial(N - n, 1/C) (other samples guessed as it); a class without true
    samples has F1 0. Pooled predictions of several folds are one such draw
    over all their samples, so this is also the chance level of pooled metrics.
    """
    counts = np.bincount(_class_indices("label", labels, num_classes), minlength=num_classes)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("expected_uniform_metrics needs at least one label")
    if num_classes < 2:
        raise ValueError(f"expected_uniform_metrics needs at least 2 classes, got {num_classes}")
    p = 1.0 / num_classes
    f1 = []
    for n in counts.tolist():
        if n == 0:
            f1.append(0.0)
            continue
        hits, false_alarms = np.arange(n + 1)[:, None], np.arange(total - n + 1)[None, :]
        weights = _binomial_pmf(n, p)[:, None] * _binomial_pmf(total - n, p)[None, :]
        f1.append(float(np.sum(weights * 2.0 * hits / (n + hits + false_alarms))))
    return {"accuracy": p, "uf1": float(np.mean(f1)), "uar": float(np.count_nonzero(counts)) * p * p}


def _metrics_of(cm: np.ndarray) -> dict[str, Any]:
    return {
        "accuracy": accuracy(cm),
        "uf1": uf1(cm),
        "uar": uar(cm),
        "confusion": cm.tolist(),
        "num_samples": int(cm.sum()),
    }


def _fold_metrics_of(cm: np.ndarray) -> dict[str, Any]:
    """``_metrics_of`` and the present-only UF1/UAR with the classes left out of them."""
    return {
        **_metrics_of(cm),
        "uf1_present": uf1(cm, present_only=True),
        "uar_present": uar(cm, present_only=True),
        "absent_classes": np.flatnonzero(~present_classes(cm)).tolist(),
    }


# The private scores below take one [C, C] matrix or a stack [..., C, C] (the bootstrap's).
def _accuracy(cm: np.ndarray) -> np.ndarray:
    return np.trace(cm, axis1=-2, axis2=-1) / cm.sum(axis=(-2, -1))


def _per_class_f1(cm: np.ndarray) -> np.ndarray:
    true_positives = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    return _divide_or_zero(2.0 * true_positives, cm.sum(axis=-1) + cm.sum(axis=-2))


def _per_class_recall(cm: np.ndarray) -> np.ndarray:
    return _divide_or_zero(np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64), cm.sum(axis=-1))


def _mean_over_classes(per_class: np.ndarray, cm: np.ndarray, present_only: bool) -> float:
    return float(np.mean(per_class[present_classes(cm)] if present_only else per_class))


def _binomial_pmf(trials: int, p: float) -> np.ndarray:
    """P(k successes), k = 0..trials, for 0 < p < 1, from log-factorials (no overflow for thousands of trials)."""
    log_factorial = np.array([math.lgamma(k + 1) for k in range(trials + 1)])
    k = np.arange(trials + 1)
    return np.exp(log_factorial[trials] - log_factorial[k] - log_factorial[trials - k]
                  + k * math.log(p) + (trials - k) * math.log1p(-p))


def _class_indices(what: str, values: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what}s must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}s must be integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    outside = array[(array < 0) | (array >= num_classes)]
    if outside.size:
        raise ValueError(f"{what} {outside[0]} is outside 0..{num_classes - 1}")
    return array


def _checked_confusion(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {cm.shape}")
    if cm.sum() == 0:
        raise ValueError("confusion matrix has no sample")
    return cm


def _divide_or_zero(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, 0.0)
