"""Each check as a report card: its question, status, sentence, severity, p-values, what to
do next, secondary numbers under human labels, and the note that reconciles checks that
seem to disagree.

Everything here formats what the probe and the gate wrote: a card never recomputes a
statistic. The wording that restates the gate's judgement ("above the threshold", "at the
test's floor") picks between phrasings of what the gate already decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from probes.base import CheckResult, CheckSpec, Status
from reports.formatting import (
    format_ci,
    format_count,
    format_estimate,
    format_number,
    format_p,
    is_count_name,
    is_estimate,
)

SEVERITY = {"fail": "fails the release", "warn": "warns only", "ignore": "none (not gated)"}
FIRED = (Status.FAIL, Status.WARN)
UNDECIDED = (Status.NOT_RUN, Status.ERROR, Status.UNDERPOWERED)
NEEDS_ACTION = FIRED + UNDECIDED
MAX_TABLE_ROWS = 30

LABELS = {
    "n": "images", "n_images": "images", "n_test": "test images", "n_train": "training images",
    "n_rows": "rows", "n_test_rows": "test rows", "n_val": "validation images",
    "n_internal": "internal test images", "n_external": "unseen-source images",
    "p_value": "p-value", "p_vs_random": "p vs random CAM",
    "p_uncorrected": "p before Bonferroni over classes",
    "p_raw_greater": "p (raw model more enriched than its lung-masked twin)",
    "ci": "95% CI", "ci_low": "95% CI low", "ci_high": "95% CI high",
    "enrichment": "enrichment", "random_enrichment": "random-CAM enrichment",
    "raw_enrichment": "raw model's enrichment",
    "masked_enrichment": "lung-masked twin's enrichment",
    "area_share": "region's share of the image", "mass_share": "share of Grad-CAM mass",
    "peak_in_region": "images whose CAM peak is in the region (share)",
    "pointing_game": "pointing game (CAM peak inside the lungs)", "hit_rate": "hit rate",
    "hits": "hits", "zone_band_cells": "zone band width (Grad-CAM cells)",
    "cam_resolution": "Grad-CAM grid (cells per side)", "worst_class": "most enriched class",
    "classes_tested": "classes tested", "all_images": "all images",
    "excluded_rows": "rows left out", "null": "null model",
    "lung_masked_comparison": "lung-masked twin, same images",
    "chi2": "chi-squared", "dof": "degrees of freedom", "cramers_v": "Cramér's V",
    "single_label_sources": "sources holding a single label",
    "held_out": "held-out source", "shared_labels": "labels shared with the rest",
    "accuracy_internal": "internal test accuracy", "accuracy_external": "held-out source accuracy",
    "drop": "accuracy drop", "headline_input": "headline input",
    "skill": "skill (0 chance, 1 perfect)", "target_class": "target class",
    "sizes_per_class": "training images per class, per size", "input_mode": "input",
    "duplicates_checked": "duplicates checked", "by_held_out_source": "by held-out source",
    "reason": "why not", "per_source": "per source",
    # performance.within_source and generalization.external
    "overall_accuracy": "model's test accuracy",
    "baseline_accuracy": "source-only baseline accuracy",
    "baseline_target_auroc": "source-only baseline's target AUROC",
    "model_target_auroc": "model's target AUROC", "target_recall": "target-class recall",
    "accuracy_ci_low": "accuracy 95% CI low", "accuracy_ci_high": "accuracy 95% CI high",
    "within_source_skill": "skill within a source",
    "pooled_skill": "skill on the same labels, sources pooled",
    "overall_skill": "skill over all test images", "sources_measured": "sources measured",
    "min_images": "test images a source needs", "internal_accuracy": "internal test accuracy",
    "internal_accuracy_ci": "internal test accuracy 95% CI",
    "external_accuracy": "external accuracy", "manifests": "external manifests",
    "key": "manifest", "n_quarantined": "images quarantined",
    # the swap checks (intervention.border_swap, intervention.surround_swap)
    "pairs": "pairs (composites)", "n_test_images": "test images",
    "follow_border": "composites following the border",
    "follow_surround": "composites following the surround",
    "within_pairs": "pairs within a source", "null_share": "share expected under the null",
    "band_area_share": "border band's share of the image",
    "feather_sigma_px": "feathering (Gaussian sigma, px)", "baseline": "compared with",
    "across": "across sources", "within": "within a source",
    "share": "share following", "relation": "pair's sources",
    "by_class": "by class", "by_call": "by the surround's call",
    "by_relation": "by pair and the border's call", "by_source_pair": "by source pair",
    "band_class": "border's class", "band_call": "border's call",
    "band_source": "border's source", "interior_source": "interior's source",
    "by_band_source": "by the border's source", "p_holm": "p after Holm",
    "p_band_source": "p of that border source (before Holm over sources)",
    "all_pairs": "pairs, every source",
    "all_follow_border": "composites following the border, every source",
    "lung_source": "lungs' source", "surround_source": "surround's source",
    "surround_class": "surround's class", "surround_call": "surround's call",
}
"""Human labels of the keys probes write; any other key shows with spaces for underscores."""


@dataclass(frozen=True)
class Row:
    """One labelled number of a card."""

    label: str
    value: str


@dataclass(frozen=True)
class Table:
    """A probe's table, formatted: human column labels, text cells, empty columns left out."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    total: int  # rows in the result (only the first ``MAX_TABLE_ROWS`` are shown)


@dataclass(frozen=True)
class Card:
    """What a check's card shows besides its figures."""

    severity: str
    threshold: str
    judgement: str  # the gate's decision in words
    p_raw: str
    p_holm: str
    next_steps: str
    numbers: list[Row]
    tables: list[Table]
    raw: str  # JSON of the details too nested for the numbers table ("" when none)


def label(key: str) -> str:
    """A key as a reader sees it: ``LABELS``' wording, else underscores as spaces."""
    return LABELS.get(key, key.replace("_", " "))


def check_card(check: CheckResult, spec: CheckSpec | None, alpha: float | None,
               n_permutations: int | None) -> Card:
    """The card of ``check`` as judged by the gate.

    Args:
        check: The judged check.
        spec: Its spec (for what to do next), None for a check no longer registered.
        alpha: The policy's alpha. None for an unjudged run.
        n_permutations: The run's ``probes.n_permutations`` (names a permutation floor).
    """
    numbers, records, nested = _numbers(check.details)
    return Card(
        severity=SEVERITY.get(check.gate or "", "not judged yet"),
        threshold=_threshold(check),
        judgement=_judgement(check, alpha),
        p_raw=_p_raw(check, n_permutations),
        p_holm=_p_holm(check),
        next_steps=spec.next_steps if spec and check.status in NEEDS_ACTION else "",
        numbers=numbers,
        tables=[table for name, rows in [*check.tables.items(), *records.items()]
                if (table := _table(name, rows))],
        raw=json.dumps(nested, indent=2, default=str) if nested else "",
    )


def metric_text(check: CheckResult) -> str:
    """The headline metric with its CI; a count as an integer."""
    shown, interval = _metric_value(check), format_ci(check.ci)
    return f"{shown} {interval}" if interval and check.metric is not None else shown


def _threshold(check: CheckResult) -> str:
    """The gate's threshold in the metric's own format (a count's threshold as a count)."""
    if check.threshold is None:
        return "–"
    return (format_count(check.threshold) if is_count_name(check.metric_name)
            else format_number(check.threshold))


def _metric_value(check: CheckResult) -> str:
    if check.metric is None:
        return "not available"
    return (format_count(check.metric) if is_count_name(check.metric_name)
            else format_number(check.metric))


def at_floor(check: CheckResult) -> bool:
    """Whether the raw p-value is the smallest its permutation test can give."""
    return (check.p_floor is not None and check.p_value is not None
            and check.p_value <= check.p_floor * (1 + 1e-9))


def _p_raw(check: CheckResult, n_permutations: int | None) -> str:
    if check.p_value is None:
        return ""
    if at_floor(check):
        tests = (f"{n_permutations:,} permutations" if n_permutations
                 else f"its smallest p, {format_p(check.p_floor)}")
        return f"at the test's floor ({tests})"
    return format_p(check.p_value)


def _p_holm(check: CheckResult) -> str:
    if check.p_adjusted is None:
        return ""
    text = format_p(check.p_adjusted)
    return f"≤ {text} (at the floor)" if at_floor(check) else text


def _judgement(check: CheckResult, alpha: float | None) -> str:
    """The gate's decision as a sentence, from the status it set."""
    status = check.status
    if status in (Status.NOT_RUN, Status.ERROR, Status.MEASURED):
        return ""
    if status == Status.UNDERPOWERED:
        return f"Could not decide: {check.reason}." if check.reason else "Could not decide."
    if check.gate == "ignore":
        return "Not gated: the policy ignores this check."
    if status in FIRED:
        return f"Fired: {fired_because(check, alpha)}."
    name, metric, threshold = _decided_numbers(check)
    if check.metric is not None and check.threshold is not None and check.metric > check.threshold:
        return (f"Quiet: {name} is {metric}, above the threshold {threshold}, but "
                f"{_p_against_alpha(check, alpha) or 'not significant'}, so the excess may "
                "be chance.")
    return f"Quiet: {name} is {metric}, not above the threshold {threshold}."


def fired_because(check: CheckResult, alpha: float | None) -> str:
    """Why the gate fired ``check``, as a clause: ``source skill is 0.310, above the
    threshold 0.200, and Holm-adjusted p 0.004 < α 0.05`` (the card's and the executive
    summary's wording)."""
    name, metric, threshold = _decided_numbers(check)
    p_part = _p_against_alpha(check, alpha)
    return f"{name} is {metric}, above the threshold {threshold}" + (
        f", and {p_part}" if p_part else "")


def _decided_numbers(check: CheckResult) -> tuple[str, str, str]:
    return check.metric_name or "the metric", _metric_value(check), _threshold(check)


def _p_against_alpha(check: CheckResult, alpha: float | None) -> str:
    """``Holm-adjusted p 0.004 < α 0.05`` (``≥`` for a quiet check), "" without both."""
    if check.p_adjusted is None or alpha is None:
        return ""
    bound = "≤ " if at_floor(check) else ""
    return (f"Holm-adjusted p {bound}{format_p(check.p_adjusted)} "
            f"{'<' if check.status in FIRED else '≥'} α {alpha:g}")


def _numbers(details: dict[str, Any]) -> tuple[list[Row], dict[str, list[dict]], dict[str, Any]]:
    """Details as labelled rows (scalars, estimates, flat records one level down), lists of
    flat records (shown as tables, like the probe's own) and the rest (deeper nesting),
    shown folded as JSON."""
    rows, records, nested = [], {}, {}
    for key, value in details.items():
        if _is_scalar(value) or is_estimate(value) or _is_short_list(value):
            rows.append(Row(label(key), _cell(key, value)))
        elif isinstance(value, dict) and _is_flat(value):
            rows += [Row(f"{label(key)}: {label(inner)}", _cell(inner, v))
                     for inner, v in value.items()]
        elif isinstance(value, list) and value and all(
                isinstance(item, dict) and _is_flat(item) for item in value):
            records[key] = value
        else:
            nested[key] = value
    return rows, records, nested


def _is_flat(record: dict[str, Any]) -> bool:
    """Whether every value of ``record`` fits a cell (scalar, short list, estimate)."""
    return all(_is_scalar(v) or _is_short_list(v) or is_estimate(v) for v in record.values())


def _table(name: str, rows: list[dict[str, Any]]) -> Table | None:
    """A probe's table, or None when it has no rows or no column with a value."""
    keys = [key for key in dict.fromkeys(k for row in rows for k in row)
            if any(row.get(key) not in (None, "") for row in rows)]
    if not rows or not keys:
        return None
    cells = [[_cell(key, row.get(key)) for key in keys] for row in rows[:MAX_TABLE_ROWS]]
    return Table(label(name), [label(key) for key in keys], cells, len(rows))


def _cell(key: str, value: Any) -> str:
    if value is None or value == "":
        return "–"
    if is_estimate(value):
        return format_estimate(value)
    if _is_short_list(value):
        if key == "ci" and len(value) == 2:
            return format_ci(value)
        return ", ".join(_cell(key, item) for item in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{label(k)} {_cell(k, v)}" for k, v in value.items())
    if key.startswith("p_") or key == "p_value":
        return format_p(value)
    return format_count(value) if is_count_name(key) else format_number(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_short_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) <= 8 and all(
        _is_scalar(item) for item in value)


def reconciling_notes(checks: Iterable[CheckResult]) -> list[str]:
    """Notes for checks that seem to disagree, from their statuses alone.

    Attention checks passing while site or generalisation checks fire is the common case:
    the two kinds see different shortcuts, so both can be right.
    """
    checks = list(checks)
    quiet = [c.check_id for c in checks if c.check_id.startswith("attention.")
             and c.status == Status.PASS]
    fired = [c.check_id for c in checks if c.check_id.startswith(SITE_FAMILIES)
             and c.status in FIRED]
    if not quiet or not fired:
        return []
    return [
        f"{_listing(quiet)} passed while {_listing(fired)} fired. These do not contradict "
        "each other. Grad-CAM region statistics (the attention checks) see a shortcut only "
        "when the model's evidence piles up in a region they measure: the border band or "
        "outside the lungs. They cannot see a shortcut spread over the whole image, or one "
        "carried by the hospital's image style (contrast, noise, processing), which sits "
        "inside the lungs too; saliency maps can miss such spurious features entirely "
        "(Adebayo et al. 2022). The site and generalisation checks measure the outcome "
        "itself: whether the source can be read from the image, and whether accuracy holds "
        "on an unseen source. Trust the checks that fired."]


SITE_FAMILIES = ("site.", "generalization.", "masking.")
"""Checks that see a shortcut through its effect, wherever in the image it sits."""


def _listing(check_ids: list[str]) -> str:
    return ", ".join(check_ids[:-1]) + (" and " if len(check_ids) > 1 else "") + check_ids[-1]
