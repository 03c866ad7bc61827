"""Evaluation protocols: k-fold by subject, LOSO (also over a composite of databases), cross-database, k-fold by sample.

Micro-expression databases have few subjects and many clips per subject, and a
model that has seen a face in training scores far higher on that face's clips.
Every protocol here except ``kfold_by_sample`` therefore assigns whole
subjects to one side of each fold. Each fold also carries an inner validation
split carved from its *training subjects* only, so that model selection
(early stopping, choice of epoch) never looks at the test fold (DESIGN.md,
"No test-fold model selection").

A protocol works on two parallel sequences, one entry per example (clip):
the subject id and the integer label. Folds hold example indices into them.
Given ``num_classes`` (or ``class_names``, which also names the classes in
messages) every fold is checked (``check_fold``). What the data cannot give
(more folds than subjects, a class with no training example, validation
subjects that would take a class away) raises ``UserError`` naming the fold,
class or value.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from merjax.errors import UserError

SIDES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Fold:
    """One split of a protocol; each side is a sorted, read-only int64 array of example indices.

    ``val`` is drawn from the training subjects only (it may be empty);
    ``train``, ``val`` and ``test`` are disjoint.
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        for side in SIDES:
            object.__setattr__(self, side, _sorted_index_array(getattr(self, side)))


def kfold_by_subject(
    subjects: Sequence[str],
    labels: Sequence[int],
    k: int,
    seed: int,
    *,
    val_subjects: int = 1,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """Splits the examples into ``k`` folds of whole subjects (seed 001, §4.6: 5 folds).

    Subjects are assigned greedily, largest first (ties in a seeded random
    order), each to the fold where it brings the per-class example counts
    closest to an even share of every class; the fold order is then seeded
    too. The same seed always gives the same folds. Fold ``i`` is named
    ``fold{i}``: its test side is its subjects, ``val_subjects`` other subjects
    form its validation side and the rest its training side.

    Raises:
      ValueError: if ``k`` < 2.
      UserError: if ``k`` exceeds the number of subjects, or (when
        ``num_classes`` or ``class_names`` is given) a fold fails ``check_fold``.
    """
    subject_array, label_array = _validated_arrays(subjects, labels)
    subject_names, subject_of_example = np.unique(subject_array, return_inverse=True)
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got k={k}")
    if k > len(subject_names):
        raise UserError(f"k={k} folds need at least {k} subjects, but there are only {len(subject_names)}")
    class_counts = _class_count_matrix(subject_of_example, label_array, len(subject_names))
    fold_of_subject = _assign_subjects_to_folds(class_counts, k, np.random.default_rng(seed))
    return [
        _subject_fold(
            f"fold{i}", fold_of_subject == i, subject_of_example, label_array, subject_array,
            val_subjects=val_subjects, rng=np.random.default_rng([seed, i]),
            num_classes=num_classes, class_names=class_names)
        for i in range(k)
    ]


def loso(
    subjects: Sequence[str],
    labels: Sequence[int],
    *,
    seed: int = 0,
    val_subjects: int = 1,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """Leave-one-subject-out: one fold per subject, named ``loso_<subject>``, in natural subject order.

    The seed only picks each fold's validation subjects. A test fold that
    lacks some classes is normal here; use pooled metrics (``pool_folds``).
    For a composite of databases pass ``subject_keys(datasets, subjects)`` so
    that equal ids from different databases stay different subjects.
    """
    subject_array, label_array = _validated_arrays(subjects, labels)
    subject_names, subject_of_example = np.unique(subject_array, return_inverse=True)
    if len(subject_names) < 2:
        raise UserError(f"LOSO needs at least 2 subjects, got {subject_names.tolist()}")
    order = sorted(range(len(subject_names)), key=lambda i: natural_key(subject_names[i]))
    return [
        _subject_fold(
            f"loso_{subject_names[s]}", np.arange(len(subject_names)) == s, subject_of_example,
            label_array, subject_array, val_subjects=val_subjects,
            rng=np.random.default_rng([seed, i]), num_classes=num_classes, class_names=class_names)
        for i, s in enumerate(order)
    ]


def composite_loso(
    datasets: Sequence[str],
    subjects: Sequence[str],
    labels: Sequence[int],
    *,
    seed: int = 0,
    val_subjects: int = 1,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """LOSO over a composite of databases (MEGC 2019: SMIC + CASME II + SAMM, 68 subjects).

    A subject is ``<dataset>/<subject>``, so equal ids from different
    databases stay different subjects; folds are named ``loso_<dataset>/<subject>``
    and checked as ``loso``'s. Report UF1/UAR on the predictions pooled over
    all folds (MEGC convention).
    """
    return loso(subject_keys(datasets, subjects), labels, seed=seed, val_subjects=val_subjects,
                num_classes=num_classes, class_names=class_names)


def cross_database(
    datasets: Sequence[str],
    subjects: Sequence[str],
    labels: Sequence[int],
    *,
    train: str,
    test: str,
    seed: int = 0,
    val_subjects: int = 1,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Fold:
    """Trains on one database and tests on another (seed 003: SAMM <-> CASME II); ``datasets`` per example.

    The fold is named ``cross_<train>_to_<test>``; examples of any other
    database are on no side. Validation subjects come from the training
    database.
    """
    dataset_array = np.asarray([str(d) for d in datasets])
    keys = subject_keys(datasets, subjects)
    subject_array, label_array = _validated_arrays(keys, labels)
    for name in (train, test):
        if name not in dataset_array:
            raise UserError(f"dataset {name!r} has no example; present: {sorted(set(dataset_array.tolist()))}")
    if train == test:
        raise UserError(f"cross-dataset needs two different datasets, got train=test={train!r}")
    used = np.flatnonzero(np.isin(dataset_array, (train, test)))
    subject_names, used_subject_of_example = np.unique(subject_array[used], return_inverse=True)
    test_subjects = np.unique(used_subject_of_example[dataset_array[used] == test])
    fold = _subject_fold(
        f"cross_{train}_to_{test}", np.isin(np.arange(len(subject_names)), test_subjects),
        used_subject_of_example, label_array[used], subject_array[used],
        val_subjects=val_subjects, rng=np.random.default_rng(seed), num_classes=num_classes, class_names=class_names)
    return Fold(fold.name, used[fold.train], used[fold.val], used[fold.test])


def kfold_by_sample(
    labels: Sequence[int],
    k: int,
    seed: int,
    *,
    val_fraction: float = 0.0,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[Fold]:
    """Stratified k-fold over examples, ignoring subjects: NOT subject-independent.

    Seed 003 evaluates with 10-fold cross-validation over samples (90 % train,
    10 % test), so the same subject's clips sit on both sides of a fold and
    scores are optimistic compared with ``kfold_by_subject`` or ``loso``. It is
    offered only to reproduce that protocol; folds are named
    ``sample_fold{i}`` so that reports show which protocol was used.

    Each class's examples are shuffled (seeded) and dealt round-robin over the
    folds. ``val_fraction`` of each class's training examples (rounded, at
    least one left for training) form the validation side.
    """
    label_array = _validated_labels(labels)
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got k={k}")
    if k > len(label_array):
        raise UserError(f"k={k} folds need at least {k} examples, but there are only {len(label_array)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    fold_of_example = _deal_examples_to_folds(label_array, k, np.random.default_rng(seed))
    folds = []
    for i in range(k):
        train = np.flatnonzero(fold_of_example != i)
        val = _stratified_subset(train, label_array, val_fraction, np.random.default_rng([seed, i]))
        fold = Fold(f"sample_fold{i}", np.setdiff1d(train, val), val, np.flatnonzero(fold_of_example == i))
        names = _shown_classes(num_classes, class_names)
        if names is not None:
            _check_training_classes(fold, label_array, names)
        folds.append(fold)
    return folds


def check_fold(fold: Fold, subjects: Sequence[str], labels: Sequence[int], num_classes: int | None = None,
               class_names: Sequence[str] | None = None) -> None:
    """Checks that a fold is subject-independent and that every class has a training example.

    Give ``num_classes`` or ``class_names`` (which names the classes in the message).

    Raises:
      ValueError: naming the fold and the offending index or subject, if an
        index is out of range or on two sides, or a subject is on two sides.
      UserError: naming the fold and the class (by name when given) when a
        class in 0..num_classes-1 has no training example.
    """
    names = _shown_classes(num_classes, class_names)
    if names is None:
        raise ValueError("check_fold needs num_classes or class_names")
    subject_array, label_array = _validated_arrays(subjects, labels)
    _check_sides_disjoint(fold, len(label_array))
    subjects_by_side = {side: set(subject_array[getattr(fold, side)].tolist()) for side in SIDES}
    for i, first in enumerate(SIDES):
        for second in SIDES[i + 1:]:
            shared = sorted(subjects_by_side[first] & subjects_by_side[second])
            if shared:
                raise ValueError(f"fold {fold.name!r}: subject {shared[0]!r} is in both {first} and {second}")
    _check_training_classes(fold, label_array, names)


def subject_keys(datasets: Sequence[str], subjects: Sequence[str]) -> np.ndarray:
    """Returns ``'<dataset>/<subject>'`` per example, so ids stay unique across databases."""
    if len(datasets) != len(subjects):
        raise ValueError(f"{len(datasets)} dataset names but {len(subjects)} subjects")
    return np.asarray([f"{d}/{s}" for d, s in zip(datasets, subjects)])


def _subject_fold(
    name: str,
    is_test_subject: np.ndarray,
    subject_of_example: np.ndarray,
    labels: np.ndarray,
    subject_array: np.ndarray,
    *,
    val_subjects: int,
    rng: np.random.Generator,
    num_classes: int | None,
    class_names: Sequence[str] | None,
) -> Fold:
    """Builds one fold from a boolean mask over subjects, carving validation subjects from training.

    The fold is checked (``check_fold``) when ``num_classes`` or ``class_names`` is given.
    """
    train_subjects = np.flatnonzero(~is_test_subject)
    val_subject_ids = _pick_validation_subjects(name, train_subjects, subject_of_example, labels, val_subjects, rng)
    is_test = is_test_subject[subject_of_example]
    is_val = np.isin(subject_of_example, val_subject_ids)
    fold = Fold(name, np.flatnonzero(~is_test & ~is_val), np.flatnonzero(is_val), np.flatnonzero(is_test))
    if num_classes is not None or class_names is not None:
        check_fold(fold, subject_array, labels, num_classes, class_names)
    return fold


def _pick_validation_subjects(
    fold_name: str,
    train_subjects: np.ndarray,
    subject_of_example: np.ndarray,
    labels: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Picks ``count`` training subjects in a seeded order, skipping any whose removal loses a class."""
    if count < 0:
        raise ValueError(f"val_subjects must be >= 0, got {count}")
    if count == 0:
        return np.empty(0, np.int64)
    if count >= len(train_subjects):
        raise UserError(
            f"fold {fold_name!r}: val_subjects={count} would leave no training subject "
            f"(the fold has {len(train_subjects)} training subjects)")
    remaining = set(train_subjects.tolist())
    classes_needed = set(labels[np.isin(subject_of_example, train_subjects)].tolist())
    chosen: list[int] = []
    for subject in rng.permutation(train_subjects):
        kept = remaining - {int(subject)}
        if set(labels[np.isin(subject_of_example, list(kept))].tolist()) == classes_needed:
            chosen.append(int(subject))
            remaining = kept
            if len(chosen) == count:
                return np.asarray(chosen, np.int64)
    raise UserError(
        f"fold {fold_name!r}: cannot take {count} validation subjects without leaving a class "
        f"with no training example (found {len(chosen)})")


def _assign_subjects_to_folds(class_counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy class-aware balancing of subjects (rows of ``class_counts``) over ``k`` folds.

    Largest subjects first; the first ``k`` fill the empty folds, every later
    one goes to the fold where adding it least increases the squared distance
    of the fold's per-class counts from an even share (ties: fewest examples).
    """
    order = rng.permutation(len(class_counts))
    order = order[np.argsort(-class_counts[order].sum(axis=1), kind="stable")]
    target = class_counts.sum(axis=0) / k
    fold_counts = np.zeros((k, class_counts.shape[1]))
    fold_of_subject = np.empty(len(class_counts), np.int64)
    for subject in order:
        sizes = fold_counts.sum(axis=1)
        candidates = np.flatnonzero(sizes == 0) if (sizes == 0).any() else np.arange(k)
        before = ((fold_counts[candidates] - target) ** 2).sum(axis=1)
        after = ((fold_counts[candidates] + class_counts[subject] - target) ** 2).sum(axis=1)
        best = candidates[np.lexsort((sizes[candidates], after - before))[0]]
        fold_counts[best] += class_counts[subject]
        fold_of_subject[subject] = best
    return rng.permutation(k)[fold_of_subject]


def _deal_examples_to_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Deals each class's shuffled examples round-robin over folds, continuing across classes."""
    fold_of_example = np.empty(len(labels), np.int64)
    dealt = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold_of_example[members] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return fold_of_example


def _stratified_subset(
    indices: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Draws round(fraction * n_c) of each class's ``indices``, leaving at least one per class."""
    chosen = []
    for label in np.unique(labels[indices]):
        members = indices[labels[indices] == label]
        take = min(int(round(fraction * len(members))), len(members) - 1)
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.concatenate(chosen) if chosen else np.empty(0, np.int64)


def _check_sides_disjoint(fold: Fold, num_examples: int) -> None:
    for side in SIDES:
        indices = getattr(fold, side)
        outside = indices[(indices < 0) | (indices >= num_examples)]
        if outside.size:
            raise ValueError(
                f"fold {fold.name!r}: {side} index {outside[0]} is outside 0..{num_examples - 1}")
        if np.any(np.diff(indices) == 0):
            raise ValueError(f"fold {fold.name!r}: {side} repeats an example index")
    for i, first in enumerate(SIDES):
        for second in SIDES[i + 1:]:
            shared = np.intersect1d(getattr(fold, first), getattr(fold, second))
            if shared.size:
                raise ValueError(f"fold {fold.name!r}: example {shared[0]} is in both {first} and {second}")


def _shown_classes(num_classes: int | None, class_names: Sequence[str] | None) -> tuple[str, ...] | None:
    """How each class is named in messages (``'surprise'``; ``2`` without names), or None: nothing to check."""
    if class_names is not None:
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names {tuple(class_names)}")
        return tuple(repr(str(name)) for name in class_names)
    return None if num_classes is None else tuple(str(label) for label in range(num_classes))


def _check_training_classes(fold: Fold, labels: np.ndarray, class_names: Sequence[str]) -> None:
    num_classes = len(class_names)
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if outside.size:
        raise ValueError(f"label {outside[0]} is outside 0..{num_classes - 1}")
    present = np.bincount(labels[fold.train], minlength=num_classes)
    for label in range(num_classes):
        if present[label] == 0:
            in_val, in_test = (int(np.sum(labels[getattr(fold, side)] == label)) for side in ("val", "test"))
            cause = (f"{in_val} of its examples are on the validation side: fewer validation subjects or another "
                     f"seed may keep them" if in_val else
                     f"all {in_test} of its examples are on the test side: the class needs examples from more "
                     f"subjects")
            raise UserError(f"fold {fold.name!r}: class {class_names[label]} has no training example ({cause})")


def _class_count_matrix(subject_of_example: np.ndarray, labels: np.ndarray, num_subjects: int) -> np.ndarray:
    """Returns [num_subjects, num_distinct_labels] example counts."""
    _, class_of_example = np.unique(labels, return_inverse=True)
    counts = np.zeros((num_subjects, class_of_example.max(initial=-1) + 1), np.int64)
    np.add.at(counts, (subject_of_example, class_of_example), 1)
    return counts


def _validated_arrays(subjects: Sequence[str], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    label_array = _validated_labels(labels)
    subject_array = np.asarray([str(s) for s in subjects])
    if len(subject_array) != len(label_array):
        raise ValueError(f"{len(subject_array)} subjects but {len(label_array)} labels")
    return subject_array, label_array


def _validated_labels(labels: Sequence[int]) -> np.ndarray:
    label_array = np.asarray(labels)
    if label_array.ndim != 1 or label_array.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {label_array.shape}")
    if not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {label_array.dtype}")
    return label_array.astype(np.int64)


def _sorted_index_array(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.sort(np.asarray(indices, dtype=np.int64).reshape(-1))
    array.setflags(write=False)
    return array


def natural_key(name: str) -> tuple[tuple[int | str, ...], str]:
    """Sort key of an id in natural order, the one order of subjects, folders and folds in merjax.

    Runs of digits compare by value ('s2' before 's10') and the rest without
    case ('S3' between 's2' and 's4'); ids equal under those rules ('sub01' and
    'sub1', 'S1' and 's1') are ordered by their text, so an order never depends
    on the order of the input.
    """
    parts = re.split(r"(\d+)", name)   # text at even positions, digit runs at odd ones
    return tuple(int(part) if position % 2 else part.casefold() for position, part in enumerate(parts)), name
