"""reports.cards: each check's card says what the gate decided, in words, with labelled numbers."""

from __future__ import annotations

import pytest

from audit.core.config import CheckPolicy, PolicyConfig
from audit.core.result import AuditResult
from audit.gate import judge
from probes.base import CheckResult, signed
from probes.registry import specs
from reports.cards import LABELS, check_card, label, reconciling_notes
from reports.html import render_html
from tests.review_fixtures import (
    border_swap,
    external_sources,
    held_out,
    surround_swap,
    within_source,
)

POLICY = PolicyConfig(alpha=0.05, checks={
    "attention.border": CheckPolicy(gate="fail", threshold=1.05),
    "generalization.leave_one_source_out": CheckPolicy(gate="fail", threshold=0.1),
    "data.leakage": CheckPolicy(gate="fail", threshold=0.0),
})
SPECS = {spec.id: spec for spec in specs()}


def _border(enrichment: float, p_value: float = 0.2) -> CheckResult:
    return CheckResult(check_id="attention.border", title="Attention on the image border",
                       metric_name="border enrichment", metric=enrichment, p_value=p_value,
                       summary="Border enrichment sentence.",
                       details={"zone_band_cells": 1.0, "p_raw_greater": 0.31,
                                "pointing_game": {"hits": 4, "n": 18, "hit_rate": 0.22,
                                                  "ci": [0.09, 0.45]},
                                "by_seed": [{"seed": 0, "value": 1.0}],
                                "by_fold": {"0": [{"seed": 0, "value": 1.0}]}},
                       tables={"empty": [], "zones": [{"class": "covid", "top": -0.0,
                                                       "reason": None}]})


def _held_out(drop: float) -> CheckResult:
    return CheckResult(check_id="generalization.leave_one_source_out",
                       title="Accuracy lost on a source never seen in training",
                       metric_name="mean accuracy drop", metric=drop, p_value=1 / 401,
                       p_floor=1 / 401, summary="Held-out sentence.")


def _judged(*checks: CheckResult, n_permutations: int = 400) -> AuditResult:
    measured = AuditResult(checks=checks, provenance={
        "config": {"probes": {"n_permutations": n_permutations}}})
    return judge(measured, POLICY)


def test_attention_passing_while_held_out_source_fails_gets_a_reconciling_note(tmp_path):
    result = _judged(_border(0.8), _held_out(0.52))
    assert [c.status for c in result.checks] == ["pass", "fail"]
    page = render_html(result, tmp_path)
    note = page.split('<details class="reconcile', 1)[1].split("</details>", 1)[0]
    assert "attention.border passed while generalization.leave_one_source_out fired" in note
    assert "cannot see a shortcut spread over the whole image" in note
    assert "Adebayo et al. 2022" in note


@pytest.mark.parametrize("enrichment, drop", [(0.8, 0.02), (1.9, 0.52)])
def test_no_reconciling_note_when_the_checks_agree(tmp_path, enrichment, drop):
    result = _judged(_border(enrichment, p_value=0.001), _held_out(drop))
    assert reconciling_notes(result.checks) == []
    assert 'class="reconcile"' not in render_html(result, tmp_path)


def test_a_fired_check_says_why_its_severity_and_what_to_do_next():
    check = _judged(_border(0.8), _held_out(0.52)).checks[1]
    card = check_card(check, SPECS[check.check_id], alpha=0.05, n_permutations=400)
    assert card.severity == "fails the release"
    assert card.judgement.startswith("Fired: mean accuracy drop is 0.520, above the threshold "
                                     "0.100, and Holm-adjusted p ≤ ")
    assert card.p_raw.startswith("at the test's floor (400 permutations)")
    assert card.p_holm.endswith("(at the floor)")
    assert card.next_steps == SPECS[check.check_id].next_steps


def test_a_quiet_check_has_no_next_steps_and_readable_numbers():
    check = _judged(_border(0.8), _held_out(0.52)).checks[0]
    card = check_card(check, SPECS[check.check_id], alpha=0.05, n_permutations=400)
    assert card.judgement == "Quiet: border enrichment is 0.800, not above the threshold 1.05."
    assert card.next_steps == "" and card.p_raw == "0.2"
    numbers = {row.label: row.value for row in card.numbers}
    assert numbers["zone band width (Grad-CAM cells)"] == "1"  # a count, not "1.00"
    assert numbers["pointing game (CAM peak inside the lungs): hit rate"] == "0.220"
    assert numbers["pointing game (CAM peak inside the lungs): 95% CI"] == "[0.0900, 0.450]"
    assert "p_raw_greater" not in numbers and label("p_raw_greater") in numbers
    assert '"by_fold"' in card.raw and '"by_seed"' not in card.raw  # deeper nesting as JSON
    zones, by_seed = card.tables  # the empty table is hidden, the all-empty column too
    assert zones.columns == ["class", "top"] and zones.rows == [["covid", "0.00"]]
    assert (by_seed.title, by_seed.columns, by_seed.rows) == ("by seed", ["seed", "value"],
                                                             [["0", "1.00"]])  # a list of records


def test_a_count_metric_and_its_threshold_are_integers():
    leak = CheckResult(check_id="data.leakage", title="Leakage", metric_name="leaking test images",
                       metric=1.0)
    check = _judged(leak).checks[0]
    card = check_card(check, SPECS["data.leakage"], alpha=0.05, n_permutations=None)
    assert card.judgement == "Fired: leaking test images is 1, above the threshold 0."


def test_signed_numbers_never_read_minus_zero():
    assert [signed(v) for v in (-0.001, 0.0, -0.0, 0.514, -0.26)] == [
        "+0.00", "+0.00", "+0.00", "+0.51", "-0.26"]


@pytest.mark.parametrize("made", [border_swap, surround_swap, within_source, external_sources,
                                  held_out], ids=lambda made: made.__name__)
def test_a_new_checks_keys_have_human_labels_and_its_tables_show(made):
    check = made()
    card = check_card(check, SPECS.get(check.check_id), 0.05, None)
    keys = {key for key, value in check.details.items()}
    keys |= {inner for value in check.details.values() if isinstance(value, dict)
             for inner in value}
    keys |= {column for rows in check.tables.values() for row in rows for column in row}
    keys |= set(check.tables)
    records = [key for key, value in check.details.items() if isinstance(value, list)
               and value and isinstance(value[0], dict)]  # lists of records show as tables
    keys |= {column for key in records for row in check.details[key] for column in row}
    unlabelled = sorted(key for key in keys if "_" in key and key not in LABELS)
    assert unlabelled == []  # a reader never sees "follow_border" as "follow border"
    assert [table.title for table in card.tables] == [label(name) for name in
                                                      [*check.tables, *records]]
    assert all(table.rows and len(table.columns) == len(table.rows[0]) for table in card.tables)
    assert card.raw == ""  # every detail is a labelled number, none left as raw JSON
