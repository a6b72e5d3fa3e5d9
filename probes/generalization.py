"""``generalization.leave_one_source_out``: how much accuracy is lost on an unseen source?

For each source, a model is trained without it and tested twice: on the internal test rows
of the remaining sources and on every image of the held-out source. A model that learned
the disease loses little; one that learned the sources (DeGrave et al. 2021: AUROC ~0.99
internal vs ~0.70 external) loses a lot. Both test sets are restricted to the labels the
held-out source shares with the training data, so the comparison is like for like.
"""

from __future__ import annotations

import numpy as np

from models.train import VariantRequest
from probes.base import CheckResult, ProbeContext
from probes.stats import (
    bootstrap_ci,
    permutation_p_value,
    permute_within_groups,
    two_proportion_test,
)

MIN_SHARED_LABELS = 2


def _gap(correct: np.ndarray, external: np.ndarray, source: np.ndarray) -> float:
    """Mean over held-out sources of internal minus external accuracy."""
    gaps = [correct[(source == s) & ~external].mean() - correct[(source == s) & external].mean()
            for s in np.unique(source)]
    return float(np.mean(gaps))


def _plan(context: ProbeContext, held_out: str) -> dict:
    """Rows for one held-out source, or the reason it cannot be estimated."""
    data, splits = context.dataset, context.splits
    labels, sources = data.manifest["label"].astype(str).to_numpy(), data.sources
    remaining = sources != held_out
    fit = splits.fit[remaining[splits.fit]]
    shared = sorted(set(labels[~remaining]) & set(labels[fit]))
    plan = {"source": held_out, "labels": sorted(set(labels[~remaining])), "shared": shared,
            "fit": fit, "val": splits.val[remaining[splits.val]]}
    in_shared = np.isin(labels, shared)
    plan["internal"] = splits.test[remaining[splits.test] & in_shared[splits.test]]
    plan["external"] = np.flatnonzero(~remaining & in_shared)
    plan["excluded"] = int(np.sum(~remaining & ~in_shared))
    if len(shared) < MIN_SHARED_LABELS:
        plan["reason"] = (f"holds labels {plan['labels']}, of which {shared or 'none'} also "
                          f"occur in the remaining training data; needs >= {MIN_SHARED_LABELS}")
    elif not len(plan["internal"]):
        plan["reason"] = "no internal test rows with the shared labels"
    else:
        plan["reason"] = ""
    return plan


class LeaveOneSourceOutProbe:
    """``generalization.leave_one_source_out``: mean internal minus external accuracy."""

    check_id = "generalization.leave_one_source_out"
    title = "Accuracy lost on a source never seen in training"

    def run(self, context: ProbeContext) -> CheckResult:
        if context.train_variants is None:
            return CheckResult.not_run(self.check_id, self.title,
                                       "needs retraining, which an external model does not allow")
        plans = [_plan(context, s) for s in np.unique(context.dataset.sources)]
        usable = [p for p in plans if not p["reason"]]
        if not usable:
            reasons = "; ".join(f"{p['source']}: {p['reason']}" for p in plans)
            return CheckResult.not_run(self.check_id, self.title,
                                       f"no source can be held out ({reasons})")
        truth = context.dataset.labels
        models = context.train_variants([VariantRequest(plan["fit"], plan["val"], "raw",
                                                        context.params.seed)
                                         for plan in usable])
        for plan, model in zip(usable, models, strict=True):
            for side in ("internal", "external"):
                rows = plan[side]
                plan[f"correct_{side}"] = (model.predict_proba(context.dataset, rows).argmax(1)
                                           == truth[rows])
        return self._result(context, plans, usable)

    def _result(self, context, plans, usable) -> CheckResult:
        correct = np.concatenate([np.r_[p["correct_internal"], p["correct_external"]]
                                  for p in usable])
        external = np.concatenate([np.r_[np.zeros(len(p["internal"]), bool),
                                         np.ones(len(p["external"]), bool)] for p in usable])
        source = np.concatenate([[p["source"]] * (len(p["internal"]) + len(p["external"]))
                                 for p in usable])
        rows = np.concatenate([np.r_[p["internal"], p["external"]] for p in usable])
        # a patient's images swap sides together (per held-out block), as under the null
        units = np.char.add(np.char.add(source.astype(str), "|"),
                            context.dataset.groups[rows].astype(str))
        params = context.params
        gap = _gap(correct, external, source)
        ci = bootstrap_ci(_gap, correct, external, source, n_bootstrap=params.n_bootstrap,
                          seed=params.seed,
                          strata=np.char.add(source.astype(str), external.astype(str)))
        rng = np.random.default_rng(params.seed)
        null = [_gap(correct, permute_within_groups(external, source, rng, units=units),
                     source)
                for _ in range(params.n_permutations)]
        p_value = permutation_p_value(gap, null)
        table = [_table_row(p) for p in plans]
        summary = (f"Held out one source at a time ({len(usable)} of {len(plans)} estimable): "
                   f"accuracy falls by {gap:+.2f} on average from internal to external test "
                   f"images (95% CI {ci[0]:+.2f} to {ci[1]:+.2f}, permutation p = {p_value:.3g}).")
        return CheckResult(
            check_id=self.check_id, title=self.title,
            metric_name="mean accuracy drop, internal minus held-out source",
            metric=gap, ci=ci, p_value=p_value, summary=summary,
            explanation=(
                "A model that recognises disease should work about as well on a hospital it "
                "never saw. A large drop on unseen sources means its internal accuracy leaned "
                "on features of the training sources (DeGrave et al. 2021 saw AUROC fall from "
                "0.99 internal to about 0.70 external)."),
            tables={"by_held_out_source": table},
            figures={"accuracy_by_held_out_source": _figure(usable)},
            notes=[f"Source {p['source']!r} not estimable: {p['reason']}." for p in plans
                   if p["reason"]] + [f"Source {p['source']!r}: {p['excluded']} images with "
                                      "labels absent from the remaining training data left out."
                                      for p in usable if p["excluded"]],
        )


def _table_row(plan: dict) -> dict:
    row = {"held_out": plan["source"], "labels": ", ".join(plan["labels"]),
           "shared_labels": ", ".join(plan["shared"]), "reason": plan["reason"]}
    if plan["reason"]:
        return row
    internal, external = plan["correct_internal"], plan["correct_external"]
    return {**row, "n_internal": len(internal), "n_external": len(external),
            "accuracy_internal": float(internal.mean()),
            "accuracy_external": float(external.mean()),
            "drop": float(internal.mean() - external.mean()),
            "p_value": two_proportion_test(int(internal.sum()), len(internal),
                                           int(external.sum()), len(external))}


def _figure(usable: list[dict]) -> dict:
    labels, values = [], []
    for plan in usable:
        for side in ("internal", "external"):
            labels.append(f"{plan['source']} {side}")
            values.append(float(plan[f"correct_{side}"].mean()))
    return {"kind": "bars", "title": "Accuracy: internal test vs held-out source",
            "labels": labels, "values": values, "reference": None, "ylabel": "accuracy"}
