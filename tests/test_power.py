"""Statistics that say when they cannot decide: the start-time refusal of too few
permutations, the gate's ``underpowered`` status, and a strong effect that still fires with
every check in the Holm family."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import pytest

from audit import cli
from audit.core.config import ProbesConfig
from audit.core.errors import InputError
from audit.core.result import AuditResult
from audit.gate import check_permutations, judge, load_policy
from probes.base import CheckResult, Status
from probes.checks import site_image
from probes.registry import check_ids, specs
from probes.stats import permutation_p_floor
from reports.html import render_html
from reports.junit import write_junit
from tests.probe_fixtures import make_context, synth_data


def permutation_checks() -> list[str]:
    return [spec.id for spec in specs() if spec.p_value == "permutation"]


def strong(check_id: str, n_permutations: int) -> CheckResult:
    """A permutation check far over any threshold, at the smallest p its test can give."""
    floor = permutation_p_floor(n_permutations)
    return CheckResult(check_id=check_id, title=check_id, metric_name="m", metric=10.0,
                       p_value=floor, p_floor=floor)


def quiet(check_id: str) -> CheckResult:
    """A check under any threshold whose p-value (if it has one) is 1: the worst case for
    the others' Holm adjustment."""
    has_p = next(spec for spec in specs() if spec.id == check_id).p_value != "none"
    return CheckResult(check_id=check_id, title=check_id, metric_name="m", metric=-1.0,
                       p_value=1.0 if has_p else None)


def test_too_few_permutations_refuse_the_run_naming_the_key_and_the_fewest_that_work():
    policy = load_policy()
    with pytest.raises(InputError, match=r"probes.n_permutations: 20 permutations give "
                                         r"p >= 1/21") as refused:
        check_permutations(policy, check_ids(), 20)
    needed = int(str(refused.value).split("use at least ")[1].split()[0])
    check_permutations(policy, check_ids(), needed)  # the number it names is enough
    with pytest.raises(InputError):
        check_permutations(policy, check_ids(), needed - 1)


def test_the_family_counts_only_enabled_gated_checks_with_a_p_value():
    policy = load_policy()
    alone = ("site.image",)
    with pytest.raises(InputError, match="Holm over 1 gated checks"):
        check_permutations(policy, alone, 10)
    check_permutations(policy, ("data.leakage",), 1)  # no p-valued check: nothing to refuse
    ignoring = policy.model_copy(update={"checks": {
        **policy.checks,
        "site.image": policy.checks["site.image"].model_copy(update={"gate": "ignore"})}})
    check_permutations(ignoring, alone, 1)  # an ignored check is out of the family


def test_the_shipped_default_lets_every_check_fire_with_the_whole_family():
    check_permutations(load_policy(), check_ids(), ProbesConfig().n_permutations)


def test_run_with_too_few_permutations_exits_2_before_any_work(monkeypatch, capsys, tmp_path):
    config = tmp_path / "few.yaml"
    config.write_text("probes:\n  n_permutations: 20\n")
    monkeypatch.setattr(sys, "argv", ["cxr-audit", "run", str(config), "--out",
                                      str(tmp_path / "o")])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "probes.n_permutations: 20 permutations" in err and "use at least" in err
    assert not (tmp_path / "o" / "cache").exists()


def test_a_rejudged_result_with_a_bigger_family_is_underpowered_never_pass(tmp_path):
    n_permutations = 20  # floor 1/21 = 0.048: below alpha alone, not after Holm over more
    alone = judge(AuditResult(checks=(strong("site.image", n_permutations),)), load_policy())
    assert alone.check("site.image").status == Status.FAIL

    family = tuple(strong(cid, n_permutations) if cid == "site.image" else quiet(cid)
                   for cid in check_ids())
    judged = judge(AuditResult(checks=family), load_policy())
    check = judged.check("site.image")
    assert check.status == Status.UNDERPOWERED
    assert check.blocking and judged.verdict == "fail"
    assert "n_permutations" in check.reason
    assert any(reason.startswith("site.image: underpowered") for reason in judged.verdict_reasons)

    again = judge(AuditResult.from_dict(judged.to_dict()), load_policy())  # re-gated as read
    assert again.check("site.image").status == Status.UNDERPOWERED

    write_junit(judged, tmp_path / "junit.xml")
    case = next(case for case in ET.parse(tmp_path / "junit.xml").iter("testcase")
                if case.get("name") == "site.image")
    assert case.find("failure").get("type") == "underpowered"
    assert "could not decide" in render_html(judged, tmp_path)


def test_underpowered_is_judged_afresh_when_the_family_shrinks():
    n_permutations = 20
    family = tuple(strong(cid, n_permutations) if cid == "site.image" else quiet(cid)
                   for cid in check_ids())
    judged = judge(AuditResult(checks=family), load_policy())
    policy = load_policy()
    only_site = policy.model_copy(update={"checks": {
        cid: rule.model_copy(update={"gate": "ignore"}) if cid != "site.image" else rule
        for cid, rule in policy.checks.items()}})
    rejudged = judge(judged, only_site).check("site.image")
    assert rejudged.status == Status.FAIL and rejudged.reason is None


def test_a_check_under_its_threshold_passes_whatever_its_power():
    family = tuple(quiet(cid) for cid in check_ids())
    judged = judge(AuditResult(checks=family), load_policy())
    assert {check.status for check in judged.checks} == {Status.PASS}


def test_perfect_separation_fires_with_every_check_in_the_family(tmp_path):
    """The real probe at the shipped default permutations, every other check in the Holm
    family at p = 1 (the worst case for its adjustment), the default policy."""
    dataset, splits = synth_data(confounding=1.0, traits=True, seed=0)
    n_permutations = ProbesConfig().n_permutations
    measured = site_image.run(make_context(dataset, splits, tmp_path,
                                           n_permutations=n_permutations))
    assert measured.p_value == measured.p_floor == permutation_p_floor(n_permutations)
    family = tuple(measured if cid == "site.image" else quiet(cid) for cid in check_ids())
    judged = judge(AuditResult(checks=family), load_policy())
    assert judged.check("site.image").status == Status.FAIL
    assert len(permutation_checks()) > 1  # the family really holds other permutation checks
