"""The gate: a policy turns measured checks into a pass/fail verdict and an exit code.

Probes measure; only the gate judges. A check *fires* when its metric is larger than the
policy's threshold and, where it has a p-value, the Holm-adjusted p-value (or the raw one
when no adjusted value exists) is below ``alpha``. A firing check takes its gate's status
(``fail`` or ``warn``), a quiet one passes, an ignored one passes with a note. A required
check that could not run (``not_run``/``error``) or is missing from the run fails the
verdict unless its gate is ``ignore``. Judging never loses information: ``not_run`` and
``error`` statuses are kept, and a judged result can be judged again with another policy.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import yaml
from pydantic import ValidationError

from audit.core.config import CheckPolicy, PolicyConfig, format_validation_error
from audit.core.errors import InputError
from audit.core.result import AuditResult
from probes.base import CheckResult, Status
from probes.registry import check_ids, specs

IGNORED_NOTE = "Not gated: the policy ignores this check."
MEASURED_STATUSES = (Status.MEASURED, Status.PASS, Status.WARN, Status.FAIL)


def default_policy() -> PolicyConfig:
    """The default policy: each registered check's ``CheckSpec.default`` rule, and the
    ``PolicyConfig`` default ``alpha``.

    The thresholds were set from measured runs: synthetic clean controls (confounding 0, no
    site traits; none may fire), confounded phantoms and planted markers (must fire), and
    the real set (README, "Measured").
    """
    return PolicyConfig(checks={
        spec.id: CheckPolicy(gate=spec.default.level, threshold=spec.default.threshold,
                             required=spec.default.required)
        for spec in specs()})


def read_policy(path: str | Path) -> PolicyConfig:
    """Read one policy file as is (no layering). Raises ``InputError`` naming bad keys."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read policy file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({error})") from None
    return policy_from_dict(raw, str(path))


def policy_from_dict(raw: object, source: str) -> PolicyConfig:
    """Validate a policy mapping (a file's content, or the one stored in ``summary.json``).

    Raises:
        InputError: naming ``source`` and each bad key or unknown check id.
    """
    if raw is not None and not isinstance(raw, dict):
        raise InputError(f"{source}: a policy must be a mapping with 'alpha' and 'checks', "
                         f"got {type(raw).__name__}")
    try:
        policy = PolicyConfig.model_validate(raw or {})
    except ValidationError as error:
        raise InputError(format_validation_error(error, source)) from None
    _check_ids_known(policy, source)
    return policy


def merge_policies(base: PolicyConfig, override: PolicyConfig) -> PolicyConfig:
    """``base`` with the fields ``override`` sets explicitly laid on top, check by check."""
    checks = dict(base.checks)
    for check_id, rule in override.checks.items():
        given = rule.model_dump(exclude_unset=True)
        start = checks[check_id].model_dump() if check_id in checks else {}
        checks[check_id] = CheckPolicy.model_validate({**start, **given})
    alpha = override.alpha if "alpha" in override.model_fields_set else base.alpha
    return PolicyConfig(alpha=alpha, checks=checks)


def load_policy(path: str | Path | None = None,
                overrides: PolicyConfig | None = None) -> PolicyConfig:
    """The policy a run is judged by: the default (``default_policy``, from the check specs),
    then ``overrides`` (a config's ``policy`` section), then the file at ``path`` (a
    reviewer's policy has the last word).

    Args:
        path: A policy YAML file layered on top. Defaults to None (none).
        overrides: Per-check overrides, usually ``config.policy``. Defaults to None.

    Raises:
        InputError: an unreadable file, an unknown key or check id, or a gating check
            without a threshold.
    """
    policy = default_policy()
    if overrides is not None:
        _check_ids_known(overrides, "config policy.checks")
        policy = merge_policies(policy, overrides)
    if path is not None:
        policy = merge_policies(policy, read_policy(path))
    _check_thresholds_set(policy, str(path or "the policy"))
    return policy


def _check_ids_known(policy: PolicyConfig, source: str) -> None:
    known = check_ids()
    unknown = sorted(set(policy.checks) - set(known))
    if unknown:
        raise InputError(f"{source}: unknown check id(s) {', '.join(unknown)}; "
                         f"known checks: {', '.join(known)}")


def _check_thresholds_set(policy: PolicyConfig, source: str) -> None:
    missing = [cid for cid, rule in policy.checks.items()
               if rule.gate != "ignore" and rule.threshold is None]
    if missing:
        raise InputError(f"{source}: checks.{missing[0]}.threshold: a check gated "
                         f"'fail' or 'warn' needs a number, got none")


def judge(result: AuditResult, policy: PolicyConfig) -> AuditResult:
    """Judge every check of ``result`` against ``policy`` and set the verdict.

    Returns a new ``AuditResult``; the verdict is ``"fail"`` when any check failed, a
    required check did not run, or a required check is missing, and the reasons name them.
    """
    judged, failures, warnings = [], [], []
    for check in result.checks:
        rule = policy.checks.get(check.check_id, CheckPolicy(threshold=None, gate="ignore",
                                                             required=False))
        check, problem = _judge_check(check, rule, policy.alpha)
        judged.append(check)
        if problem and check.status == Status.WARN:
            warnings.append(f"warning: {problem}")
        elif problem:
            failures.append(problem)
    present = {check.check_id for check in result.checks}
    for check_id, rule in policy.checks.items():
        if check_id not in present and rule.required and rule.gate != "ignore":
            failures.append(f"{check_id}: required by the policy but absent from the run")
    verdict = "fail" if failures else "pass"
    return result.with_judgement(tuple(judged), verdict, tuple(failures + warnings),
                                 policy.model_dump(mode="json"))


def _judge_check(check: CheckResult, rule: CheckPolicy,
                 alpha: float) -> tuple[CheckResult, str | None]:
    """The judged check and, if it failed or warned, a one-line reason naming it."""
    notes = [note for note in check.notes if note != IGNORED_NOTE]
    check = replace(check, threshold=rule.threshold, gate=rule.gate, notes=notes)
    if rule.gate == "ignore":
        status = Status.PASS if check.status in MEASURED_STATUSES else check.status
        return replace(check, status=status, notes=[*notes, IGNORED_NOTE]), None
    if check.status not in MEASURED_STATUSES:
        if not rule.required:
            return check, None
        return check, f"{check.check_id}: {check.status} ({check.reason}) and required by the policy"
    fired, why = _fires(check, rule.threshold, alpha)
    if not fired:
        return replace(check, status=Status.PASS), None
    return replace(check, status=Status(rule.gate)), f"{check.check_id}: {why}"


def _fires(check: CheckResult, threshold: float, alpha: float) -> tuple[bool, str]:
    metric = check.metric
    if metric is None or not math.isfinite(metric):
        return True, "measured no metric, so it cannot be shown to be safe"
    if metric <= threshold:
        return False, ""
    p_value = check.p_adjusted if check.p_adjusted is not None else check.p_value
    name = check.metric_name or "metric"
    if p_value is None:
        return True, f"{name} {metric:.3g} > threshold {threshold:g}"
    if p_value >= alpha:
        return False, ""
    return True, f"{name} {metric:.3g} > threshold {threshold:g} (p = {p_value:.3g} < {alpha:g})"


def exit_code(result: AuditResult) -> int:
    """0 for a passing verdict, 1 for a failing one."""
    if result.verdict not in ("pass", "fail"):
        raise ValueError(f"result has verdict {result.verdict!r}; judge it first "
                         "(expected 'pass' or 'fail')")
    return 0 if result.verdict == "pass" else 1
