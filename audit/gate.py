"""The gate: a policy turns measured checks into a pass/fail verdict and an exit code.

Probes measure; only the gate judges. The checks the policy gates (not ``ignore``) that ran
and have a p-value form one Holm family; the gate adjusts their p-values itself, from the
raw ones, so re-judging with another policy re-forms the family. A check *fires* when its
metric is larger than the policy's threshold and, where it has a p-value, its Holm-adjusted
p-value is below ``alpha``. A firing check takes its gate's status (``fail`` or ``warn``),
a quiet one passes, an ignored one passes with a note. A required check that could not run
(``not_run``/``error``) or is missing from the run fails the verdict unless its gate is
``ignore``. A gated check whose metric is over its threshold but whose p-value could not
have reached ``alpha`` (its floor, ``p_floor``, times the Holm family size is ``alpha`` or
more: too few permutations) is ``underpowered``, never ``pass``, and counts as a required
check that could not decide. The gate marks each check that fails the verdict ``blocking``
and lists the missing required checks in ``absent_required``, so reports only read. Judging
never loses information: ``not_run`` and ``error`` statuses are kept, and a judged result
can be judged again with another policy.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import yaml
from pydantic import ValidationError
from statsmodels.stats.multitest import multipletests

from audit.core.cache import stable_hash
from audit.core.config import CheckPolicy, PolicyConfig, format_validation_error
from audit.core.errors import InputError
from audit.core.io import read_text
from audit.core.result import AuditResult
from probes.base import CheckResult, Status
from probes.registry import check_ids, specs
from probes.stats import permutation_p_floor

IGNORED_NOTE = "Not gated: the policy ignores this check."
PERMUTATION_MARGIN = 2
"""A run must let a gated permutation check fire with this many times its smallest p-value
(``1 / (n_permutations + 1)``) after Holm over the whole family: a strong effect that a
null permutation ties once still fires, and one more check in the family does not switch
the rest off."""


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
    """Read one policy file as is (no layering).

    Raises:
        InputError: naming the file and an unreadable or non-UTF-8 file, bad YAML, a bad
            key or an unknown check id.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(read_text(path, "policy file"))
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


def policy_of_run(result: AuditResult, source: str) -> PolicyConfig:
    """The policy a finished run was judged by (``summary.json``'s ``policy``), validated
    as a policy file is.

    Raises:
        InputError: naming ``source`` when the run holds no policy (it was never judged),
            or a bad key, unknown check id or gating check without a threshold.
    """
    if not result.policy:
        raise InputError(f"{source}: holds no policy (the run was never judged); "
                         "judge it by the default policy or give --policy FILE")
    policy = policy_from_dict(result.policy, source)
    _check_thresholds_set(policy, source)
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


UNGATED = CheckPolicy(threshold=None, gate="ignore", required=False)
"""How the gate judges a check the policy does not name."""


def check_permutations(policy: PolicyConfig, enabled: tuple[str, ...],
                       n_permutations: int) -> None:
    """Refuse settings under which a gated permutation check could never fire.

    The family is the enabled checks the policy gates that report a p-value
    (``CheckSpec.p_value``); Holm multiplies the smallest p by up to its size ``m``, and a
    permutation p-value is never below ``1 / (n_permutations + 1)``. A run needs
    ``PERMUTATION_MARGIN * m / (n_permutations + 1) < alpha``.

    Raises:
        InputError: naming ``probes.n_permutations``, the floor, the family and the
            smallest number of permutations that works.
    """
    gated = [spec for spec in specs() if spec.id in enabled and spec.p_value != "none"
             and policy.checks.get(spec.id, UNGATED).gate != "ignore"]
    if not any(spec.p_value == "permutation" for spec in gated):
        return
    family, alpha = len(gated), policy.alpha
    if PERMUTATION_MARGIN * family * permutation_p_floor(n_permutations) < alpha:
        return
    needed = math.floor(PERMUTATION_MARGIN * family / alpha)
    while PERMUTATION_MARGIN * family * permutation_p_floor(needed) >= alpha:
        needed += 1
    floor = permutation_p_floor(n_permutations)
    raise InputError(
        f"probes.n_permutations: {n_permutations} permutations give p >= 1/"
        f"{n_permutations + 1} = {floor:.2g}, and Holm over {family} gated checks with a "
        f"p-value lifts that to {min(1.0, family * floor):.2g}; a check must be able to "
        f"reach alpha {alpha:g} with {PERMUTATION_MARGIN}x that floor, so use at least "
        f"{needed} (or ignore checks in the policy, or raise alpha)")


def policy_name(path: str | Path | None, overrides: PolicyConfig | None = None) -> str:
    """How the report names the policy ``load_policy(path, overrides)`` builds: ``default``,
    with the config's policy section and the file's name when they add anything."""
    parts = ["default"]
    if overrides is not None and (overrides.checks or "alpha" in overrides.model_fields_set):
        parts.append("the config's policy section")
    if path is not None:
        parts.append(Path(path).name)
    return " + ".join(parts)


def policy_identity(policy: PolicyConfig, name: str) -> dict[str, str]:
    """``{"name", "sha256"}``: the SHA-256 of the policy's canonical JSON (keys sorted), so
    two runs judged by the same rules show the same hash whatever file they came from."""
    return {"name": name, "sha256": stable_hash(policy.model_dump(mode="json"), length=64)}


def judge(result: AuditResult, policy: PolicyConfig, name: str = "default") -> AuditResult:
    """Judge every check of ``result`` against ``policy`` and set the verdict.

    Every check's ``p_adjusted``, ``blocking``, status, threshold and gate are recomputed
    from its measurement and ``policy``; nothing a previous judgement wrote is read back.
    ``result.audited["policy"]`` becomes ``policy_identity(policy, name)``.

    Args:
        result: The measured (or previously judged) audit.
        policy: The rules.
        name: How the report names the policy (``policy_name``). Defaults to "default".

    Returns:
        A new ``AuditResult``; the verdict is ``"fail"`` when any check is blocking (it
        failed, or it is required and did not run) or a required check is missing, and the
        reasons name them.
    """
    rules = [policy.checks.get(check.check_id, UNGATED) for check in result.checks]
    adjusted = _holm_over_gated(result.checks, rules)
    family = sum(p_adjusted is not None for p_adjusted in adjusted)
    judged, failures, warnings = [], [], []
    for check, rule, p_adjusted in zip(result.checks, rules, adjusted, strict=True):
        check, problem = _judge_check(replace(check, p_adjusted=p_adjusted), rule, policy.alpha,
                                      family)
        judged.append(check)
        if check.blocking:
            failures.append(problem)
        elif problem:
            warnings.append(f"warning: {problem}")
    present = {check.check_id for check in result.checks}
    absent = tuple(check_id for check_id, rule in policy.checks.items()
                   if check_id not in present and rule.required and rule.gate != "ignore")
    failures += [f"{check_id}: required by the policy but absent from the run"
                 for check_id in absent]
    verdict = "fail" if failures else "pass"
    judged_result = result.with_judgement(tuple(judged), verdict, tuple(failures + warnings),
                                          absent, policy.model_dump(mode="json"))
    return replace(judged_result,
                   audited={**result.audited, "policy": policy_identity(policy, name)})


def _holm_over_gated(checks: tuple[CheckResult, ...],
                     rules: list[CheckPolicy]) -> list[float | None]:
    """Holm-adjusted p-values of the family the policy gates, check by check.

    The family is the checks whose rule is not ``ignore``, that ran and that have a
    p-value; every other check gets None, so an ignored check never loosens or tightens
    the others' correction.

    Args:
        checks: The run's checks (their raw ``p_value`` is used).
        rules: Each check's policy rule, in the same order.
    """
    family = [i for i, (check, rule) in enumerate(zip(checks, rules, strict=True))
              if rule.gate != "ignore" and check.ran and check.p_value is not None]
    adjusted: list[float | None] = [None] * len(checks)
    if family:
        corrected = multipletests([checks[i].p_value for i in family], method="holm")[1]
        for i, p_adjusted in zip(family, corrected, strict=True):
            adjusted[i] = float(p_adjusted)
    return adjusted


def _judge_check(check: CheckResult, rule: CheckPolicy, alpha: float,
                 family: int) -> tuple[CheckResult, str | None]:
    """The judged check (``blocking`` set) and, if it failed, warned, or blocks the verdict
    without running or deciding, a one-line reason naming it.

    Args:
        check: The check, its ``p_adjusted`` already set.
        rule: Its policy rule.
        alpha: The policy's significance level.
        family: The size of the Holm family.
    """
    notes = [note for note in check.notes if note != IGNORED_NOTE]
    check = replace(check, threshold=rule.threshold, gate=rule.gate, notes=notes, blocking=False)
    if check.ran:  # a measured check's reason is the gate's (why it is underpowered)
        check = replace(check, reason=None)
    if rule.gate == "ignore":
        status = Status.PASS if check.ran else check.status
        return replace(check, status=status, notes=[*notes, IGNORED_NOTE]), None
    if not check.ran:
        if not rule.required:
            return check, None
        return (replace(check, blocking=True),
                f"{check.check_id}: {check.status} ({check.reason}) and required by the policy")
    fired, why = _fires(check, rule.threshold, alpha, family)
    if not fired and why:
        check = replace(check, status=Status.UNDERPOWERED, reason=why, blocking=rule.required)
        return check, f"{check.check_id}: underpowered ({why})"
    if not fired:
        return replace(check, status=Status.PASS), None
    status = Status(rule.gate)
    return replace(check, status=status, blocking=status == Status.FAIL), f"{check.check_id}: {why}"


def _fires(check: CheckResult, threshold: float, alpha: float, family: int) -> tuple[bool, str]:
    """Whether a gated, measured check fires, judged on its Holm-adjusted p-value, and why.

    A check that does not fire with a reason is underpowered: its metric is over the
    threshold but ``family`` times its ``p_floor`` (what Holm may make of its smallest
    possible p-value) is not below ``alpha``, so its p-value says nothing.
    """
    metric = check.metric
    if metric is None or not math.isfinite(metric):
        return True, "measured no metric, so it cannot be shown to be safe"
    if metric <= threshold:
        return False, ""
    p_adjusted = check.p_adjusted
    name = check.metric_name or "metric"
    if p_adjusted is None:
        return True, f"{name} {metric:.3g} > threshold {threshold:g}"
    if p_adjusted >= alpha:
        return False, _underpowered(check, family, alpha)
    return True, f"{name} {metric:.3g} > threshold {threshold:g} (p = {p_adjusted:.3g} < {alpha:g})"


def _underpowered(check: CheckResult, family: int, alpha: float) -> str:
    """Why ``check``'s p-value could not have reached ``alpha`` in a family of ``family``
    checks, or "" when it could."""
    floor = check.p_floor
    if floor is None or min(1.0, family * floor) < alpha:
        return ""
    return (f"{check.metric_name or 'metric'} {check.metric:.3g} > threshold "
            f"{check.threshold:g}, but its permutation p-value cannot go below {floor:.2g} "
            f"and Holm over {family} gated checks lifts that to {min(1.0, family * floor):.2g}"
            f" >= alpha {alpha:g}: raise probes.n_permutations and re-run")


def exit_code(result: AuditResult) -> int:
    """0 for a passing verdict, 1 for a failing one."""
    if result.verdict not in ("pass", "fail"):
        raise ValueError(f"result has verdict {result.verdict!r}; judge it first "
                         "(expected 'pass' or 'fail')")
    return 0 if result.verdict == "pass" else 1
