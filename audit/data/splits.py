"""Patient-grouped, label-stratified train/test and k-fold splits, deterministic by seed.

The test part is one fold of a ``StratifiedGroupKFold`` with about ``1 / test_fraction``
folds; the remaining (development) rows are split again into ``n_folds`` folds. Grouping
by ``patient_id`` keeps every image of a patient in one part, so a model is never tested
on a patient it saw in training. Splits are saved as JSON in the run folder (row
positions, the image paths they refer to and the seed), so any result can be traced to
the exact images it was trained and tested on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from audit.core.errors import InputError
from audit.core.io import atomic_write
from audit.data.dataset import Dataset, Splits


def _check_patients_per_class(labels: np.ndarray, groups: np.ndarray, classes: tuple[str, ...],
                              needed: int, what: str) -> None:
    for index in np.unique(labels):
        n_patients = len(np.unique(groups[labels == index]))
        if n_patients < needed:
            raise InputError(
                f"class {classes[index]!r} has {n_patients} patient(s); {what} needs at least "
                f"{needed} patients per class (add data, drop the class, or lower the count)"
            )


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int,
                   seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


def make_splits(dataset: Dataset, test_fraction: float = 0.15, n_folds: int = 5,
                seed: int = 0) -> Splits:
    """Split a dataset into development/test rows and development folds by patient.

    Args:
        dataset: the rows to split (uses ``labels`` and ``groups``).
        test_fraction: approximate share of rows in the test part; the test part is one
            of ``round(1 / test_fraction)`` grouped folds. Defaults to 0.15 (1 of 7).
        n_folds: folds over the development rows. Defaults to 5.
        seed: shuffling seed; the same seed gives the same splits. Defaults to 0.

    Returns:
        ``Splits`` with sorted row positions; no patient is in two parts.

    Raises:
        InputError: bad fractions/counts, or a class has too few patients to be in
            the test part and in every fold.
    """
    if not 0.0 < test_fraction <= 0.5:
        raise InputError(f"test_fraction must be in (0, 0.5], got {test_fraction}")
    if n_folds < 2:
        raise InputError(f"n_folds must be at least 2, got {n_folds}")
    labels, groups = dataset.labels, dataset.groups
    n_test_splits = max(2, round(1.0 / test_fraction))
    _check_patients_per_class(labels, groups, dataset.classes, max(n_test_splits, n_folds + 1),
                              f"a test fraction of {test_fraction} with {n_folds} folds")
    dev, test = _grouped_folds(labels, groups, n_test_splits, seed)[0]
    _check_patients_per_class(labels[dev], groups[dev], dataset.classes, n_folds,
                              f"{n_folds}-fold cross-validation of the development rows")
    folds = tuple((np.sort(dev[fit]), np.sort(dev[val]))
                  for fit, val in _grouped_folds(labels[dev], groups[dev], n_folds, seed))
    return Splits(train=np.sort(dev), test=np.sort(test), folds=folds, seed=seed)


def _positions(values: list) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def save_splits(splits: Splits, dataset: Dataset, path: str | Path) -> None:
    """Write the splits as JSON: positions, the image path of every row, seed, data hash."""
    record = {
        "seed": splits.seed,
        "manifest_hash": dataset.manifest_hash,
        "paths": dataset.manifest["path"].astype(str).tolist(),
        "train": splits.train.tolist(),
        "test": splits.test.tolist(),
        "folds": [{"fit": fit.tolist(), "val": val.tolist()} for fit, val in splits.folds],
    }
    with atomic_write(path) as handle:
        json.dump(record, handle)


def load_splits(path: str | Path) -> Splits:
    """Read splits written by ``save_splits``.

    Raises:
        InputError: the file is missing or not a splits file.
    """
    try:
        record = json.loads(Path(path).read_text())
        return Splits(train=_positions(record["train"]), test=_positions(record["test"]),
                      folds=tuple((_positions(fold["fit"]), _positions(fold["val"]))
                                  for fold in record["folds"]),
                      seed=int(record["seed"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a readable splits file ({error})") from None
