"""``site.embedding``: does the audited classifier's embedding encode the source within a class?

The linear probe of ``probes.linear_probe`` predicts the source from the audited model's
penultimate embedding inside each class, with sources permuted only within a class, so
label-source confounding alone cannot make it fire.
"""

from __future__ import annotations

import numpy as np

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext
from probes.linear_probe import format_skill, reduce_features, within_label_skill
from probes.stats import permutation_p_floor

SPEC = CheckSpec(
    id="site.embedding",
    title="Audited model's embedding encodes the source",
    question="Do the model's internal features encode the image source?",
    metric="source predicted from the audited model's embedding within each class "
           "(rescaled balanced accuracy)",
    default=Gate(level="warn", threshold=0.2),
    order=40,
    p_value="permutation",
    needs=("two_sources",),
    explanation=(
        "The classifier's internal representation keeps track of which "
        "hospital or dataset an image came from, beyond what the diagnosis "
        "explains. A representation that separates sources lets the final "
        "layer use the source as a proxy for the label."),
    next_steps=(
        "Read it with site.image and attention.*: a warning here says the model could use "
        "the source, the others say whether it does. It cannot run unless some class holds "
        "images from at least two sources."),
)


def run(context: ProbeContext) -> CheckResult:
    """Within-class source skill of the audited model's embedding."""
    if context.audited not in context.models:
        return SPEC.not_run(f"no audited model {context.audited!r} is loaded")
    dataset, params = context.dataset, context.params
    rows = np.arange(len(dataset))
    x = reduce_features(context.models[context.audited].embed(dataset, rows), params.seed)
    skill, per_label = within_label_skill(
        x, dataset.sources, dataset.label_names, dataset.groups,
        n_permutations=params.n_permutations, n_bootstrap=params.n_bootstrap, seed=params.seed)
    if not skill.estimable:
        return SPEC.not_run(f"source skill within a class not estimable: {skill.reason}")
    summary = (f"Within a class, the audited model's embedding tells {skill.n_classes} "
               f"sources apart at skill {format_skill(skill)}, p = {skill.p_value:.3g} (sources "
               "permuted within class).")
    return SPEC.result(
        metric_name="source skill within class from the embedding (0 = chance)",
        metric=skill.skill, ci=skill.ci, p_value=skill.p_value,
        p_floor=permutation_p_floor(params.n_permutations), summary=summary,
        details={"n_rows": skill.n, "rows_used": "all rows (train and test)"},
        tables={"source_within_class": per_label},
        figures={"source_skill_within_class": _within_figure(per_label)},
        notes=[f"Label {e['label']!r}: {e['reason']}" for e in per_label if e["reason"]],
    )


def _within_figure(per_label: list[dict]) -> dict:
    shown = [e for e in per_label if not e["reason"]]
    return {"kind": "bars", "title": "Source skill within each class (0 = chance)",
            "labels": [e["label"] for e in shown], "values": [e["skill"] for e in shown],
            "ci_low": [e["ci_low"] for e in shown], "ci_high": [e["ci_high"] for e in shown],
            "reference": 0.0, "ylabel": "source skill"}
