"""``model_card.md``: the audited model's card (Mitchell et al. 2019), the parts an audit fills.

Sections: model details, intended use (a caveat: an audit is not a clinical validation),
factors (the image source), metrics, evaluation data, quantitative analyses (per model,
per source, per check), ethical considerations, caveats and recommendations (the next
steps of the checks that fired or could not run). Like the HTML report it formats the
result and computes nothing; it names files by name or run-relative path only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.core.io import atomic_write
from audit.core.result import AuditResult
from probes.registry import specs
from reports.cards import NEEDS_ACTION
from reports.formatting import (
    VERDICT_WORDS,
    format_estimate,
    format_number,
    format_p,
    status_words,
)
from reports.models_view import shown_metrics
from reports.review import ReviewView, build_review


def render_model_card(result: AuditResult) -> str:
    """The model card of ``result``'s audited model as Markdown."""
    review = build_review(result)
    parts = [_details(result, review), _intended_use(result), _factors(result), _metrics(),
             _evaluation_data(result, review), _quantitative(result, review),
             _ethics(result), _recommendations(result)]
    return "\n\n".join(parts) + "\n"


def write_model_card(result: AuditResult, path: str | Path) -> Path:
    """Write ``model_card.md`` at ``path`` atomically, replacing any old file.

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(render_model_card(result).encode("utf-8"))
    return path


def _details(result: AuditResult, review: ReviewView) -> str:
    model = result.audited.get("model") or {}
    title = model.get("key") or "the audited model"
    lines = [f"# Model card: {_cell(title)}", "",
             f"Written from the shortcut audit started {review.date}. Audit verdict: "
             f"**{VERDICT_WORDS.get(result.verdict, result.verdict.upper())}**.", "",
             "## Model details", ""]
    for section in ("Model", "Tool", "Policy"):
        lines += [f"- {section.lower()} {label}: {_cell(value)}"
                  for label, value in review.audited[section]]
    record = _audited_record(result)
    for key in ("weights_origin", "training_path"):
        if record.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {_cell(record[key])}")
    return "\n".join(lines)


def _intended_use(result: AuditResult) -> str:
    text = ("A chest X-ray classifier of the classes "
            f"{', '.join(result.data.get('classes') or []) or 'not recorded'}. This card "
            "records a shortcut audit: whether the model's skill comes from the lungs or "
            "from where the images came from. It is not a clinical validation, and the "
            "intended use and population must be stated by whoever releases the model.")
    if result.verdict != "pass":
        text += (" The audit did not pass: do not use the model on new hospitals, nor quote "
                 "its test accuracy, before the recommendations below are addressed.")
    return "## Intended use\n\n" + text


def _factors(result: AuditResult) -> str:
    sources = result.data.get("sources") or []
    lines = ["## Factors", "",
             "The factor this audit evaluates is the image source (hospital or public "
             f"collection): {', '.join(map(_cell, sources)) or 'not recorded'}. Patient "
             "demographics are not in the manifest and are not evaluated."]
    counts = result.data.get("label_source_counts")
    if isinstance(counts, dict) and counts:
        lines += ["", "Images per label and source:", "",
                  _table(["label", *sources],
                         [[label, *[row.get(source) for source in sources]]
                          for label, row in counts.items()])]
    return "\n".join(lines)


def _metrics() -> str:
    return ("## Metrics\n\n"
            "Accuracy, macro F1 and one-vs-rest AUROC on the test split, with 95% bootstrap "
            "confidence intervals; accuracy per source against the source-only baseline and "
            "chance. Each audit check has one metric oriented so that larger means more "
            "shortcut; the policy's gate compares it with a threshold and, where the check "
            "has a p-value, Holm-adjusts that p-value over the gated checks.")


def _evaluation_data(result: AuditResult, review: ReviewView) -> str:
    lines = ["## Evaluation data", ""]
    lines += [f"- {label}: {_cell(value)}" for label, value in review.audited["Data"]]
    config = result.provenance.get("config") or {}
    data = config.get("data") or {}
    if data.get("test_fraction") is not None:
        lines.append(f"- test split: {format_number(data['test_fraction'])} of the patients, "
                     "grouped by patient")
    return "\n".join(lines)


def _quantitative(result: AuditResult, review: ReviewView) -> str:
    lines = ["## Quantitative analyses", ""]
    if review.caveat:
        lines += [f"> {review.caveat}", ""]
    models = [[m.get("key"), *(format_estimate(shown_metrics(m.get("metrics") or {})[name])
                               for name in ("accuracy", "macro_f1", "auroc"))]
              for m in result.models]
    if models:
        lines += ["Test-split metrics [95% CI]:", "",
                  _table(["model", "accuracy", "macro F1", "AUROC"], models), ""]
    if review.per_source:
        lines += ["Per source:", "", _table(
            ["source", "evaluated on", "images", "accuracy [95% CI]", "internal accuracy",
             "source-only baseline", "chance"],
            [[row.source, row.evaluation, row.n, format_estimate(row.accuracy),
              row.internal_accuracy, row.baseline_accuracy, row.chance]
             for row in review.per_source]), ""]
    lines += ["Audit checks:", "", _table(
        ["check", "status", "metric", "p", "Holm-adjusted p", "threshold"],
        [[check.check_id, status_words(check.status), check.metric,
          format_p(check.p_value), format_p(check.p_adjusted), check.threshold]
         for check in result.checks])]
    lines += _evidence_by_topic(result, review)
    return "\n".join(lines)


def _evidence_by_topic(result: AuditResult, review: ReviewView) -> list[str]:
    """The checks of this run that evidence a review topic of the standards crosswalk
    (external validation, robustness, per-subgroup performance, ...), each with its
    status and sentence."""
    ran = {check.check_id: check for check in result.checks if check.ran}
    lines = []
    for row in review.crosswalk:
        evidence = [ran[name] for name in row.item.evidence if name in ran]
        lines += [f"- {_cell(row.item.topic)} ({_cell(row.item.standards)}): "
                  f"{check.check_id} ({status_words(check.status)}): "
                  f"{_cell(check.summary or check.reason or '')}" for check in evidence]
    if not lines:
        return []
    return ["", "Evidence by review topic (the standards crosswalk of report.html):", "", *lines]


def _ethics(result: AuditResult) -> str:
    text = ("A model that recognises the hospital instead of the disease looks accurate "
            "where labels and sources go together and fails elsewhere, which can send "
            "patients of an unseen hospital home undiagnosed.")
    synthetic = (result.audited.get("data") or {}).get("synthetic")
    if synthetic:
        text += f" The audited images are {synthetic}: no patient data."
    return "## Ethical considerations\n\n" + text


def _recommendations(result: AuditResult) -> str:
    next_steps = {spec.id: spec.next_steps for spec in specs()}
    lines = ["## Caveats and recommendations", ""]
    acting = [check for check in result.checks if check.status in NEEDS_ACTION]
    for check in acting:
        step = next_steps.get(check.check_id) or "see the check's section of report.html"
        said = check.summary or check.reason or ""
        lines.append(f"- **{_cell(check.title)}** ({status_words(check.status)}): "
                     f"{_cell(said)} Next: {_cell(step)}")
    if not acting:
        lines.append("- Every check passed; the audit cannot show what it does not measure "
                     "(see the standards crosswalk in report.html).")
    return "\n".join(lines)


def _audited_record(result: AuditResult) -> dict[str, Any]:
    key = (result.audited.get("model") or {}).get("key")
    return next((m for m in result.models if m.get("key") == key), {})


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(_cell, header)) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A value on one Markdown line: numbers formatted, pipes and line breaks defused."""
    text = format_number(value) if not isinstance(value, str) else value
    return " ".join(text.replace("|", "\\|").split())
