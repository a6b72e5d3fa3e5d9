"""The reviewer-facing report parts: what was audited (summary.json and the page), the
executive summary, the per-source table, the headline caveat, the sign-off, the standards
crosswalk and model_card.md, for every run and without the machine's paths."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from audit.core.errors import InputError
from audit.core.result import AuditResult
from reports import REPORT_FILES, write_reports
from reports.crosswalk import ITEMS, crosswalk
from reports.html import render_html
from reports.model_card import render_model_card
from reports.narrative import executive_summary, headline_caveat
from reports.per_source import per_source_rows
from reports.review import accepted_overrides
from reports.summary import read_summary, validate_summary, write_summary
from tests.report_fixtures import build_audit_result
from tests.review_fixtures import (
    AUDITED,
    RELAXED,
    external_sources,
    held_out,
    review_result,
    within_source,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("review")


@pytest.fixture(scope="module")
def base(run_dir):
    """The report fixture's result, built once (its metrics and npz take seconds)."""
    return build_audit_result(run_dir)


@pytest.fixture(scope="module")
def result(base):
    return review_result(base)


@pytest.fixture(scope="module")
def page(result, run_dir):
    """The default result's page, rendered once (figures take seconds)."""
    return render_html(result, run_dir)


def test_summary_json_carries_the_audited_identity_and_validates(tmp_path, result):
    path = write_summary(result, tmp_path / "summary.json")
    data = json.loads(path.read_text())
    validate_summary(data)
    assert data["audited"]["model"] == AUDITED["model"]
    assert data["audited"]["data"]["rows"] == AUDITED["data"]["rows"]
    assert data["audited"]["tool"]["git_commit"] == AUDITED["tool"]["git_commit"]
    assert set(data["audited"]["policy"]) == {"name", "sha256"}
    assert read_summary(path).audited == data["audited"]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["audited"]["model"].update(sha256="xyz"),
     r"\$\.audited\.model\.sha256: 'xyz' does not match"),
    (lambda d: d["audited"]["data"].pop("rows"), r"\$\.audited\.data: 'rows' is a required"),
    (lambda d: d["audited"].update(machine="/home/me"),
     r"\$\.audited: Additional properties are not allowed"),
    (lambda d: d.pop("audited"), r"\$: 'audited' is a required property"),
])
def test_bad_identity_fields_are_named(tmp_path, result, mutate, message):
    data = result.to_dict()
    mutate(data)
    with pytest.raises(InputError, match=message):
        validate_summary(data, source="run.json")


def test_a_summary_of_the_previous_schema_version_is_an_input_error_naming_it(tmp_path, result):
    path = tmp_path / "summary.json"
    old = {key: value for key, value in result.to_dict().items() if key != "audited"}
    path.write_text(json.dumps({**old, "schema_version": "2.0"}))
    with pytest.raises(InputError, match=re.escape(f"{path}: summary schema version '2.0'")):
        read_summary(path)


def test_the_page_shows_what_was_audited_and_no_machine_path(page, result, run_dir):
    section = page[page.index('id="audited"'):page.index('id="per-source"')]
    for shown in (AUDITED["model"]["file"], AUDITED["model"]["sha256"],
                  AUDITED["model"]["identity"], AUDITED["data"]["manifest"],
                  AUDITED["data"]["sha256"], AUDITED["tool"]["git_commit"],
                  result.audited["policy"]["sha256"], "hannover, kermany"):
        assert shown in section
    assert str(run_dir) not in page


def test_summary_sentences_say_the_verdict_and_the_held_out_accuracy(base, result):
    sentences = executive_summary(result)
    assert 3 <= len(sentences) <= 5
    assert sentences[0].startswith("Verdict FAIL under the default policy")
    strongest = next(s for s in sentences if s.startswith("Strongest evidence for"))
    assert "accuracy falls by 0.285 on average (95% CI [0.200, 0.370])" in strongest
    assert "with 'hannover' held out it falls from 0.890 on the other sources' test images " \
           "to 0.370 on 'hannover'" in strongest
    assert "where chance (always answering the commonest label) is 0.250" in strongest
    # a held-out source the within-source table has gets its own chance level
    cohen_worst = review_result(base, checks=(within_source(chance=0.4), held_out(external=0.9)))
    cohen = " ".join(executive_summary(cohen_worst))
    assert "with 'cohen' held out" in cohen
    assert "always answering 'cohen''s commonest label) is 0.400" in cohen
    assert any(s.startswith("Against a shortcut") for s in sentences)
    assert any("Source in the model's embedding (error" in s for s in sentences)


@pytest.mark.parametrize("check, phrase, before, after", [
    (lambda value: held_out(external=value), "to {} on 'hannover'", 0.37, 0.123),
    (lambda value: held_out(internal=value), "falls from {} on the other", 0.89, 0.934),
    (lambda value: within_source(chance=value), "commonest label) is {}", 0.25, 0.333),
])
def test_a_changed_number_changes_the_sentence(base, check, phrase, before, after):
    def summary(made):
        checks = (made, held_out()) if made.check_id == "performance.within_source" else (
            within_source(), made)
        return " ".join(executive_summary(review_result(base, checks=checks)))

    old, new = summary(check(before)), summary(check(after))
    assert phrase.format(f"{before:.3f}") in old and phrase.format(f"{after:.3f}") in new
    assert phrase.format(f"{after:.3f}") not in old


def test_an_external_source_is_the_strongest_finding_when_it_alone_blocks(base):
    from audit.core.config import CheckPolicy, PolicyConfig

    policy = PolicyConfig(checks={"generalization.leave_one_source_out":
                                  CheckPolicy(gate="fail", threshold=0.5)})
    run = review_result(base, checks=(external_sources(accuracy=0.43),), policy=policy)
    # generalization.external is not registered yet: judge it under a stand-in rule
    fired = replace(run.check("generalization.external"), status="fail", blocking=True,
                    threshold=0.1, gate="fail")
    run = replace(run, checks=tuple(fired if c.check_id == fired.check_id else c
                                    for c in run.checks))
    strongest = next(s for s in executive_summary(run) if s.startswith("Strongest"))
    assert "external source 'padchest' accuracy is 0.430 [0.330, 0.530] against 0.890" in strongest


def test_passing_run_says_so_without_a_caveat(run_dir, result):
    passed = replace(result, verdict="pass")
    assert executive_summary(passed)[0].startswith("Verdict PASS")
    assert headline_caveat(passed) is None
    page = render_html(passed, run_dir)
    assert "do not quote it" not in page


def test_headline_accuracy_carries_a_caveat_when_the_verdict_fails(page, result):
    models = page[page.index('id="models"'):page.index('id="probes"')]
    caveat = models[:models.index("Accuracy</th>")]  # before the first headline number
    assert "do not quote it as the model&#39;s accuracy" in caveat
    blocking = sum(check.blocking for check in result.checks) + len(result.absent_required)
    assert f"found {blocking} blocking problems" in caveat


def test_per_source_rows_come_from_each_check_with_its_keys(result):
    rows = per_source_rows(result)
    assert [(row.source, row.evaluation) for row in rows] == [
        ("cohen", "internal test"), ("kermany", "internal test"),
        ("hannover", "held out of training"), ("cohen", "held out of training"),
        ("shenzhen", "held out of training"), ("padchest", "external")]
    internal, _, hannover, _, shenzhen, padchest = rows
    assert internal.accuracy == {"value": 0.91, "ci": pytest.approx([0.84, 0.96])}
    assert (internal.baseline_accuracy, internal.chance, internal.labels) == (0.61, 0.25, 3)
    assert (hannover.n, hannover.accuracy, hannover.internal_accuracy) == (40, {"value": 0.37}, 0.89)
    assert shenzhen.note == "shares no label with the other sources"
    assert (padchest.internal_accuracy, padchest.p_value) == (0.89, 0.002)


def test_per_source_table_on_the_page(page):
    table = page[page.index('id="per-source"'):page.index('id="checks"')]
    assert "0.910 [0.840, 0.960]" in table  # internal accuracy with its CI
    assert "<td>0.610</td>" in table and "<td>0.250</td>" in table  # baseline, chance
    assert "not evaluated: shares no label with the other sources" in table
    assert "padchest" in table and "opacity recall" in table  # the check's target class
    assert "needs at least 40 images and 2 labels" in table


def test_without_per_source_checks_the_table_says_not_available(tmp_path, base):
    assert per_source_rows(review_result(base, checks=())) == []
    page = render_html(AuditResult(checks=()), tmp_path)
    assert "no check in this run measured accuracy per source" in page


def test_sign_off_lists_the_relaxed_checks_with_the_policys_reason(run_dir, base):
    run = review_result(base, policy=RELAXED, name="default + relaxed.yaml")
    overrides = {item.check_id: item for item in accepted_overrides(run)}
    assert set(overrides) == {"attention.outside_lung", "masking.raw_vs_lung", "site.embedding"}
    assert overrides["masking.raw_vs_lung"].rule == "not required"
    assert overrides["masking.raw_vs_lung"].reason == "external model: no lung-masked twin"
    assert overrides["site.embedding"].rule == "ignored"
    assert overrides["site.embedding"].reason == "the policy gives no reason"
    page = render_html(run, run_dir)
    signoff = page[page.index('<section id="signoff" class="signoff">'):]
    for shown in ("external model: no lung-masked twin", AUDITED["model"]["sha256"],
                  "default + relaxed.yaml", ">FAIL<", "Reviewer name", "Decision", "Signature"):
        assert shown in signoff


def test_sign_off_without_overrides_says_none(tmp_path, base):
    from audit.gate import judge, load_policy

    assert accepted_overrides(review_result(base, policy=load_policy())) == []
    judged = judge(AuditResult(checks=()), load_policy())
    assert "None: the policy keeps every check's default" in render_html(judged, tmp_path)
    assert "No policy has judged this run yet" in render_html(AuditResult(checks=()), tmp_path)


def test_crosswalk_follows_the_statuses_of_this_run(result):
    rows = {row.item.topic: row for row in crosswalk(result)}
    assert len(rows) == len(ITEMS)
    partitions = rows["Data partitions and their disjointness"]
    assert partitions.evidenced and "data.leakage: pass" in partitions.found
    assert "GMLP" in partitions.item.standards
    external = rows["External validation / performance on unseen sites"]
    assert external.evidenced and "generalization.leave_one_source_out: fail" in external.found
    assert rows["Performance per subgroup with confidence intervals"].evidenced
    assert not rows["Reference standard (ground truth) and its quality"].evidenced


def test_crosswalk_without_the_evidence_says_not_evidenced():
    bare = AuditResult(checks=())
    rows = {row.item.topic: row for row in crosswalk(bare)}
    assert not any(row.evidenced for row in rows.values())
    assert rows["Data partitions and their disjointness"].found == "not in this run: data.leakage"


def test_every_run_writes_the_model_card_and_the_crosswalk(tmp_path):
    written = write_reports(AuditResult(checks=()), tmp_path / "bare")
    assert written["model_card"].name == REPORT_FILES["model_card"] == "model_card.md"
    card = written["model_card"].read_text(encoding="utf-8")
    assert card.startswith("# Model card")
    page = written["html"].read_text(encoding="utf-8")
    assert 'id="crosswalk"' in page and 'class="signoff"' in page and 'id="summary"' in page


def test_model_card_has_the_sections_an_audit_fills(run_dir, result):
    card = render_model_card(result)
    headings = re.findall(r"^## (.+)$", card, flags=re.M)
    assert headings == ["Model details", "Intended use", "Factors", "Metrics",
                        "Evaluation data", "Quantitative analyses", "Ethical considerations",
                        "Caveats and recommendations"]
    assert AUDITED["model"]["sha256"] in card and "manifest.csv" in card
    assert "| hannover | held out of training | 40 | 0.370 |" in card
    assert "> Accuracy on this run's test images only" in card
    # the blocking leave-one-source-out check brings its spec's next steps
    assert "**Accuracy lost on a source never seen in training** (fail)" in card
    assert "Do not trust the internal test score for new hospitals" in card
    assert str(run_dir) not in card


def test_model_card_keeps_a_pipe_in_a_source_name_inside_its_cell(base):
    run = review_result(base, checks=(within_source(),))
    renamed = replace(run.check("performance.within_source"), tables={"per_source": [
        {**run.check("performance.within_source").tables["per_source"][0],
         "source": "a|b"}]})
    run = replace(run, checks=tuple(renamed if c.check_id == renamed.check_id else c
                                    for c in run.checks))
    assert "| a\\|b | internal test |" in render_model_card(run)


def test_the_external_model_policy_gives_a_reason_for_each_check_it_relaxes():
    from pathlib import Path

    from audit.gate import judge, load_policy

    examples = Path(__file__).resolve().parents[1] / "examples"
    policy = examples / "policy-external-model.yaml"
    judged = judge(AuditResult(checks=()), load_policy(policy), "default + " + policy.name)
    overrides = accepted_overrides(judged)
    assert {item.check_id for item in overrides} == {
        "masking.raw_vs_lung", "ablation.class_size", "generalization.leave_one_source_out"}
    assert all("external model" in item.reason for item in overrides)
    assert {item.status for item in overrides} == {"absent"}


def test_source_names_in_the_summary_and_the_per_source_table_are_escaped(tmp_path, base):
    hostile = "<script>window.__pwned = 1</script>"
    loso = held_out()
    rows = [{**loso.tables["by_held_out_source"][0], "held_out": hostile}]
    run = review_result(base, checks=(replace(loso, tables={"by_held_out_source": rows}),))
    page = render_html(replace(run, models=()), tmp_path)  # no model figures: faster
    assert hostile not in page
    summary = page[page.index('id="summary"'):page.index('id="checks"')]
    assert summary.count("&lt;script&gt;window.__pwned = 1&lt;/script&gt;") >= 2
