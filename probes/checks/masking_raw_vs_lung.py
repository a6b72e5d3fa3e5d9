"""``masking.raw_vs_lung``: does the model lose its COVID skill when it only sees the lungs?

The same backbone, trained once on raw and once on lung-masked radiographs, is evaluated on
the same test images. If the raw model finds the target class (``probes.target_class``,
COVID by default) much better than the lung-masked one, what made the difference lies
outside the lungs: markers, borders, text, patient position. The paired predictions are
compared with McNemar's exact test (statsmodels).
"""

from __future__ import annotations

import numpy as np

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext, class_word, signed
from probes.stats import bootstrap_ci, mcnemar_exact, wilson_ci


def _explanation(word: str) -> str:
    """The check's explanation, naming the target class as ``word``."""
    return (
        "Both models saw the same test images; the lung-masked one could only use the "
        f"lungs. A large drop means the raw model's {word} detections relied on what lies "
        "outside the lungs (markers, borders, text, positioning), not on the disease. "
        "A small drop does not prove the lungs are used for the right reasons: the "
        "site signal can also live inside the lungs (see site.image).")


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
    explanation=_explanation("COVID"),
    next_steps=(
        "Look at what the raw model sees outside the lungs (attention.* galleries) and "
        "remove it from the training images; a lung-masked model of proven quality is the "
        "safer reference. It cannot run without lung masks and a lung-masked model of the "
        "audited backbone (models.input_modes must include lung_masked)."),
    follows_target_class=True,
)


def run(context: ProbeContext) -> CheckResult:
    """Target-class recall of the raw model minus the lung-masked model's on the same test
    rows."""
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
    target = context.params.target_class
    in_target = truth == classes.index(target)
    if not in_target.any():
        return SPEC.not_run(f"no {class_word(target)} image (probes.target_class) among the "
                            "masked test rows")
    correct = {mode: context.models[key].predict_proba(context.dataset, rows).argmax(1) == truth
               for mode, key in keys.items()}
    return _result(context, rows, truth, in_target, correct, notes, classes)


def _result(context, rows, truth, in_target, correct, notes, classes) -> CheckResult:
    target = context.params.target_class
    word = class_word(target)
    raw, masked = correct["raw"], correct["lung_masked"]
    recall_raw, recall_masked = raw[in_target].mean(), masked[in_target].mean()
    on_target = mcnemar_exact(raw[in_target], masked[in_target])
    overall = mcnemar_exact(raw, masked)
    drop = float(recall_raw - recall_masked)
    ci = bootstrap_ci(lambda a, b: np.mean(a) - np.mean(b), raw[in_target], masked[in_target],
                      n_bootstrap=context.params.n_bootstrap, seed=context.params.seed)
    recall_table = _recall_rows(classes, truth, correct)
    summary = (f"On {int(in_target.sum())} {word} test images, recall is {recall_raw:.2f} for "
               f"the raw model and {recall_masked:.2f} for the lung-masked one (drop "
               f"{signed(drop)}, 95% CI {signed(ci[0])} to {signed(ci[1])}, McNemar exact p = "
               f"{on_target['p_value']:.3g}); overall accuracy {raw.mean():.2f} vs "
               f"{masked.mean():.2f}.")
    return SPEC.result(
        metric_name=f"{word} recall drop, raw minus lung-masked",
        metric=drop, ci=ci, p_value=on_target["p_value"], summary=summary,
        explanation=_explanation(word),
        details={"target_class": target, "n_test_rows": int(len(rows)),
                 f"n_{target}": int(in_target.sum()),
                 f"{target}_recall_raw": recall_raw,
                 f"{target}_recall_lung_masked": recall_masked,
                 f"{target}_only_raw_right": on_target["a_only"],
                 f"{target}_only_masked_right": on_target["b_only"],
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
