"""``ablation.class_size``: does COVID recall move when only the *other* classes grow?

Retrains with the non-COVID classes at several sizes (COVID fixed, several seeds) and fits
a binomial GLM of COVID correctness on the class size (``probes.ablation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.train import VariantRequest
from probes.ablation import MIN_PER_CLASS, glm_change, plan_fraction, planned_sizes, training_rows
from probes.base import TARGET_CLASS, CheckResult, CheckSpec, Gate, ProbeContext

SPEC = CheckSpec(
    id="ablation.class_size",
    title="COVID recall depends on the size of the other classes",
    question="Does COVID-19 accuracy depend on how many non-COVID images were used?",
    metric="change in COVID recall from the smallest to the largest non-COVID class size",
    default=Gate(level="warn", threshold=0.1),
    order=80,
    p_value="analytic",
    needs=("retraining",),
    explanation=(
        "Only the non-COVID classes grew; the COVID images and the class weights stayed "
        "the same. If COVID recall rises anyway (as in the paper: 83% -> 95%), the model "
        "finds COVID by exclusion, learning what the other datasets look like, which "
        "is how a source shortcut behaves. A fall usually reflects the class prior."),
    next_steps=(
        "Take COVID and non-COVID images from the same sources, so that 'not like the "
        "other datasets' stops predicting COVID, and re-run. An external model cannot be "
        "retrained: audit its training recipe instead."),
)


@dataclass(frozen=True)
class SizeRun:
    """One retrained model: its seed, training rows per class and COVID test correctness."""

    seed: int
    per_class: dict[str, int]
    correct: np.ndarray  # (n COVID test images,) bool
    fraction: float  # the plan's size as a fraction of the largest plan's


def run(context: ProbeContext) -> CheckResult:
    """Predicted COVID recall change, smallest -> largest other classes."""
    if context.train_variants is None:
        return SPEC.not_run("needs retraining, which an external model does not allow")
    labels = context.dataset.label_names
    fit_labels = labels[context.splits.fit]
    available = {name: int((fit_labels == name).sum())
                 for name in context.dataset.classes if name != TARGET_CLASS}
    test = np.asarray(context.splits.test)
    covid_test = test[labels[test] == TARGET_CLASS]
    if min(available.values()) < MIN_PER_CLASS or not len(covid_test):
        return SPEC.not_run(
            f"needs >= {MIN_PER_CLASS} training rows per non-COVID class and a COVID test "
            f"image; found {available} and {len(covid_test)} COVID test images")
    plans, notes = planned_sizes(available, context.params.ablation_sizes)
    runs = _train_and_score(context, plans, covid_test)
    return _result(plans, runs, covid_test, notes)


def _train_and_score(context: ProbeContext, plans: list[dict],
                     covid_test: np.ndarray) -> list[SizeRun]:
    covid = context.dataset.classes.index(TARGET_CLASS)
    planned, requests = [], []
    for seed in context.params.ablation_seeds:
        for plan, rows in zip(plans, training_rows(context, plans, seed), strict=True):
            planned.append((seed, plan))
            requests.append(VariantRequest(rows, context.splits.val, "raw", seed))
    models = context.train_variants(requests)  # all at once: the runner may parallelise
    return [SizeRun(seed, plan, model.predict_proba(context.dataset, covid_test).argmax(1) == covid,
                    plan_fraction(plan, plans))
            for (seed, plan), model in zip(planned, models, strict=True)]


def _result(plans: list[dict], runs: list[SizeRun], covid_test: np.ndarray,
            notes: list[str]) -> CheckResult:
    x = np.concatenate([np.full(len(covid_test), r.fraction) for r in runs])
    correct = np.concatenate([r.correct for r in runs])
    image = np.tile(np.arange(len(covid_test)), len(runs))
    change, ci, p_value, fit_notes = glm_change(x, correct, image)
    notes = notes + fit_notes
    table = [{"seed": r.seed, **{f"n_{k}": v for k, v in r.per_class.items()},
              "covid_recall": float(r.correct.mean())} for r in runs]
    seeds = sorted({r.seed for r in runs})
    sizes = [sum(plan.values()) for plan in plans]
    figure = {"kind": "lines", "title": "COVID recall vs size of the other classes",
              "x": sizes, "series": {f"seed {s}": [float(r.correct.mean()) for r in runs
                                                  if r.seed == s] for s in seeds},
              "xlabel": "non-COVID training images", "ylabel": "COVID recall"}
    summary = (f"Growing the other classes from {sizes[0]} to {sizes[-1]} training images "
               f"(COVID fixed, {len(seeds)} seeds, {len(covid_test)} COVID test images) "
               f"changes predicted COVID recall by {change:+.2f} (95% CI {ci[0]:+.2f} to "
               f"{ci[1]:+.2f}, GLM slope p = {p_value:.3g}).")
    return SPEC.result(
        metric_name="COVID recall change, smallest to largest other classes",
        metric=change, ci=ci, p_value=p_value, summary=summary,
        details={"sizes_per_class": plans, "seeds": seeds, "n_covid_test": len(covid_test)},
        tables={"runs": table}, figures={"covid_recall_vs_size": figure}, notes=notes,
    )
