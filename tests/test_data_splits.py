"""make_splits: patient grouping, stratification, determinism, degenerate inputs, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from audit.core.config import CLASSES
from audit.core.errors import InputError
from audit.data.splits import load_splits, make_splits, save_splits
from tests.data_fixtures import table_dataset


def _dataset(patients_per_class: int = 20, images_per_patient: int = 3):
    labels, patients = [], []
    for label in CLASSES:
        for p in range(patients_per_class):
            labels += [label] * images_per_patient
            patients += [f"{label}-{p}"] * images_per_patient
    return table_dataset(labels, patients)


def _patients(dataset, positions):
    return set(dataset.groups[positions])


def test_no_patient_is_in_two_parts_and_every_row_is_used():
    dataset = _dataset()
    splits = make_splits(dataset, seed=3)
    assert not _patients(dataset, splits.train) & _patients(dataset, splits.test)
    assert sorted(np.concatenate([splits.train, splits.test])) == list(range(len(dataset)))
    assert len(splits.folds) == 5
    vals = np.concatenate([val for _, val in splits.folds])
    assert sorted(vals) == sorted(splits.train)  # folds partition the development rows
    for fit, val in splits.folds:
        assert not _patients(dataset, fit) & _patients(dataset, val)
        assert sorted(np.concatenate([fit, val])) == sorted(splits.train)


def test_splits_are_stratified_by_label():
    dataset = _dataset()
    splits = make_splits(dataset, test_fraction=0.2, seed=0)
    assert 0.15 <= len(splits.test) / len(dataset) <= 0.25
    assert np.all(np.bincount(dataset.labels[splits.test], minlength=4) > 0)
    for _, val in splits.folds:
        assert np.all(np.bincount(dataset.labels[val], minlength=4) > 0)


def test_same_seed_same_splits_other_seed_other_splits():
    dataset = _dataset()
    first, again, other = (make_splits(dataset, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(first.test, again.test)
    for (fit_a, val_a), (fit_b, val_b) in zip(first.folds, again.folds, strict=True):
        np.testing.assert_array_equal(fit_a, fit_b)
        np.testing.assert_array_equal(val_a, val_b)
    assert not np.array_equal(first.test, other.test)


def test_a_class_with_too_few_patients_is_named():
    labels = ["covid"] * 30 + ["normal"] * 3
    patients = [f"c{i}" for i in range(30)] + ["n0", "n1", "n2"]
    with pytest.raises(InputError, match=r"class 'normal' has 3 patient\(s\); .* needs at least 7"):
        make_splits(table_dataset(labels, patients))


def test_bad_parameters_are_rejected():
    with pytest.raises(InputError, match=r"test_fraction must be in \(0, 0.5\], got 0.7"):
        make_splits(_dataset(), test_fraction=0.7)
    with pytest.raises(InputError, match=r"n_folds must be at least 2, got 1"):
        make_splits(_dataset(), n_folds=1)


def test_save_and_load_round_trip(tmp_path):
    dataset = _dataset(patients_per_class=10)
    splits = make_splits(dataset, n_folds=3, seed=4)
    save_splits(splits, dataset, tmp_path / "splits.json")
    loaded = load_splits(tmp_path / "splits.json")
    assert loaded.seed == 4
    np.testing.assert_array_equal(loaded.test, splits.test)
    np.testing.assert_array_equal(loaded.train, splits.train)
    np.testing.assert_array_equal(loaded.val, splits.val)
    np.testing.assert_array_equal(loaded.fit, splits.fit)
    with pytest.raises(InputError, match=r"missing.json: not a readable splits file"):
        load_splits(tmp_path / "missing.json")
