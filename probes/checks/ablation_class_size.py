"""``ablation.class_size``: does COVID recall move when only the *other* classes grow?

Retrains with the classes other than the target class (``probes.target_class``, COVID by
default) at several sizes (the target class fixed, several seeds) and fits a binomial GLM
of the target class's correctness on the class size (``probes.ablation``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.train import VariantRequest
from probes.ablation import MIN_PER_CLASS, glm_change, plan_fraction, planned_sizes, training_rows
from probes.base import CheckResult, CheckSpec, Gate, ProbeContext, class_word, signed


def _explanation(word: str) -> str:
    """The check's explanation, naming the target class as ``word``."""
    return (
        f"Only the classes other than {word} grew; the {word} images and the class weights "
        f"stayed the same. If {word} recall rises anyway (as in the paper: 83% -> 95% for "
        f"COVID), the model finds {word} by exclusion, learning what the other datasets "
        "look like, which is how a source shortcut behaves. A fall usually reflects the "
        "class prior.")


SPEC = CheckSpec(
    id="ablation.class_size",
    title="COVID recall depends on the size of the other classes",
    question="Does COVID-19 accuracy depend on how many non-COVID images were used?",
    metric="change in COVID recall from the smallest to the largest non-COVID class size",
    default=Gate(level="warn", threshold=0.1),
    order=80,
    p_value="analytic",
    needs=("retraining",),
    explanation=_explanation("COVID"),
    next_steps=(
        "Take COVID and non-COVID images from the same sources, so that 'not like the "
        "other datasets' stops predicting COVID, and re-run. An external model cannot be "
        "retrained: audit its training recipe instead."),
    follows_target_class=True,
)


@dataclass(frozen=True)
class SizeRun:
    """One retrained model: its seed, training rows per class and target-class test
    correctness."""

    seed: int
    per_class: dict[str, int]
    correct: np.ndarray  # (n target-class test images,) bool
    fraction: float  # the plan's size as a fraction of the largest plan's


def run(context: ProbeContext) -> CheckResult:
    """Predicted target-class recall change, smallest -> largest other classes."""
    if context.train_variants is None:
        return SPEC.not_run("needs retraining, which an external model does not allow")
    target = context.params.target_class
    labels = context.dataset.label_names
    fit_labels = labels[context.splits.fit]
    present = set(labels)  # a class the data has no image of is not grown
    available = {name: int((fit_labels == name).sum())
                 for name in context.dataset.classes if name != target and name in present}
    test = np.asarray(context.splits.test)
    target_test = test[labels[test] == target]
    if not available or min(available.values()) < MIN_PER_CLASS or not len(target_test):
        word = class_word(target)
        return SPEC.not_run(
            f"needs another class than {word} (probes.target_class) with >= {MIN_PER_CLASS} "
            f"training rows each and a {word} test image; found {available} and "
            f"{len(target_test)} {word} test images")
    plans, notes = planned_sizes(available, context.params.ablation_sizes)
    runs = _train_and_score(context, plans, target_test)
    return _result(target, plans, runs, target_test, notes)


def _train_and_score(context: ProbeContext, plans: list[dict],
                     target_test: np.ndarray) -> list[SizeRun]:
    target = context.params.target_class
    index = context.dataset.classes.index(target)
    planned, requests = [], []
    for seed in context.params.ablation_seeds:
        for plan, rows in zip(plans, training_rows(context, plans, seed), strict=True):
            planned.append((seed, plan))
            requests.append(VariantRequest(rows, context.splits.val, target_test, "raw", seed))
    probas = context.train_variants(requests)  # all at once: the runner may parallelise
    return [SizeRun(seed, plan, proba.argmax(1) == index, plan_fraction(plan, plans))
            for (seed, plan), proba in zip(planned, probas, strict=True)]


def _result(target: str, plans: list[dict], runs: list[SizeRun], target_test: np.ndarray,
            notes: list[str]) -> CheckResult:
    word = class_word(target)
    x = np.concatenate([np.full(len(target_test), r.fraction) for r in runs])
    correct = np.concatenate([r.correct for r in runs])
    image = np.tile(np.arange(len(target_test)), len(runs))
    change, ci, p_value, fit_notes = glm_change(x, correct, image)
    notes = notes + fit_notes
    table = [{"seed": r.seed, **{f"n_{k}": v for k, v in r.per_class.items()},
              f"{target}_recall": float(r.correct.mean())} for r in runs]
    seeds = sorted({r.seed for r in runs})
    sizes = [sum(plan.values()) for plan in plans]
    figure = {"kind": "lines", "title": f"{word} recall vs size of the other classes",
              "x": sizes, "series": {f"seed {s}": [float(r.correct.mean()) for r in runs
                                                  if r.seed == s] for s in seeds},
              "xlabel": f"training images of the classes other than {word}",
              "ylabel": f"{word} recall"}
    summary = (f"Growing the classes other than {word} from {sizes[0]} to {sizes[-1]} "
               f"training images ({word} fixed, {len(seeds)} seeds, {len(target_test)} "
               f"{word} test images) changes predicted {word} recall by {signed(change)} (95% CI "
               f"{signed(ci[0])} to {signed(ci[1])}, GLM slope p = {p_value:.3g}).")
    return SPEC.result(
        metric_name=f"{word} recall change, smallest to largest other classes",
        metric=change, ci=ci, p_value=p_value, summary=summary, explanation=_explanation(word),
        details={"target_class": target, "sizes_per_class": plans, "seeds": seeds,
                 f"n_{target}_test": len(target_test)},
        tables={"runs": table}, figures={f"{target}_recall_vs_size": figure}, notes=notes,
    )
