"""The class-size ablation's engine: nested training plans and the GLM of recall on size.

``ablation.class_size`` (``probes.checks.ablation_class_size``) asks: does COVID recall move
when only the *other* classes grow? COVID is the paper's case; the check follows whichever
class ``probes.target_class`` names, and "non-COVID" below means the classes other than it.

The paper saw COVID accuracy rise from 83% to 95% when only the non-COVID classes grew
(1000 -> 2000 images each). COVID evidence did not change, so a model whose COVID calls
rest on the disease should not change either. With balanced class weights, growing the
other classes leaves the class prior alone; a rise then means the model separates COVID
*by exclusion*: it learns what the other sources look like, and "not like them" becomes
COVID. The check retrains with the non-COVID classes at several sizes (COVID fixed, several
seeds, each smaller training set nested in the larger one) and fits a binomial GLM of COVID
correctness on the class size, with standard errors clustered by test image (every model
sees the same test images).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from probes.base import ProbeContext

MIN_PER_CLASS = 2


def planned_sizes(available: dict[str, int], sizes: list[int]) -> tuple[list[dict], list[str]]:
    """Per-class training sizes for each requested size, scaled to the data.

    When every class in ``available`` (the classes other than the target class) has at
    least ``max(sizes)`` rows the sizes are used as given; otherwise each size becomes the
    same fraction of every class's available rows (the largest size -> all of them).

    Returns:
        One ``{class: n}`` dict per size (ascending) and notes describing any scaling.
    """
    sizes = sorted(set(sizes))
    largest = sizes[-1]
    if min(available.values()) >= largest:
        return [dict.fromkeys(available, size) for size in sizes], []
    plans = [{name: max(MIN_PER_CLASS, round(size / largest * count))
              for name, count in available.items()} for size in sizes]
    note = (f"The data has fewer training rows in the grown classes ({available}) than the "
            f"largest requested size ({largest} per class); sizes {sizes} were mapped to fractions "
            f"{[round(s / largest, 3) for s in sizes]} of what each class has.")
    return plans, [note]


def training_rows(context: ProbeContext, plans: list[dict], seed: int) -> list[np.ndarray]:
    """Nested training sets for one seed: the target class's rows (``probes.target_class``)
    fixed, the planned classes' a growing prefix."""
    fit = np.asarray(context.splits.fit)
    names = context.dataset.label_names[fit]
    rng = np.random.default_rng(seed)
    shuffled = {name: rng.permutation(fit[names == name]) for name in plans[0]}
    fixed = fit[names == context.params.target_class]
    return [np.sort(np.concatenate([fixed] + [shuffled[name][:n] for name, n in plan.items()]))
            for plan in plans]


def glm_change(x: np.ndarray, correct: np.ndarray, image: np.ndarray):
    """Binomial GLM of correctness on ``x``; predicted change from min(x) to max(x).

    Returns ``(change, (low, high), p_value, notes)``; the CI is the delta method on the
    fitted coefficients with image-clustered covariance. When every test image is judged
    the same way by every model, the clustered variance collapses to zero (or rounds below
    it) and says nothing; the model-based covariance is used instead, and a note says so.
    """
    if correct.all() or not correct.any():
        return 0.0, (0.0, 0.0), 1.0, []  # nothing varies: the fit is undefined, the change is 0
    # Known before fitting: when no image's correctness varies across the models, the
    # clustered variance is degenerate, so fit once with the model-based covariance.
    judged_alike = pd.Series(correct).groupby(image).nunique().eq(1).all()
    covariance = {} if judged_alike else {"cov_type": "cluster", "cov_kwds": {"groups": image}}
    # Imported here: the check registry imports every check module, and statsmodels.api
    # takes half a second that a rerun whose checks are cached need not pay.
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        fit = sm.GLM(correct.astype(float), sm.add_constant(x),
                     family=sm.families.Binomial()).fit(**covariance)
    ends = np.array([[1.0, x.min()], [1.0, x.max()]])
    prob = 1 / (1 + np.exp(-ends @ fit.params))
    gradient = (prob * (1 - prob))[:, None] * ends
    slope_of_change = gradient[1] - gradient[0]
    variance = float(slope_of_change @ fit.cov_params() @ slope_of_change)
    notes = ["Every test image was judged the same way by every model, so the "
             "image-clustered variance is degenerate; the CI and p-value use the GLM's "
             "model-based covariance instead."] if judged_alike else []
    se = float(np.sqrt(max(variance, 0.0)))
    change = float(prob[1] - prob[0])
    return change, (change - 1.96 * se, change + 1.96 * se), float(fit.pvalues[1]), notes


def plan_fraction(plan: dict, plans: list[dict]) -> float:
    """A plan's total size as a fraction of the largest plan's: the GLM's covariate."""
    return sum(plan.values()) / sum(plans[-1].values())
