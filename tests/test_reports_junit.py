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


def test_required_checks_absent_from_the_run_fail_as_the_gate_listed_them(tmp_path):
    # The policy is not read: only the gate's absent_required says what is missing.
    policy = {"checks": {"site.image": {"gate": "fail", "threshold": 0.1, "required": True}}}
    result = AuditResult(checks=(), verdict="fail", absent_required=("data.leakage",),
                         policy=policy)
    suite, cases = _cases(write_junit(result, tmp_path / "junit.xml"))
    assert list(cases) == ["data.leakage"]
    assert cases["data.leakage"].find("failure").get("type") == "missing"
    assert suite.get("failures") == "1"


def test_checks_that_did_not_run_fail_only_when_the_gate_marked_them_blocking(tmp_path):
    policy = {"checks": {"site.image": {"gate": "fail", "threshold": 0.1, "required": True}}}
    checks = (CheckResult.not_run("data.leakage", "Leakage", "no patient ids"),
              CheckResult.not_run("site.image", "Site", "no masks"),
              replace(CheckResult.not_run("attention.border", "Border", "no model"),
                      blocking=True))
    result = AuditResult(checks=checks, verdict="fail", policy=policy)
    _, cases = _cases(write_junit(result, tmp_path / "junit.xml"))
    assert {name: _outcome(case) for name, case in cases.items()} == {
        "data.leakage": "skipped", "site.image": "skipped", "attention.border": "failure"}


def test_unjudged_and_unparseable_text_still_give_valid_xml(tmp_path):
    check = CheckResult(check_id="site.image", title="Site", status=Status.ERROR,
                        reason="\x1b[31mKeyError\x1b[0m: 'x' <&>")
    measured = CheckResult(check_id="data.leakage", title="Leakage", metric=0.0)
    path = write_junit(AuditResult(checks=(check, measured)), tmp_path / "junit.xml")
    _, cases = _cases(path)
    assert _outcome(cases["site.image"]) == "skipped"  # unjudged: the gate marked nothing blocking
    assert "KeyError" in cases["site.image"].find("skipped").get("message")
    assert "<&>" in cases["site.image"].find("skipped").get("message")
    assert _outcome(cases["data.leakage"]) == "skipped"
