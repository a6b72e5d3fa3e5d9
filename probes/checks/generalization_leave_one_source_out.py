"""``generalization.leave_one_source_out``: how much accuracy is lost on an unseen source?

Trains one model per source without it (``probes.generalization`` plans the rows) and
compares its accuracy on the remaining sources' test rows with that on the held-out source.
"""

from __future__ import annotations

import numpy as np

from models.train import VariantRequest
from probes.base import CheckResult, CheckSpec, Gate, ProbeContext, signed
from probes.generalization import HeldOutPlan, HeldOutScore, accuracy_gap, held_out_plan
from probes.stats import (
    bootstrap_ci,
    permutation_p_floor,
    permutation_p_value,
    permute_within_groups,
    two_proportion_test,
)

SPEC = CheckSpec(
    id="generalization.leave_one_source_out",
    title="Accuracy lost on a source never seen in training",
    question="Does the model still work on a source it never saw in training?",
    metric="internal test accuracy minus accuracy on a source held out of training",
    default=Gate(level="fail", threshold=0.1),
    order=90,
    p_value="permutation",
    needs=("retraining", "two_sources"),
    explanation=(
        "A model that recognises disease should work about as well on a hospital it "
        "never saw. A large drop on unseen sources means its internal accuracy leaned "
        "on features of the training sources (DeGrave et al. 2021 saw AUROC fall from "
        "0.99 internal to about 0.70 external)."),
    next_steps=(
        "Do not trust the internal test score for new hospitals: train on more sources, "
        "remove source traits (site.image says which inputs carry them) and report "
        "external accuracy. It cannot run unless a source shares at least two labels with "
        "the others, nor for an external model, which cannot be retrained."),
)


def run(context: ProbeContext) -> CheckResult:
    """Mean internal minus external accuracy over the sources that can be held out."""
    if context.train_variants is None:
        return SPEC.not_run("needs retraining, which an external model does not allow")
    plans = [held_out_plan(context, s) for s in np.unique(context.dataset.sources)]
    usable = [p for p in plans if not p.reason]
    if not usable:
        reasons = "; ".join(f"{p.source}: {p.reason}" for p in plans)
        return SPEC.not_run(f"no source can be held out ({reasons})")
    tested = [np.r_[plan.internal, plan.external] for plan in usable]  # one scoring per model
    probas = context.train_variants([VariantRequest(plan.fit, plan.val, rows, "raw",
                                                    context.params.seed)
                                     for plan, rows in zip(usable, tested, strict=True)])
    scores = []
    for plan, rows, proba in zip(usable, tested, probas, strict=True):
        correct = proba.argmax(1) == context.dataset.labels[rows]
        n_internal = len(plan.internal)
        scores.append(HeldOutScore(plan, correct[:n_internal], correct[n_internal:]))
    return _result(context, plans, scores)


def _result(context: ProbeContext, plans: list[HeldOutPlan],
            scores: list[HeldOutScore]) -> CheckResult:
    correct = np.concatenate([np.r_[s.correct_internal, s.correct_external] for s in scores])
    external = np.concatenate([np.r_[np.zeros(len(s.plan.internal), bool),
                                     np.ones(len(s.plan.external), bool)] for s in scores])
    source = np.concatenate([[s.plan.source] * (len(s.plan.internal) + len(s.plan.external))
                             for s in scores])
    rows = np.concatenate([np.r_[s.plan.internal, s.plan.external] for s in scores])
    # a patient's images swap sides together (per held-out block), as under the null
    units = np.char.add(np.char.add(source.astype(str), "|"),
                        context.dataset.groups[rows].astype(str))
    params = context.params
    gap = accuracy_gap(correct, external, source)
    ci = bootstrap_ci(accuracy_gap, correct, external, source, n_bootstrap=params.n_bootstrap,
                      seed=params.seed,
                      strata=np.char.add(source.astype(str), external.astype(str)))
    rng = np.random.default_rng(params.seed)
    null = [accuracy_gap(correct, permute_within_groups(external, source, rng, units=units),
                         source)
            for _ in range(params.n_permutations)]
    p_value = permutation_p_value(gap, null)
    scored = {s.plan.source: s for s in scores}
    table = [_table_row(p, scored.get(p.source)) for p in plans]
    summary = (f"Held out one source at a time ({len(scores)} of {len(plans)} estimable): "
               f"accuracy falls by {signed(gap)} on average from internal to external test "
               f"images (95% CI {signed(ci[0])} to {signed(ci[1])}, permutation p = "
               f"{p_value:.3g}).")
    return SPEC.result(
        metric_name="mean accuracy drop, internal minus held-out source",
        metric=gap, ci=ci, p_value=p_value, p_floor=permutation_p_floor(params.n_permutations),
        summary=summary,
        tables={"by_held_out_source": table},
        figures={"accuracy_by_held_out_source": _figure(scores)},
        notes=[f"Source {p.source!r} not estimable: {p.reason}." for p in plans
               if p.reason] + [f"Source {s.plan.source!r}: {s.plan.excluded} images with "
                               "labels absent from the remaining training data left out."
                               for s in scores if s.plan.excluded],
    )


def _table_row(plan: HeldOutPlan, score: HeldOutScore | None) -> dict:
    row = {"held_out": plan.source, "labels": ", ".join(plan.labels),
           "shared_labels": ", ".join(plan.shared), "reason": plan.reason}
    if score is None:
        return row
    internal, external = score.correct_internal, score.correct_external
    return {**row, "n_internal": len(internal), "n_external": len(external),
            "chance": 1 / len(plan.shared),
            "accuracy_internal": float(internal.mean()),
            "accuracy_external": float(external.mean()),
            "drop": float(internal.mean() - external.mean()),
            "p_value": two_proportion_test(int(internal.sum()), len(internal),
                                           int(external.sum()), len(external))}


def _figure(scores: list[HeldOutScore]) -> dict:
    """Internal and held-out accuracy per source, with chance (guessing one of the shared
    labels at random) as the reference line when every held-out source shares as many
    labels; the bars are accuracies, not the metric (a drop), so no threshold line."""
    labels, values = [], []
    for score in scores:
        for side, correct in (("internal", score.correct_internal),
                              ("external", score.correct_external)):
            labels.append(f"{score.plan.source} {side}")
            values.append(float(correct.mean()))
    shared = {len(score.plan.shared) for score in scores}
    chance = 1 / next(iter(shared)) if len(shared) == 1 else None
    title = "Accuracy: internal test vs held-out source"
    if chance is None:  # one chance level per source: the table's chance column
        title += " (chance differs per source: see the table)"
    return {"kind": "bars", "title": title, "labels": labels, "values": values,
            "reference": chance,
            "reference_label": "chance (a random shared label)", "metric_scale": False,
            "ylabel": "accuracy"}
