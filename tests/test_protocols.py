"""Tests for merjax.data.protocols: subject independence, coverage, determinism and errors."""

from __future__ import annotations

import numpy as np
import pytest

from merjax.data import protocols


def random_dataset(seed: int, num_subjects: int = 16, num_examples: int = 164, num_classes: int = 3):
    """SMIC-HS-like subject and label arrays: every subject has at least one clip."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(num_examples - num_subjects, np.ones(num_subjects) / num_subjects) + 1
    subjects = np.repeat([f"s{i + 1}" for i in range(num_subjects)], sizes)
    order = rng.permutation(num_examples)
    labels = np.arange(num_examples) % num_classes
    return subjects[order], labels[rng.permutation(num_examples)]


def assert_subject_independent(folds, subjects):
    for fold in folds:
        sides = {side: set(subjects[getattr(fold, side)]) for side in protocols.SIDES}
        assert not sides["train"] & sides["test"], fold.name
        assert not sides["train"] & sides["val"], fold.name
        assert not sides["val"] & sides["test"], fold.name
        assert not np.intersect1d(fold.train, fold.test).size


def assert_tests_cover_every_example_once(folds, num_examples):
    tests = np.concatenate([fold.test for fold in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(num_examples))


def assert_sides_cover_all(folds, num_examples):
    for fold in folds:
        together = np.concatenate([fold.train, fold.val, fold.test])
        np.testing.assert_array_equal(np.sort(together), np.arange(num_examples))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [2, 5])
def test_kfold_by_subject_is_subject_independent_and_covers(seed, k):
    subjects, labels = random_dataset(seed)
    folds = protocols.kfold_by_subject(subjects, labels, k, seed, num_classes=3)
    assert [f.name for f in folds] == [f"fold{i}" for i in range(k)]
    assert_subject_independent(folds, subjects)
    assert_tests_cover_every_example_once(folds, len(labels))
    assert_sides_cover_all(folds, len(labels))
    for fold in folds:
        assert len(set(subjects[fold.val])) == 1
        for side in protocols.SIDES:
            array = getattr(fold, side)
            assert array.dtype == np.int64
            assert np.all(np.diff(array) > 0)
            assert not array.flags.writeable


def test_kfold_by_subject_balances_fold_sizes():
    subjects, labels = random_dataset(0)
    folds = protocols.kfold_by_subject(subjects, labels, 5, 0, num_classes=3)
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 8, sizes


def test_kfold_by_subject_is_deterministic_per_seed_and_varies_across_seeds():
    subjects, labels = random_dataset(1)

    def test_sets(seed):
        return [f.test.tolist() for f in protocols.kfold_by_subject(subjects, labels, 5, seed)]

    assert test_sets(7) == test_sets(7)
    assert len({str(test_sets(seed)) for seed in range(6)}) > 1


def test_kfold_by_subject_rejects_more_folds_than_subjects():
    subjects, labels = random_dataset(0, num_subjects=4, num_examples=20)
    with pytest.raises(ValueError, match=r"k=5 folds need at least 5 subjects, but there are only 4"):
        protocols.kfold_by_subject(subjects, labels, 5, 0)


def test_kfold_by_subject_raises_when_a_class_has_no_training_example():
    # Class 2 exists only in subject 'c': whichever fold tests 'c' has no class-2 training example.
    subjects = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    labels = [0, 1, 0, 1, 0, 1, 0, 1, 2, 2]
    with pytest.raises(ValueError, match=r"fold 'fold\d': class 2 has no training example"):
        protocols.kfold_by_subject(subjects, labels, 3, 0, val_subjects=0, num_classes=3)


def test_validation_subjects_keep_every_class_in_training():
    # Only 'b' and 'c' may serve as validation of the fold testing 'd': 'a' alone holds class 2.
    subjects = ["a", "a", "b", "b", "c", "c", "d", "d"]
    labels = [2, 0, 0, 1, 0, 1, 2, 1]
    for seed in range(10):
        fold = protocols.loso(subjects, labels, seed=seed, num_classes=3)[3]
        assert fold.name == "loso_d"
        assert set(np.asarray(subjects)[fold.val]) <= {"b", "c"}


def test_val_subjects_zero_gives_empty_validation():
    subjects, labels = random_dataset(0)
    for fold in protocols.kfold_by_subject(subjects, labels, 5, 0, val_subjects=0):
        assert fold.val.size == 0


def test_val_subjects_leaving_no_training_subject_raises():
    with pytest.raises(ValueError, match=r"fold 'loso_a': val_subjects=2 would leave no training subject"):
        protocols.loso(["a", "b", "c"], [0, 1, 0], val_subjects=2)


@pytest.mark.parametrize("seed", [0, 5])
def test_loso_one_fold_per_subject_in_natural_order(seed):
    subjects, labels = random_dataset(seed, num_subjects=12, num_examples=60)
    folds = protocols.loso(subjects, labels, seed=seed, val_subjects=2, num_classes=3)
    assert [f.name for f in folds] == [f"loso_s{i}" for i in range(1, 13)]
    assert_subject_independent(folds, subjects)
    assert_tests_cover_every_example_once(folds, len(labels))
    assert_sides_cover_all(folds, len(labels))
    for fold in folds:
        assert set(subjects[fold.test]) == {fold.name.removeprefix("loso_")}
        assert len(set(subjects[fold.val])) == 2


def test_natural_key_orders_numbers_by_value_then_case_and_padding_by_text():
    names = ["s10", "S3", "s2", "sub1", "s1", "sub01", "S1", "006", "6", "s1_ne_10", "s1_ne_9", "EP02_01f", "ep2"]
    expected = ["006", "6", "ep2", "EP02_01f", "S1", "s1", "s1_ne_9", "s1_ne_10", "s2", "S3", "s10", "sub01", "sub1"]
    assert sorted(names, key=protocols.natural_key) == expected
    # a total order: the input's order never decides between ids the rules call equal
    assert sorted(reversed(names), key=protocols.natural_key) == expected


def test_loso_folds_follow_the_natural_order_of_mixed_case_subjects():
    folds = protocols.loso(["s10", "S2", "s1", "s10", "S2", "s1"], [0, 1, 0, 1, 0, 1], val_subjects=0)
    assert [fold.name for fold in folds] == ["loso_s1", "loso_S2", "loso_s10"]


def test_loso_is_deterministic_per_seed():
    subjects, labels = random_dataset(3)
    first = protocols.loso(subjects, labels, seed=4)
    again = protocols.loso(subjects, labels, seed=4)
    assert all(np.array_equal(a.val, b.val) for a, b in zip(first, again))


def test_loso_allows_a_test_fold_without_some_classes():
    folds = protocols.loso(["a", "a", "b", "b", "c"], [0, 1, 0, 1, 0], val_subjects=0, num_classes=2)
    assert [f.name for f in folds] == ["loso_a", "loso_b", "loso_c"]


def test_check_fold_rejects_a_subject_on_two_sides():
    fold = protocols.Fold("bad", train=[0, 1], val=[], test=[2])
    with pytest.raises(ValueError, match=r"fold 'bad': subject 'b' is in both train and test"):
        protocols.check_fold(fold, ["a", "b", "b"], [0, 1, 0], 2)


def test_check_fold_names_the_missing_class():
    fold = protocols.Fold("fold2", train=[0, 1], val=[], test=[2])
    with pytest.raises(ValueError, match=r"fold 'fold2': class 2 has no training example"):
        protocols.check_fold(fold, ["a", "a", "b"], [0, 1, 2], 3)


def test_kfold_by_sample_is_stratified_and_covers():
    labels = np.repeat([0, 1, 2], [40, 30, 20])
    folds = protocols.kfold_by_sample(labels, 10, 0, val_fraction=0.1, num_classes=3)
    assert [f.name for f in folds] == [f"sample_fold{i}" for i in range(10)]
    assert_tests_cover_every_example_once(folds, len(labels))
    assert_sides_cover_all(folds, len(labels))
    for fold in folds:
        np.testing.assert_array_equal(np.bincount(labels[fold.test], minlength=3), [4, 3, 2])
        assert fold.val.size == 9  # round(3.6) + round(2.7) + round(1.8)
    first = protocols.kfold_by_sample(labels, 10, 0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, first))


def test_cross_database_trains_on_one_database_and_tests_on_another():
    datasets = ["casme2", "casme2", "casme2", "samm", "samm", "smic"]
    subjects = ["01", "01", "02", "01", "02", "s1"]
    labels = [0, 1, 1, 0, 1, 0]
    fold = protocols.cross_database(datasets, subjects, labels, train="casme2", test="samm",
                                   val_subjects=0, num_classes=2)
    assert fold.name == "cross_casme2_to_samm"
    np.testing.assert_array_equal(fold.train, [0, 1, 2])
    np.testing.assert_array_equal(fold.test, [3, 4])
    assert fold.val.size == 0
