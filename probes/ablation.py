"""``ablation.class_size``: does COVID recall move when only the *other* classes grow?

The paper saw COVID accuracy rise from 83% to 95% when only the non-COVID classes grew
(1000 -> 2000 images each). COVID evidence did not change, so a model whose COVID calls
rest on the disease should not change either. With balanced class weights, growing the
other classes leaves the class prior alone; a rise then means the model separates COVID
*by exclusion*: it learns what the other sources look like, and "not like them" becomes
COVID. This probe retrains with the non-COVID classes at several sizes (COVID fixed, several
seeds, each smaller training set nested in the larger one) and fits a binomial GLM of COVID
correctness on the class size, with standard errors clustered by test image (every model
sees the same test images).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

from models.train import VariantRequest
from probes.base import CheckResult, ProbeContext

TARGET_CLASS = "covid"
MIN_PER_CLASS = 2


def planned_sizes(available: dict[str, int], sizes: list[int]) -> tuple[list[dict], list[str]]:
    """Per-class training sizes for each requested size, scaled to the data.

    When every non-COVID class has at least ``max(sizes)`` rows the sizes are used as given;
    otherwise each size becomes the same fraction of every class's available rows (the
    largest size -> all of them).

    Returns:
        One ``{class: n}`` dict per size (ascending) and notes describing any scaling.
    """
    sizes = sorted(set(sizes))
    largest = sizes[-1]
    if min(available.values()) >= largest:
        return [dict.fromkeys(available, size) for size in sizes], []
    plans = [{name: max(MIN_PER_CLASS, round(size / largest * count))
              for name, count in available.items()} for size in sizes]
    note = (f"The data has fewer non-COVID training rows ({available}) than the largest "
            f"requested size ({largest} per class); sizes {sizes} were mapped to fractions "
            f"{[round(s / largest, 3) for s in sizes]} of what each class has.")
    return plans, [note]


def _training_rows(context: ProbeContext, plans: list[dict], seed: int) -> list[np.ndarray]:
    """Nested training sets for one seed: COVID rows fixed, others a growing prefix."""
    fit = np.asarray(context.splits.fit)
    names = context.dataset.manifest["label"].astype(str).to_numpy()[fit]
    rng = np.random.default_rng(seed)
    shuffled = {name: rng.permutation(fit[names == name]) for name in plans[0]}
    covid = fit[names == TARGET_CLASS]
    return [np.sort(np.concatenate([covid] + [shuffled[name][:n] for name, n in plan.items()]))
            for plan in plans]


def _glm_change(x: np.ndarray, correct: np.ndarray, image: np.ndarray):
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        fit = sm.GLM(correct.astype(float), sm.add_constant(x),
                     family=sm.families.Binomial()).fit(**covariance)
    ends = np.array([[1.0, x.min()], [1.0, x.max()]])
    prob = 1 / (1 + np.exp(-ends @ fit.params))
    gradient = (prob * (1 - prob))[:, None] * ends
    slope_of_change = gradient[1] - gradient[0]
    variance = float(slope_of_change @ fit.cov_params() @ slope_of_change)
    notes = ["Every COVID test image was judged the same way by every model, so the "
             "image-clustered variance is degenerate; the CI and p-value use the GLM's "
             "model-based covariance instead."] if judged_alike else []
    se = float(np.sqrt(max(variance, 0.0)))
    change = float(prob[1] - prob[0])
    return change, (change - 1.96 * se, change + 1.96 * se), float(fit.pvalues[1]), notes


def _plan_fraction(plan: dict, plans: list[dict]) -> float:
    """A plan's total size as a fraction of the largest plan's: the GLM's covariate."""
    return sum(plan.values()) / sum(plans[-1].values())


class ClassSizeProbe:
    """``ablation.class_size``: predicted COVID recall change, smallest -> largest other classes."""

    check_id = "ablation.class_size"
    title = "COVID recall depends on the size of the other classes"

    def run(self, context: ProbeContext) -> CheckResult:
        if context.train_variants is None:
            return CheckResult.not_run(self.check_id, self.title,
                                       "needs retraining, which an external model does not allow")
        labels = context.dataset.manifest["label"].astype(str)
        fit_labels = labels.iloc[context.splits.fit]
        available = {name: int((fit_labels == name).sum())
                     for name in context.dataset.classes if name != TARGET_CLASS}
        test = np.asarray(context.splits.test)
        covid_test = test[labels.iloc[test].to_numpy() == TARGET_CLASS]
        if min(available.values()) < MIN_PER_CLASS or not len(covid_test):
            return CheckResult.not_run(
                self.check_id, self.title,
                f"needs >= {MIN_PER_CLASS} training rows per non-COVID class and a COVID test "
                f"image; found {available} and {len(covid_test)} COVID test images")
        plans, notes = planned_sizes(available, context.params.ablation_sizes)
        runs = self._train_and_score(context, plans, covid_test)
        return self._result(context, plans, runs, covid_test, notes)

    def _train_and_score(self, context, plans, covid_test) -> list[dict]:
        covid = context.dataset.classes.index(TARGET_CLASS)
        runs, requests = [], []
        for seed in context.params.ablation_seeds:
            for plan, rows in zip(plans, _training_rows(context, plans, seed), strict=True):
                requests.append(VariantRequest(rows, context.splits.val, "raw", seed))
                runs.append({"seed": seed, "per_class": plan,
                             "fraction": _plan_fraction(plan, plans)})
        for run, model in zip(runs, context.train_variants(requests), strict=True):
            run["correct"] = model.predict_proba(context.dataset, covid_test).argmax(1) == covid
        return runs

    def _result(self, context, plans, runs, covid_test, notes) -> CheckResult:
        x = np.concatenate([np.full(len(covid_test), r["fraction"]) for r in runs])
        correct = np.concatenate([r["correct"] for r in runs])
        image = np.tile(np.arange(len(covid_test)), len(runs))
        change, ci, p_value, fit_notes = _glm_change(x, correct, image)
        notes = notes + fit_notes
        table = [{"seed": r["seed"], **{f"n_{k}": v for k, v in r["per_class"].items()},
                  "covid_recall": float(r["correct"].mean())} for r in runs]
        seeds = sorted({r["seed"] for r in runs})
        sizes = [sum(plan.values()) for plan in plans]
        figure = {"kind": "lines", "title": "COVID recall vs size of the other classes",
                  "x": sizes, "series": {f"seed {s}": [float(r["correct"].mean()) for r in runs
                                                      if r["seed"] == s] for s in seeds},
                  "xlabel": "non-COVID training images", "ylabel": "COVID recall"}
        summary = (f"Growing the other classes from {sizes[0]} to {sizes[-1]} training images "
                   f"(COVID fixed, {len(seeds)} seeds, {len(covid_test)} COVID test images) "
                   f"changes predicted COVID recall by {change:+.2f} (95% CI {ci[0]:+.2f} to "
                   f"{ci[1]:+.2f}, GLM slope p = {p_value:.3g}).")
        return CheckResult(
            check_id=self.check_id, title=self.title,
            metric_name="COVID recall change, smallest to largest other classes",
            metric=change, ci=ci, p_value=p_value, summary=summary,
            explanation=(
                "Only the non-COVID classes grew; the COVID images and the class weights stayed "
                "the same. If COVID recall rises anyway (as in the paper: 83% -> 95%), the model "
                "finds COVID by exclusion, learning what the other datasets look like, which "
                "is how a source shortcut behaves. A fall usually reflects the class prior."),
            details={"sizes_per_class": plans, "seeds": seeds, "n_covid_test": len(covid_test)},
            tables={"runs": table}, figures={"covid_recall_vs_size": figure}, notes=notes,
        )

