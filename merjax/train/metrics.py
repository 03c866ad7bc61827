"""Classification metrics for micro-expression recognition: accuracy, UF1, UAR, confusion matrix.

Micro-expression classes are imbalanced, so besides accuracy the field
reports UF1 (unweighted F1: the mean over classes of the per-class F1) and UAR
(unweighted average recall: the mean over classes of the per-class recall),
as in MEGC 2019. Every metric is computed from a confusion matrix, so the
MEGC/LOSO convention of pooling the predictions of all folds before computing
UF1 and UAR is one sum of matrices (``pool_folds``). The definitions match
scikit-learn's ``f1_score`` / ``recall_score`` with ``average='macro'``,
``labels=range(C)``, ``zero_division=0``: a class absent from the labels
counts as F1 0 and recall 0 and still enters the mean.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SUMMARY_METRICS = ("accuracy", "uf1", "uar")


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
    cm = _checked_confusion(cm)
    return float(np.trace(cm) / cm.sum())


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class, 2 TP / (2 TP + FP + FN); 0 where a class is neither true nor predicted."""
    cm = _checked_confusion(cm)
    true_positives = np.diag(cm).astype(np.float64)
    denominator = cm.sum(axis=1) + cm.sum(axis=0)
    return _divide_or_zero(2.0 * true_positives, denominator)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class, TP / (TP + FN); 0 where a class has no true sample."""
    cm = _checked_confusion(cm)
    return _divide_or_zero(np.diag(cm).astype(np.float64), cm.sum(axis=1))


def uf1(cm: np.ndarray) -> float:
    """Unweighted F1: the mean of ``per_class_f1`` over all C classes."""
    return float(np.mean(per_class_f1(cm)))


def uar(cm: np.ndarray, *, present_only: bool = False) -> float:
    """Unweighted average recall: the mean of ``per_class_recall``.

    By default over all C classes, an absent class counting as recall 0
    (scikit-learn's ``recall_score(average='macro', labels=range(C),
    zero_division=0)``). ``present_only=True`` averages only over classes
    with at least one true sample, which is what "average recall" means for a
    single test fold that lacks some classes (common in LOSO).
    """
    cm = _checked_confusion(cm)
    recalls = per_class_recall(cm)
    if present_only:
        recalls = recalls[cm.sum(axis=1) > 0]
    return float(np.mean(recalls))


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
    ``names`` is given); 'fold_mean' and 'fold_std' give the mean and the
    population standard deviation (ddof=0) over folds of accuracy, UF1 and
    UAR; 'num_folds' counts the folds.

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
    per_fold_metrics = [_metrics_of(cm) for cm in fold_matrices]
    if names is not None:
        for fold_name, metrics in zip(fold_names, per_fold_metrics):
            metrics["name"] = fold_name
    summary = {key: np.array([m[key] for m in per_fold_metrics]) for key in SUMMARY_METRICS}
    return {
        **_metrics_of(np.sum(fold_matrices, axis=0)),
        "per_fold": per_fold_metrics,
        "fold_mean": {key: float(values.mean()) for key, values in summary.items()},
        "fold_std": {key: float(values.std()) for key, values in summary.items()},
        "num_folds": len(per_fold),
    }


def _metrics_of(cm: np.ndarray) -> dict[str, Any]:
    return {
        "accuracy": accuracy(cm),
        "uf1": uf1(cm),
        "uar": uar(cm),
        "confusion": cm.tolist(),
        "num_samples": int(cm.sum()),
    }


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
