"""``generalization.external``: does the audited model keep its accuracy on external sources?

The audited model predicts the images of the ``data.external`` manifests (sources that did
not train it, read and decoded as the main manifest is) and its accuracy there is set
against its accuracy on the internal test rows, on the labels both hold, per external
source and pooled. It needs no retraining, so it is the generalization evidence for a
model someone else trained, where ``generalization.leave_one_source_out`` cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext
from probes.stats import two_proportion_ztest, wilson_ci

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

SPEC = CheckSpec(
    id="generalization.external",
    title="Accuracy lost on external sources",
    question="Does the model keep its accuracy on images from sources that did not train it?",
    metric="internal test accuracy minus accuracy on the external sources (data.external), "
           "on the labels they share",
    default=Gate(level="warn", threshold=0.1, required=False),
    order=68,
    p_value="analytic",
    needs=("external_data",),
    explanation=(
        "Internal test images come from the hospitals that trained the model, so they "
        "share its shortcuts; images from other hospitals do not. A model that reads the "
        "disease keeps its accuracy there; one that reads the hospital loses it (DeGrave "
        "et al. 2021: AUROC about 0.99 internal, about 0.70 external). Accuracies are "
        "compared on the labels both sides hold; the p-value is a one-sided two-proportion "
        "z-test, which treats images as independent (several images of one patient "
        "count as several)."),
    next_steps=(
        "Do not quote the internal test score for new hospitals; report the external one. "
        "Look for what marks the training sources (site.image, the attention checks) and "
        "train on more sources. To run, list manifests of sources that did not train the "
        "model under data.external (or cxr-audit audit --external)."),
)


@dataclass(frozen=True)
class _Scored:
    """The audited model's right and wrong answers on the scored external rows."""

    correct: np.ndarray
    labels: np.ndarray  # class names
    sources: np.ndarray


def run(context: ProbeContext) -> CheckResult:
    """Pooled internal minus external accuracy, with a row per external source."""
    if not context.external:
        return SPEC.not_run("no external manifest is configured (data.external)")
    if context.audited not in context.models:
        return SPEC.not_run(f"no audited model {context.audited!r} is loaded")
    model = context.models[context.audited]
    data, test = context.dataset, context.splits.test
    internal_correct = model.predict_proba(data, test).argmax(1) == data.labels[test]
    internal_labels = data.label_names[test]
    known = sorted(set(internal_labels))
    external = [_score(model, dataset, known) for dataset in context.external]
    scored = _Scored(*(np.concatenate([getattr(part, name) for part in external])
                       for name in ("correct", "labels", "sources")))
    if not len(scored.correct):
        return SPEC.not_run(f"no external image has a label of the internal test rows "
                            f"({', '.join(known)})")
    table = [_source_row(source, scored, internal_correct, internal_labels)
             for source in np.unique(scored.sources)]
    shared = sorted(set(scored.labels))
    internal = internal_correct[np.isin(internal_labels, shared)]
    pooled = two_proportion_ztest(int(internal.sum()), len(internal), int(scored.correct.sum()),
                                  len(scored.correct))
    details = {
        "internal_accuracy": float(internal.mean()), "n_internal": len(internal),
        "internal_accuracy_ci": wilson_ci(int(internal.sum()), len(internal)),
        "external_accuracy": float(scored.correct.mean()), "n_external": len(scored.correct),
        "shared_labels": shared,
        "manifests": [{"key": f"data.external[{i}]", "n_images": len(dataset),
                       "n_quarantined": len(dataset.quarantined),
                       "sources": sorted(set(dataset.sources))}
                      for i, dataset in enumerate(context.external)],
    }
    summary = (f"Internal test accuracy {details['internal_accuracy']:.2f} ({len(internal)} "
               f"images) vs {details['external_accuracy']:.2f} on {len(scored.correct)} images "
               f"of {len(table)} external source(s), labels {', '.join(shared)}: a drop of "
               f"{pooled['difference']:+.2f} (95% CI {pooled['ci_low']:+.2f} to "
               f"{pooled['ci_high']:+.2f}; z-test p = {pooled['p_value']:.3g}).")
    return SPEC.result(
        metric_name="accuracy drop, internal minus external",
        metric=pooled["difference"], ci=(pooled["ci_low"], pooled["ci_high"]),
        p_value=pooled["p_value"], summary=summary, details=details,
        tables={"per_source": table},
        figures={"accuracy_external": _figure(details, table)},
        notes=_notes(context, known, external),
    )


def _score(model, dataset: Dataset, known: list[str]) -> _Scored:
    """The model on the rows of ``dataset`` whose label the internal test rows hold."""
    rows = np.flatnonzero(np.isin(dataset.label_names, known))
    correct = (model.predict_proba(dataset, rows).argmax(1) == dataset.labels[rows]
               if len(rows) else np.zeros(0, bool))
    return _Scored(correct, dataset.label_names[rows], dataset.sources[rows])


def _source_row(source: str, scored: _Scored, internal_correct: np.ndarray,
                internal_labels: np.ndarray) -> dict:
    own = scored.sources == source
    correct = scored.correct[own]
    internal = internal_correct[np.isin(internal_labels, np.unique(scored.labels[own]))]
    low, high = wilson_ci(int(correct.sum()), len(correct))
    test = two_proportion_ztest(int(internal.sum()), len(internal), int(correct.sum()),
                                len(correct))
    return {"source": str(source), "n": len(correct), "accuracy": float(correct.mean()),
            "accuracy_ci_low": low, "accuracy_ci_high": high,
            "internal_accuracy": float(internal.mean()), "p_value": test["p_value"],
            "labels": ", ".join(sorted(set(scored.labels[own])))}


def _notes(context: ProbeContext, known: list[str], external: list[_Scored]) -> list[str]:
    notes = []
    internal_sources = set(context.dataset.sources)
    for i, (dataset, scored) in enumerate(zip(context.external, external, strict=True)):
        left_out = len(dataset) - len(scored.correct)
        if left_out:
            notes.append(f"data.external[{i}]: {left_out} image(s) with labels the internal "
                         f"test rows lack (they hold {', '.join(known)}) left out.")
        if len(dataset.quarantined):
            notes.append(f"data.external[{i}]: {len(dataset.quarantined)} row(s) quarantined "
                         "(run `cxr-audit data validate` on it for the list).")
        overlap = sorted(internal_sources & set(dataset.sources))
        if overlap:
            notes.append(f"data.external[{i}]: source(s) {', '.join(overlap)} also occur in "
                         "the audited data, so they may not be external to the model.")
    return notes


def _figure(details: dict, table: list[dict]) -> dict:
    return {"kind": "bars", "title": "Accuracy: internal test vs each external source",
            "labels": ["internal test"] + [row["source"] for row in table],
            "values": [details["internal_accuracy"]] + [row["accuracy"] for row in table],
            "ci_low": [details["internal_accuracy_ci"][0]]
            + [row["accuracy_ci_low"] for row in table],
            "ci_high": [details["internal_accuracy_ci"][1]]
            + [row["accuracy_ci_high"] for row in table],
            "reference": None, "ylabel": "accuracy"}
