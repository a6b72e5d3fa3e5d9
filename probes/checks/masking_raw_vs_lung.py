"""``masking.raw_vs_lung``: does the model lose its COVID skill when it only sees the lungs?

The same backbone, trained once on raw and once on lung-masked radiographs, is evaluated on
the same test images. If the raw model finds COVID much better than the lung-masked one,
what made the difference lies outside the lungs: markers, borders, text, patient position.
The paired predictions are compared with McNemar's exact test (statsmodels).
"""

from __future__ import annotations

import numpy as np

from probes.base import TARGET_CLASS, CheckResult, CheckSpec, Gate, ProbeContext
from probes.stats import bootstrap_ci, mcnemar_exact, wilson_ci

SPEC = CheckSpec(
    id="masking.raw_vs_lung",
    title="COVID skill lost when only the lungs are shown",
    question="Does accuracy collapse when everything but the lungs is removed?",
    metric="COVID recall of the raw-input model minus the lung-masked model's",
    # A warning, not a failure, by default: masking itself can cost accuracy, and clean
    # phantoms with nothing outside the lungs to learn from measured drops of 0.33-0.42 too
    # (README, Measured). Tighten it to `fail` where a lung-masked model of proven quality
    # is the reference.
    default=Gate(level="warn", threshold=0.15),
    order=70,
    p_value="analytic",
    needs=("masks", "lung_masked_model"),
    explanation=(
        "Both models saw the same test images; the lung-masked one could only use the "
        "lungs. A large drop means the raw model's COVID detections relied on what lies "
        "outside the lungs (markers, borders, text, positioning), not on the disease. "
        "A small drop does not prove the lungs are used for the right reasons: the "
        "site signal can also live inside the lungs (see site.image)."),
    next_steps=(
        "Look at what the raw model sees outside the lungs (attention.* galleries) and "
        "remove it from the training images; a lung-masked model of proven quality is the "
        "safer reference. It cannot run without lung masks and a lung-masked model of the "
        "audited backbone (models.input_modes must include lung_masked)."),
)


def run(context: ProbeContext) -> CheckResult:
    """COVID recall of the raw model minus the lung-masked model's on the same test rows."""
    backbone = context.audited.split("/")[0]
    keys = {"raw": f"{backbone}/raw", "lung_masked": f"{backbone}/lung_masked"}
    missing = [key for key in keys.values() if key not in context.models]
    if missing:
        return SPEC.not_run(
            f"needs models {' and '.join(keys.values())}; missing {', '.join(missing)} "
            f"(loaded: {', '.join(context.models) or 'none'})")
    if context.dataset.masks is None:
        return SPEC.not_run("the dataset has no lung masks")
    rows, notes = _test_rows(context)
    classes = list(context.models[keys["raw"]].classes)
    truth = context.dataset.labels[rows]
    covid = truth == classes.index(TARGET_CLASS)
    if not covid.any():
        return SPEC.not_run("no COVID image among the masked test rows")
    correct = {mode: context.models[key].predict_proba(context.dataset, rows).argmax(1) == truth
               for mode, key in keys.items()}
    return _result(context, rows, truth, covid, correct, notes, classes)


def _result(context, rows, truth, covid, correct, notes, classes) -> CheckResult:
    raw, masked = correct["raw"], correct["lung_masked"]
    recall_raw, recall_masked = raw[covid].mean(), masked[covid].mean()
    on_covid, overall = mcnemar_exact(raw[covid], masked[covid]), mcnemar_exact(raw, masked)
    drop = float(recall_raw - recall_masked)
    ci = bootstrap_ci(lambda a, b: np.mean(a) - np.mean(b), raw[covid], masked[covid],
                      n_bootstrap=context.params.n_bootstrap, seed=context.params.seed)
    recall_table = _recall_rows(classes, truth, correct)
    summary = (f"On {int(covid.sum())} COVID test images, recall is {recall_raw:.2f} for the "
               f"raw model and {recall_masked:.2f} for the lung-masked one (drop {drop:+.2f}, "
               f"95% CI {ci[0]:+.2f} to {ci[1]:+.2f}, McNemar exact p = "
               f"{on_covid['p_value']:.3g}); overall accuracy {raw.mean():.2f} vs "
               f"{masked.mean():.2f}.")
    return SPEC.result(
        metric_name="COVID recall drop, raw minus lung-masked",
        metric=drop, ci=ci, p_value=on_covid["p_value"], summary=summary,
        details={"n_test_rows": int(len(rows)), "n_covid": int(covid.sum()),
                 "covid_recall_raw": recall_raw, "covid_recall_lung_masked": recall_masked,
                 "covid_only_raw_right": on_covid["a_only"],
                 "covid_only_masked_right": on_covid["b_only"],
                 "accuracy_raw": raw.mean(), "accuracy_lung_masked": masked.mean(),
                 "accuracy_drop": raw.mean() - masked.mean(),
                 "accuracy_mcnemar_p": overall["p_value"]},
        tables={"recall_by_class": recall_table,
                "accuracy_by_source": _source_rows(context.dataset.sources[rows], correct)},
        figures={"recall_by_class": {
            "kind": "bars", "title": "Recall per class: raw vs lung-masked model",
            "labels": [f"{r['class']} {r['model']}" for r in recall_table],
            "values": [r["recall"] for r in recall_table],
            "ci_low": [r["ci_low"] for r in recall_table],
            "ci_high": [r["ci_high"] for r in recall_table], "reference": None,
            "ylabel": "recall"}},
        notes=notes,
    )


def _test_rows(context: ProbeContext) -> tuple[np.ndarray, list[str]]:
    """Test rows with a real lung mask (others would show the masked model a blank image)."""
    rows, notes = np.asarray(context.splits.test), []
    has_mask = context.dataset.has_mask
    if has_mask is not None:
        kept = rows[np.asarray(has_mask, dtype=bool)[rows]]
        if len(kept) < len(rows):
            notes.append(f"{len(rows) - len(kept)} of {len(rows)} test rows have no lung mask "
                         "and were left out: the lung-masked model would see a blank image.")
        rows = kept
    return rows, notes


def _recall_rows(classes, truth, correct_by_model) -> list[dict]:
    table = []
    for index, name in enumerate(classes):
        part = truth == index
        for model, correct in correct_by_model.items():
            hits = int(np.sum(correct[part]))
            low, high = wilson_ci(hits, int(part.sum()))
            table.append({"class": name, "model": model, "n": int(part.sum()),
                          "recall": hits / part.sum() if part.any() else None,
                          "ci_low": low, "ci_high": high})
    return table


def _source_rows(sources, correct_by_model) -> list[dict]:
    return [{"source": source, "n": int(np.sum(sources == source)),
             **{f"accuracy_{model}": float(np.mean(correct[sources == source]))
                for model, correct in correct_by_model.items()}}
            for source in np.unique(sources)]
