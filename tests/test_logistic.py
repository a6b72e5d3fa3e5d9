"""``probes.logistic.predict_many`` against its reference, scikit-learn's balanced L2 logistic
regression fitted one target at a time (to a tolerance tight enough to be the optimum)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from probes.logistic import predict_many


def _reference(x_train: np.ndarray, target: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    if len(np.unique(target)) == 1:
        return np.full(len(x_test), target[0])
    model = LogisticRegression(class_weight="balanced", solver="newton-cholesky", tol=1e-10,
                               max_iter=1000)
    return model.fit(x_train, target).predict(x_test)


def _problem(n_classes: int, seed: int, n: int = 90, m: int = 400, d: int = 8):
    """Unequal class sizes (so the balancing matters) and off-centre features (so the
    unpenalised intercept matters), the label partly linear in the features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=1.5, size=(n + m, d)) * np.linspace(3.0, 0.3, d)
    cuts = np.quantile(x[:, 0] + rng.normal(scale=2.0, size=n + m),
                       np.linspace(0, 1, n_classes + 1)[1:-1] ** 0.6)
    labels = np.searchsorted(cuts, x[:, 0] + rng.normal(scale=2.0, size=n + m))
    return x[:n], labels[:n], x[n:], rng


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_every_target_predicts_what_its_own_fit_predicts(n_classes):
    x_train, labels, x_test, rng = _problem(n_classes, seed=n_classes)
    targets = np.stack([labels] + [rng.permutation(labels) for _ in range(11)])
    predicted = predict_many(x_train, targets, x_test)
    expected = np.stack([_reference(x_train, target, x_test) for target in targets])
    assert predicted.shape == (len(targets), len(x_test))
    np.testing.assert_array_equal(predicted, expected)


def test_targets_missing_classes_are_fitted_on_the_classes_they_hold():
    x_train, labels, x_test, rng = _problem(4, seed=7)
    two_classes = np.where(labels >= 2, 3, 1)  # codes 1 and 3 only: a binary fit
    three_classes = np.where(labels == 0, 1, labels)  # code 0 absent
    one_class = np.full_like(labels, 2)
    targets = np.stack([labels, two_classes, three_classes, one_class, rng.permutation(labels)])
    predicted = predict_many(x_train, targets, x_test)
    for target, row in zip(targets, predicted, strict=True):
        np.testing.assert_array_equal(row, _reference(x_train, target, x_test))
