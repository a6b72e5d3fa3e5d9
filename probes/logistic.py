"""L2 logistic regression fitted to many targets on one design at once (the permutation nulls).

A permutation test of a linear probe refits the same features hundreds of times, each
time with the target shuffled. scikit-learn fits one target per call; on the probes' small
problems (a few hundred rows, ``PCA_COMPONENTS`` features) each call is mostly Python
overhead (on the demo, ``site.embedding``'s 5,772 fits were most of its time).
Here all targets of one design are fitted together, by Newton's method with a backtracking
line search, every array carrying the targets as a leading axis.

The model is scikit-learn's ``LogisticRegression(C=1, class_weight="balanced")`` (the
reference the tests compare against): it minimises

    sum_i w_i loss_i + ||coef||^2 / 2        (the intercept is not penalised)

with ``w_i = n / (k n_c)`` for row ``i`` of class ``c`` (k classes present in the target),
the log loss of a binomial model for two classes (one coefficient vector, the later class
positive) and of a multinomial model for more (one vector per class). Classes absent from a
target's rows are absent from its model, as in a scikit-learn fit on those rows.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import expit, log_expit, logsumexp, softmax
from sklearn.exceptions import ConvergenceWarning

MAX_NEWTON_STEPS = 100
GRADIENT_TOLERANCE = 1e-8
"""Newton stops when every target's largest gradient entry, per unit of sample weight,
is below this: far tighter than scikit-learn's default (1e-4), so the optimum is the
objective's and not a solver's."""
TARGETS_AT_ONCE = 64
"""Targets fitted together: a multinomial batch holds ``targets (k d)^2`` Hessian entries
(64 targets, 8 classes, 33 coefficients: 36 MB), so memory stays bounded with many classes."""
_ARMIJO = 1e-4  # sufficient decrease of the line search
_HALVINGS = 30


def predict_many(x_train: np.ndarray, targets: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Fit one logistic regression per row of ``targets`` on ``x_train``; predict ``x_test``.

    Args:
        x_train: ``(n, d)`` features of the training rows, shared by every target.
        targets: ``(t, n)`` integer class codes, one target per row (e.g. permutations).
        x_test: ``(m, d)`` features to predict.

    Returns:
        ``(t, m)`` predicted class codes; a target with one class present predicts it.
    """
    targets = np.asarray(targets)
    present = np.zeros((len(targets), int(targets.max()) + 1), dtype=bool)
    np.put_along_axis(present, targets, True, axis=1)
    predicted = np.empty((len(targets), len(x_test)), dtype=targets.dtype)
    # Targets whose rows hold the same classes share one batched fit; usually that is all
    # of them, but a shuffled target can leave a class out of a fold's training rows.
    patterns, which = np.unique(present, axis=0, return_inverse=True)
    design, test_design = _with_intercept(x_train), _with_intercept(x_test)
    for index, pattern in enumerate(patterns):
        members, classes = np.flatnonzero(which.ravel() == index), np.flatnonzero(pattern)
        if len(classes) == 1:
            predicted[members] = classes[0]
            continue
        fit = _fit_binary if len(classes) == 2 else _fit_multinomial
        for start in range(0, len(members), TARGETS_AT_ONCE):
            chunk = members[start:start + TARGETS_AT_ONCE]
            codes = np.searchsorted(classes, targets[chunk])
            predicted[chunk] = classes[fit(design, codes, test_design)]
    return predicted


def _with_intercept(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.hstack([x, np.ones((len(x), 1))])


def _balanced_weights(codes: np.ndarray, k: int) -> np.ndarray:
    """``(t, n)`` weights ``n / (k n_c)``: scikit-learn's ``class_weight="balanced"``."""
    counts = np.stack([np.sum(codes == c, axis=1) for c in range(k)], axis=1)
    return codes.shape[1] / (k * np.take_along_axis(counts, codes, axis=1))


def _penalty_mask(d_with_intercept: int) -> np.ndarray:
    mask = np.ones(d_with_intercept)
    mask[-1] = 0.0  # the intercept is not penalised
    return mask


def _newton(objective, gradient_step, start: np.ndarray, weight_sum: np.ndarray) -> np.ndarray:
    """Minimise every target's objective from ``start`` ``(t, p)``: Newton steps with
    Armijo backtracking, each target until its own gradient is small.

    ``gradient_step(params, rows)`` gives the gradient at ``params`` (the targets ``rows``)
    and a function that turns a gradient into the Newton step.
    """
    params = start.copy()
    value = objective(params, np.arange(len(params)))
    active = np.arange(len(params))
    for _ in range(MAX_NEWTON_STEPS):
        if not len(active):
            break
        gradient, newton_step = gradient_step(params[active], active)
        moving = np.max(np.abs(gradient), axis=1) / weight_sum[active] > GRADIENT_TOLERANCE
        if not moving.any():
            break
        active, gradient = active[moving], gradient[moving]
        step = newton_step(gradient, moving)
        slope = np.sum(gradient * step, axis=1)
        size = np.ones(len(active))
        pending = np.ones(len(active), dtype=bool)
        for _ in range(_HALVINGS):
            rows = active[pending]
            trial = params[rows] - size[pending, None] * step[pending]
            trial_value = objective(trial, rows)
            accepted = trial_value <= value[rows] - _ARMIJO * size[pending] * slope[pending]
            params[rows[accepted]], value[rows[accepted]] = trial[accepted], trial_value[accepted]
            pending[np.flatnonzero(pending)[accepted]] = False
            if not pending.any():
                break
            size[pending] /= 2
        # no step length decreased the objective: the target sits at float precision
        active = active[~pending]
    else:
        warnings.warn(f"{len(active)} of {len(params)} logistic regressions stopped after "
                      f"{MAX_NEWTON_STEPS} Newton steps above the gradient tolerance "
                      f"{GRADIENT_TOLERANCE}", ConvergenceWarning, stacklevel=3)
    return params


def _fit_binary(x: np.ndarray, codes: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Binomial model (class 1 positive) per target; ``(t, m)`` predicted codes 0/1.

    One coefficient vector: its Hessian is small enough to form and solve directly."""
    weights = _balanced_weights(codes, 2)
    y = codes.astype(np.float64)
    penalty = _penalty_mask(x.shape[1])

    def objective(beta, rows):
        raw = beta @ x.T
        loss = -(y[rows] * log_expit(raw) + (1 - y[rows]) * log_expit(-raw))
        return np.sum(weights[rows] * loss, axis=1) + 0.5 * np.sum(penalty * beta**2, axis=1)

    def gradient_step(beta, rows):
        p = expit(beta @ x.T)
        gradient = (weights[rows] * (p - y[rows])) @ x + penalty * beta
        curvature = weights[rows] * p * (1 - p)

        def newton_step(gradient, moving):
            hessian = np.einsum("tn,ni,nj->tij", curvature[moving], x, x, optimize=True)
            return np.linalg.solve(hessian + np.diag(penalty), gradient[..., None])[..., 0]

        return gradient, newton_step

    beta = _newton(objective, gradient_step, np.zeros((len(codes), x.shape[1])),
                   weights.sum(axis=1))
    return (beta @ x_test.T > 0).astype(int)


def _fit_multinomial(x: np.ndarray, codes: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Multinomial model per target (k classes); ``(t, m)`` predicted codes."""
    n_targets, k, d = len(codes), int(codes.max()) + 1, x.shape[1]
    weights = _balanced_weights(codes, k)
    onehot = np.eye(k)[codes]  # (t, n, k)
    penalty = np.tile(_penalty_mask(d), k)
    # Adding one constant to every class's intercept changes no probability, so the
    # Hessian is singular along that direction; the gradient has no component along it
    # (probabilities and one-hot rows both sum to 1), so adding its outer product makes
    # the system solvable without changing the step.
    shift = np.zeros(k * d)
    shift[d - 1::d] = 1 / np.sqrt(k)
    constant = np.outer(shift, shift) + np.diag(penalty)
    pairs = (x[:, :, None] * x[:, None, :]).reshape(len(x), d * d)
    upper = [(a, b) for a in range(k) for b in range(a, k)]

    def scores(params, at=x):
        """``(t, n, k)`` class scores, one matrix product for all targets."""
        flat = at @ params.reshape(len(params) * k, d).T
        return np.ascontiguousarray(flat.reshape(len(at), len(params), k).transpose(1, 0, 2))

    def objective(params, rows):
        raw = scores(params)
        loss = logsumexp(raw, axis=2) - np.sum(onehot[rows] * raw, axis=2)
        return np.sum(weights[rows] * loss, axis=1) + 0.5 * np.sum(penalty * params**2, axis=1)

    def gradient_step(params, rows):
        p = softmax(scores(params), axis=2)  # (t, n, k)
        residual = weights[rows, :, None] * (p - onehot[rows])
        gradient = (residual.transpose(0, 2, 1).reshape(-1, len(x)) @ x).reshape(len(rows), -1)

        def newton_step(gradient, moving):
            # block (a, b) of the Hessian = x' diag(w (p_a [a = b] - p_a p_b)) x; the
            # blocks below the diagonal are the transposes of those above it
            weighted = (weights[rows[moving]][:, None, :]
                        * p[moving].transpose(0, 2, 1))  # (t, k, n): w p_a
            probability = p[moving].transpose(0, 2, 1)
            hessian = np.empty((len(gradient), k, d, k, d))
            for a, b in upper:
                curvature = -weighted[:, a] * probability[:, b]
                if a == b:
                    curvature += weighted[:, a]
                block = (curvature @ pairs).reshape(-1, d, d)
                hessian[:, a, :, b, :] = block
                hessian[:, b, :, a, :] = block.transpose(0, 2, 1)
            system = hessian.reshape(len(gradient), k * d, k * d) + constant
            return np.linalg.solve(system, gradient[..., None])[..., 0]

        return gradient + penalty * params, newton_step

    params = _newton(objective, gradient_step, np.zeros((n_targets, k * d)),
                     weights.sum(axis=1))
    return np.argmax(scores(params, x_test), axis=2)
