"""``performance.within_source``: does the audited model tell the labels apart inside a source?

A model that reads the disease keeps its skill among the images of one hospital; a model
that reads the hospital has nothing left there, since every image of a source looks alike
to it. Per source with at least two labels (and ``probes.within_source_min_images`` test
images), the audited model's chance-rescaled balanced accuracy on that source's test rows
is compared with its skill on the same labels over the test rows of every source pooled,
where telling sources apart also pays. Beside it, the source-only baseline of Zech et al.
(2018): the training rows' commonest label of each image's source, which is what knowing
the hospital alone achieves.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext, class_word
from probes.stats import balanced_accuracy, bootstrap_ci, chance_rescaled_skill, wilson_ci

SPEC = CheckSpec(
    id="performance.within_source",
    title="Skill lost within a source",
    question="Does the model still tell the labels apart among the images of one source?",
    metric="1 - the audited model's skill within a source / its skill on the same labels "
           "pooled over sources (0 no loss, 1 all its skill tells sources apart)",
    default=Gate(level="warn", threshold=0.25, required=False),
    order=64,
    needs=("two_sources",),
    explanation=(
        "Skill is balanced accuracy rescaled so 0 is chance and 1 perfect. Pooled over "
        "sources, a model scores by telling the labels apart and, where labels and sources "
        "go together, by telling the sources apart; within one source only the first "
        "helps. A model that reads the disease loses little there; one whose skill is the "
        "hospital loses all of it (Zech et al. 2018: a CNN told the hospital apart almost "
        "perfectly, and the hospital alone predicted much of the label). The source-only "
        "baseline shows what knowing the hospital is worth on this data."),
    next_steps=(
        "Read the per-source table: a source where the model does no better than the "
        "commonest label shows where its skill comes from. Collect sources that hold "
        "several labels, balance labels within sources, and check site.image for what "
        "marks the sources. It cannot run unless a source holds at least two labels among "
        "probes.within_source_min_images test images."),
)


def run(context: ProbeContext) -> CheckResult:
    """One minus the audited model's within-source skill over its pooled skill on the same
    labels, weighted by the test images of each source measured."""
    if context.audited not in context.models:
        return SPEC.not_run(f"no audited model {context.audited!r} is loaded")
    data, test, params = context.dataset, context.splits.test, context.params
    truth, sources = data.labels[test], data.sources[test]
    minimum = params.within_source_min_images
    counts = {str(source): (int(np.sum(sources == source)),
                       len(np.unique(truth[sources == source]))) for source in np.unique(sources)}
    if len(counts) == 1:
        # skill within the one source is the pooled skill: a loss of 0 by construction
        return SPEC.not_run(f"the test rows come from one source ({next(iter(counts))}): "
                            "skill within it is the skill over all rows, so there is no "
                            "loss to measure")
    measured = [source for source, (n, labels) in counts.items() if n >= minimum and labels >= 2]
    if not measured:
        found = ", ".join(f"{source}: {n} images, {labels} label(s)"
                          for source, (n, labels) in counts.items())
        return SPEC.not_run(f"no source holds at least two labels among {minimum} or more "
                            f"test images (probes.within_source_min_images); test rows: {found}")
    proba = context.models[context.audited].predict_proba(data, test)
    predicted = proba.argmax(1)
    loss, within, pooled = skill_loss(truth, predicted, sources, measured)
    if not np.isfinite(loss):
        return SPEC.not_run(f"the model has no skill on the measured sources' labels pooled "
                            f"over sources (skill {pooled:.2f}), so it has none to lose")
    # Rows resample within their source, so each source keeps its size and its label mix
    # varies; a resample in which a measured source lost all but one label is skipped.
    ci = bootstrap_ci(lambda t, p, s: skill_loss(t, p, s, measured)[0], truth, predicted,
                      sources, n_bootstrap=params.n_bootstrap, seed=context.seed, strata=sources)
    baseline = source_only_baseline(context)
    target = data.classes.index(params.target_class)
    table = [_source_row(source, sources == source, truth, predicted, baseline["predicted"],
                         target, source in measured, minimum) for source in counts]
    details = {
        "overall_accuracy": float(np.mean(predicted == truth)),
        "baseline_accuracy": float(np.mean(baseline["predicted"] == truth)),
        "baseline_target_auroc": _auroc(truth == target, baseline["target_score"]),
        "model_target_auroc": _auroc(truth == target, proba[:, target]),
        "chance": _majority_share(truth),
        "target_class": params.target_class,
        "within_source_skill": within, "pooled_skill": pooled,
        "overall_skill": chance_rescaled_skill(balanced_accuracy(truth, predicted),
                                               len(np.unique(truth))),
        "sources_measured": measured, "min_images": minimum,
    }
    return SPEC.result(
        metric_name="skill lost within a source (1 - within / pooled)",
        metric=loss, ci=ci, summary=_summary(details, loss, ci), details=details,
        tables={"per_source": table},
        figures={"skill_within_source": _figure(table, pooled)},
        notes=[f"Source {row['source']!r} not measured: {row['note']}." for row in table
               if row["note"]],
    )


def _skill(truth: np.ndarray, predicted: np.ndarray, labels: np.ndarray) -> float:
    """Balanced accuracy over the rows of ``labels``, rescaled to 0 chance (1 / their
    number) and 1 perfect: ``balanced_accuracy_score(adjusted=True)`` on those rows."""
    keep = np.isin(truth, labels)
    return chance_rescaled_skill(balanced_accuracy(truth[keep], predicted[keep]), len(labels))


def skill_loss(truth: np.ndarray, predicted: np.ndarray, sources: np.ndarray,
               measured: list[str]) -> tuple[float, float, float]:
    """``(loss, within, pooled)``: the weighted mean skill within each measured source, the
    weighted mean skill on the same labels over every row, and one minus their ratio,
    clipped to -1..1 (nan when the pooled skill is not positive, or a measured source
    holds a single label).

    Each source is compared with its own labels pooled, so a source of two labels is not
    set against four-class skill, whose chance level differs.
    """
    within, pooled, weights = [], [], []
    for source in measured:
        own = sources == source
        labels = np.unique(truth[own])
        if len(labels) < 2:
            return float("nan"), float("nan"), float("nan")
        within.append(_skill(truth[own], predicted[own], labels))
        pooled.append(_skill(truth, predicted, labels))
        weights.append(int(own.sum()))
    mean_within = float(np.average(within, weights=weights))
    mean_pooled = float(np.average(pooled, weights=weights))
    if mean_pooled <= 0:
        return float("nan"), mean_within, mean_pooled
    return float(1 - np.clip(mean_within / mean_pooled, 0, 2)), mean_within, mean_pooled


def source_only_baseline(context: ProbeContext) -> dict[str, np.ndarray]:
    """The predictor that knows only each test image's source (Zech et al. 2018): the
    training rows' label frequencies of that source (all training rows' for a source they
    lack). ``predicted``: its commonest label; ``target_score``: its share of
    ``probes.target_class``."""
    data, splits = context.dataset, context.splits
    n_classes = len(data.classes)
    train_labels, train_sources = data.labels[splits.train], data.sources[splits.train]

    def frequencies(labels: np.ndarray) -> np.ndarray:
        return np.bincount(labels, minlength=n_classes) / max(len(labels), 1)

    overall = frequencies(train_labels)
    by_source = {source: frequencies(train_labels[train_sources == source])
                 for source in np.unique(train_sources)}
    rows = np.array([by_source.get(source, overall) for source in data.sources[splits.test]])
    target = data.classes.index(context.params.target_class)
    return {"predicted": rows.argmax(1), "target_score": rows[:, target]}


def _auroc(positive: np.ndarray, score: np.ndarray) -> float | None:
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, score))


def _majority_share(truth: np.ndarray) -> float:
    """Accuracy of always answering the commonest label of ``truth``."""
    return float(np.bincount(truth).max() / len(truth))


def _source_row(source: str, own: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                baseline: np.ndarray, target: int, measured: bool, minimum: int) -> dict:
    n, hits = int(own.sum()), int(np.sum(predicted[own] == truth[own]))
    low, high = wilson_ci(hits, n)
    labels = np.unique(truth[own])
    is_target = own & (truth == target)
    row = {"source": source, "n": n, "labels": len(labels), "accuracy": hits / n,
           "accuracy_ci_low": low, "accuracy_ci_high": high,
           "target_recall": float(np.mean(predicted[is_target] == target))
           if is_target.any() else None,
           "baseline_accuracy": float(np.mean(baseline[own] == truth[own])),
           "chance": _majority_share(truth[own]), "skill": None, "pooled_skill": None,
           "note": ""}
    if not measured:
        return {**row, "note": f"{n} test images, {len(labels)} label(s); needs at least "
                               f"{minimum} images and 2 labels"}
    return {**row, "skill": _skill(truth[own], predicted[own], labels),
            "pooled_skill": _skill(truth, predicted, labels)}


def _summary(details: dict, loss: float, ci: tuple[float, float]) -> str:
    change = (f"falls by {loss:.0%}" if loss >= 0 else f"rises by {-loss:.0%}")
    target_auroc = details["baseline_target_auroc"]
    auroc = ("" if target_auroc is None else
             f" ({class_word(details['target_class'])} AUROC {target_auroc:.2f})")
    return (f"Knowing only the source scores {details['baseline_accuracy']:.2f}{auroc}; the "
            f"model scores {details['overall_accuracy']:.2f} (the commonest label alone "
            f"{details['chance']:.2f}). Within a source its skill {change} (95% CI "
            f"{ci[0]:.0%} to {ci[1]:.0%}): {details['within_source_skill']:.2f} within vs "
            f"{details['pooled_skill']:.2f} on the same labels pooled, over "
            f"{len(details['sources_measured'])} source(s) with at least two labels.")


def _figure(table: list[dict], pooled: float) -> dict:
    shown = [row for row in table if row["skill"] is not None]
    return {"kind": "bars", "title": "Skill within each source (0 = chance; line: pooled)",
            "labels": [row["source"] for row in shown],
            "values": [row["skill"] for row in shown], "reference": pooled,
            "reference_label": "pooled skill", "metric_scale": False,  # skill, not its loss
            "ylabel": "skill (rescaled balanced accuracy)"}
