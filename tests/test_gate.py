"""The gate: policy loading and layering, judging hand-built results (Holm over the gated
family, blocking checks, absent required checks), exit codes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from audit.core.config import CheckPolicy, PolicyConfig
from audit.core.errors import InputError
from audit.core.result import AuditResult
from audit.gate import (
    IGNORED_NOTE,
    exit_code,
    judge,
    load_policy,
    read_policy,
)
from probes.base import CheckResult, Status
from probes.registry import check_ids, specs


def measured(check_id: str, metric: float | None, p_value: float | None = None,
             p_adjusted: float | None = None) -> CheckResult:
    return CheckResult(check_id=check_id, title=check_id, metric_name="m", metric=metric,
                       p_value=p_value, p_adjusted=p_adjusted)


def only(*rules: tuple[str, CheckPolicy], alpha: float = 0.05) -> PolicyConfig:
    return PolicyConfig(alpha=alpha, checks=dict(rules))


FAIL_AT_HALF = CheckPolicy(gate="fail", threshold=0.5)


def test_default_policy_is_each_specs_default_rule():
    policy = load_policy()
    assert list(policy.checks) == list(check_ids())
    for spec in specs():
        rule = policy.checks[spec.id]
        assert (rule.gate, rule.threshold, rule.required) == (
            spec.default.level, spec.default.threshold, spec.default.required)
    assert policy.alpha == PolicyConfig().alpha


@pytest.mark.parametrize(
    ("metric", "p_value", "p_adjusted", "expected"),
    [
        (0.9, None, None, Status.FAIL),  # no p-value: the metric alone decides
        (0.4, None, None, Status.PASS),
        (0.5, None, None, Status.PASS),  # fires only strictly above the threshold
        (0.9, 0.01, None, Status.FAIL),
        (0.9, 0.20, None, Status.PASS),  # large but not significant
        (0.9, 0.01, 0.08, Status.FAIL),  # a stale adjusted p-value is recomputed, not read
        (0.9, 0.20, 0.04, Status.PASS),
        (None, None, None, Status.FAIL),  # measured nothing: cannot be shown safe
        (float("nan"), None, None, Status.FAIL),
    ],
)
def test_measured_check_fires_on_metric_and_p_value(metric, p_value, p_adjusted, expected):
    result = AuditResult(checks=(measured("site.image", metric, p_value, p_adjusted),))
    judged = judge(result, only(("site.image", FAIL_AT_HALF)))
    assert judged.check("site.image").status == expected
    assert judged.verdict == ("fail" if expected == Status.FAIL else "pass")
    assert judged.check("site.image").threshold == 0.5


WARN_AT_HALF = CheckPolicy(gate="warn", threshold=0.5)
IGNORE = CheckPolicy(gate="ignore")


def test_holm_family_is_the_gated_checks_only():
    # Holm of (0.01, 0.04) is (0.02, 0.04); with a third p of 0.001 it would be (0.03, 0.08).
    gated = (measured("site.image", 0.9, p_value=0.01), measured("site.embedding", 0.9, 0.04))
    rules = (("site.image", FAIL_AT_HALF), ("site.embedding", WARN_AT_HALF))
    alone = judge(AuditResult(checks=gated), only(*rules))
    with_ignored = judge(AuditResult(checks=(*gated, measured("data.confounding", 0.9, 0.001))),
                         only(*rules, ("data.confounding", IGNORE)))
    for judged in (alone, with_ignored):
        assert judged.check("site.image").p_adjusted == pytest.approx(0.02)
        assert judged.check("site.embedding").p_adjusted == pytest.approx(0.04)
    assert with_ignored.check("data.confounding").p_adjusted is None


def test_checks_without_a_p_value_or_that_did_not_run_are_outside_the_family():
    checks = (measured("site.image", 0.9, p_value=0.03), measured("attention.border", 0.9),
              replace(CheckResult.not_run("site.embedding", "t", "no model"), p_value=0.001))
    judged = judge(AuditResult(checks=checks),
                   only(("site.image", FAIL_AT_HALF), ("attention.border", FAIL_AT_HALF),
                        ("site.embedding", FAIL_AT_HALF)))
    assert judged.check("site.image").p_adjusted == pytest.approx(0.03)
    assert judged.check("attention.border").p_adjusted is None
    assert judged.check("site.embedding").p_adjusted is None


def test_rejudging_without_a_gated_check_re_forms_the_family_and_can_flip_the_verdict():
    # Holm of (0.02, 0.03, 0.5) is (0.06, 0.06, 0.5): nothing fires at alpha 0.05. Once
    # ablation is ignored, the family is (0.02, 0.03) -> (0.04, 0.04), and both fire.
    checks = (measured("site.image", 0.9, p_value=0.02), measured("data.confounding", 0.9, 0.03),
              measured("ablation.class_size", 0.9, p_value=0.5))
    rules = (("site.image", FAIL_AT_HALF), ("data.confounding", FAIL_AT_HALF))
    gating_ablation = only(*rules, ("ablation.class_size", WARN_AT_HALF))
    everything = judge(AuditResult(checks=checks), gating_ablation)
    rejudged = judge(everything, only(*rules, ("ablation.class_size", IGNORE)))
    assert [c.p_adjusted for c in everything.checks] == pytest.approx([0.06, 0.06, 0.5])
    assert everything.verdict == "pass"
    assert [c.p_adjusted for c in rejudged.checks[:2]] == pytest.approx([0.04, 0.04])
    assert rejudged.check("ablation.class_size").p_adjusted is None
    assert (rejudged.verdict, rejudged.check("site.image").status) == ("fail", Status.FAIL)
    # Judging back with the first policy gives what a first judgement would: nothing stale.
    assert judge(rejudged, gating_ablation).to_dict() == everything.to_dict()


@pytest.mark.parametrize(
    ("check", "rule", "blocking"),
    [
        (measured("site.image", 0.9), FAIL_AT_HALF, True),  # failed
        (CheckResult.not_run("site.image", "t", "no masks"), FAIL_AT_HALF, True),
        (CheckResult(check_id="site.image", title="t", status=Status.ERROR, reason="boom"),
         WARN_AT_HALF, True),  # a required crash blocks even under a warn gate
        (measured("site.image", 0.9), WARN_AT_HALF, False),  # warned
        (measured("site.image", 0.1), FAIL_AT_HALF, False),  # passed
        (measured("site.image", 0.9), IGNORE, False),
        (CheckResult.not_run("site.image", "t", "no masks"), IGNORE, False),
        (CheckResult.not_run("site.image", "t", "no masks"),
         CheckPolicy(gate="fail", threshold=0.5, required=False), False),
    ],
)
def test_blocking_marks_the_checks_that_fail_the_verdict(check, rule, blocking):
    judged = judge(AuditResult(checks=(check,)), only(("site.image", rule)))
    assert judged.check("site.image").blocking is blocking
    assert judged.verdict == ("fail" if blocking else "pass")


def test_blocking_is_recomputed_when_rejudged():
    failed = judge(AuditResult(checks=(measured("site.image", 0.9),)),
                   only(("site.image", FAIL_AT_HALF)))
    lenient = judge(failed, only(("site.image", CheckPolicy(threshold=1.0))))
    assert failed.check("site.image").blocking and not lenient.check("site.image").blocking


def test_warn_gate_warns_without_failing_the_verdict():
    result = AuditResult(checks=(measured("site.embedding", 0.9),))
    judged = judge(result, only(("site.embedding", CheckPolicy(gate="warn", threshold=0.5))))
    assert judged.check("site.embedding").status == Status.WARN
    assert judged.verdict == "pass"
    assert judged.verdict_reasons[0].startswith("warning: site.embedding")


@pytest.mark.parametrize("status", [Status.NOT_RUN, Status.ERROR])
def test_required_check_that_did_not_run_fails_and_keeps_its_status(status):
    check = CheckResult(check_id="masking.raw_vs_lung", title="t", status=status,
                        reason="no lung masks")
    judged = judge(AuditResult(checks=(check,)), only(("masking.raw_vs_lung", FAIL_AT_HALF)))
    assert judged.verdict == "fail"
    assert judged.check("masking.raw_vs_lung").status == status
    assert "masking.raw_vs_lung" in judged.verdict_reasons[0]
    assert "no lung masks" in judged.verdict_reasons[0]


def test_optional_or_ignored_check_that_did_not_run_passes():
    check = CheckResult.not_run("masking.raw_vs_lung", "t", "no lung masks")
    optional = CheckPolicy(gate="fail", threshold=0.5, required=False)
    ignored = CheckPolicy(gate="ignore", threshold=None)
    for rule in (optional, ignored):
        judged = judge(AuditResult(checks=(check,)), only(("masking.raw_vs_lung", rule)))
        assert judged.verdict == "pass"
        assert judged.check("masking.raw_vs_lung").status == Status.NOT_RUN


def test_ignored_check_passes_with_a_note_that_is_not_duplicated_or_kept():
    result = AuditResult(checks=(measured("attention.border", 9.0),))
    ignore = only(("attention.border", CheckPolicy(gate="ignore")))
    twice = judge(judge(result, ignore), ignore)
    assert twice.check("attention.border").status == Status.PASS
    assert twice.check("attention.border").notes == [IGNORED_NOTE]
    rejudged = judge(twice, only(("attention.border", CheckPolicy(threshold=1.5))))
    assert rejudged.check("attention.border").status == Status.FAIL
    assert IGNORED_NOTE not in rejudged.check("attention.border").notes


def test_missing_required_check_fails_the_verdict():
    judged = judge(AuditResult(checks=()), only(("data.leakage", FAIL_AT_HALF)))
    assert judged.verdict == "fail"
    assert judged.verdict_reasons == ("data.leakage: required by the policy but absent from the run",)


def test_absent_required_lists_only_required_gated_checks_missing_from_the_run():
    policy = only(("data.leakage", FAIL_AT_HALF), ("site.image", WARN_AT_HALF),
                  ("attention.border", IGNORE),
                  ("masking.raw_vs_lung", CheckPolicy(threshold=0.5, required=False)),
                  ("data.confounding", FAIL_AT_HALF))
    judged = judge(AuditResult(checks=(measured("data.confounding", 0.1),)), policy)
    assert judged.absent_required == ("data.leakage", "site.image")
    assert judge(judged, only(("data.confounding", FAIL_AT_HALF))).absent_required == ()


def test_rejudging_with_a_stricter_policy_flips_verdict_and_exit_code():
    result = AuditResult(checks=(measured("data.confounding", 0.2, p_value=0.001),))
    lenient = judge(result, only(("data.confounding", CheckPolicy(threshold=0.3))))
    strict = judge(lenient, only(("data.confounding", CheckPolicy(threshold=0.1))))
    assert (lenient.verdict, exit_code(lenient)) == ("pass", 0)
    assert (strict.verdict, exit_code(strict)) == ("fail", 1)
    assert strict.policy["checks"]["data.confounding"]["threshold"] == 0.1


def test_exit_code_refuses_an_unjudged_result():
    with pytest.raises(ValueError, match="verdict 'unjudged'; judge it first"):
        exit_code(AuditResult(checks=()))


def test_layering_keeps_fields_an_override_does_not_set(tmp_path):
    overrides = PolicyConfig.model_validate({"checks": {"site.image": {"threshold": 0.9}}})
    reviewer = tmp_path / "p.yaml"
    reviewer.write_text("alpha: 0.01\nchecks:\n  data.leakage:\n    gate: warn\n")
    policy = load_policy(reviewer, overrides=overrides)
    default = load_policy()
    assert policy.checks["site.image"].threshold == 0.9
    assert policy.checks["site.image"].gate == default.checks["site.image"].gate
    assert policy.checks["data.leakage"].gate == "warn"
    assert policy.checks["data.leakage"].threshold == default.checks["data.leakage"].threshold
    assert policy.alpha == 0.01


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("checks:\n  site.image:\n    gate: block\n", r"checks\.site\.image\.gate: .*'fail', 'warn' or 'ignore'.*got 'block'"),
        ("checks:\n  site.imag:\n    threshold: 1\n", r"unknown check id\(s\) site\.imag; known checks: data\.confounding"),
        ("checks:\n  site.image:\n    treshold: 1\n", r"checks\.site\.image\.treshold: Extra inputs"),
        ("alpha: 2\n", r"alpha: Input should be less than 1"),
        ("- a\n- b\n", r"a policy must be a mapping .*got list"),
        ("checks:\n  site.image:\n    threshold: null\n", r"checks\.site\.image\.threshold: a check gated"),
    ],
)
def test_bad_policy_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_policy(path)


def test_unknown_check_in_config_overrides_is_named():
    overrides = PolicyConfig.model_validate({"checks": {"nope": {"threshold": 1}}})
    with pytest.raises(InputError, match=r"config policy\.checks: unknown check id\(s\) nope"):
        load_policy(overrides=overrides)


def test_missing_policy_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"missing\.yaml: cannot read policy file"):
        read_policy(tmp_path / "missing.yaml")
