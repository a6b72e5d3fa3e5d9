"""reports.junit: one test case per check, mapped so CI shows the gate natively."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from audit.core.result import AuditResult
from probes.base import CheckResult, Status
from reports.junit import write_junit
from tests.report_fixtures import build_audit_result


def _cases(path):
    suite = ET.parse(path).getroot().find("testsuite")
    return suite, {case.get("name"): case for case in suite.findall("testcase")}


def _outcome(case):
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            return tag
    return "passed"


def test_each_status_maps_to_its_junit_outcome(tmp_path):
    suite, cases = _cases(write_junit(build_audit_result(tmp_path), tmp_path / "junit.xml"))
    assert {name: _outcome(case) for name, case in cases.items()} == {
        "data.confounding": "failure",
        "data.leakage": "passed",
        "site.image": "passed",
        "attention.border": "failure",
        "masking.raw_vs_lung": "passed",
        "ablation.class_size": "passed",
        "generalization.leave_one_source_out": "failure",  # required, did not run
        "site.embedding": "error",  # required, crashed
        "attention.outside_lung": "skipped",  # not required by the policy
    }
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("9", "3", "1", "1")


def test_messages_carry_summaries_and_reasons(tmp_path):
    _, cases = _cases(write_junit(build_audit_result(tmp_path), tmp_path / "junit.xml"))
    failure = cases["data.confounding"].find("failure")
    assert failure.get("message").startswith("Cramér's V between label and source is 0.86")
    assert "cramers_v = 0.860 [0.830, 0.890]; p = <0.001" in failure.text
    assert "threshold = 0.300" in failure.text
    assert cases["ablation.class_size"].find("system-out").text.startswith("WARNING: COVID")
    assert "needs at least two sources" in cases[
        "generalization.leave_one_source_out"].find("failure").get("message")
    assert cases["site.embedding"].find("error").get("message") == (
        "check crashed: ValueError: embedding has NaN rows")
    assert cases["data.confounding"].get("classname") == "cxr_audit.data"


def test_required_check_absent_from_the_run_fails(tmp_path):
    result = build_audit_result(tmp_path)
    result = replace(result, checks=result.checks[:1])
    _, cases = _cases(write_junit(result, tmp_path / "junit.xml"))
    assert _outcome(cases["generalization.leave_one_source_out"]) == "failure"
    assert _outcome(cases["site.embedding"]) == "failure"
    assert "attention.outside_lung" not in cases  # the policy does not require it


def test_unjudged_and_unparseable_text_still_give_valid_xml(tmp_path):
    check = CheckResult(check_id="site.image", title="Site", status=Status.ERROR,
                        reason="\x1b[31mKeyError\x1b[0m: 'x' <&>")
    measured = CheckResult(check_id="data.leakage", title="Leakage", metric=0.0)
    path = write_junit(AuditResult(checks=(check, measured)), tmp_path / "junit.xml")
    _, cases = _cases(path)
    assert _outcome(cases["site.image"]) == "error"  # unjudged: every check counts as required
    assert "KeyError" in cases["site.image"].find("error").get("message")
    assert "<&>" in cases["site.image"].find("error").get("message")
    assert _outcome(cases["data.leakage"]) == "skipped"
