"""How the gate's policy reads for a report: which checks block the verdict.

The gate (``audit.gate``) judges; the writers only need to know, per check, whether a
check that did not run counts against the verdict, to show it as a failure.
"""

from __future__ import annotations

from typing import Any

from probes.base import CheckResult, Status


def is_required(check: CheckResult, policy: dict[str, Any]) -> bool:
    """Whether ``check`` not running fails the verdict under ``policy`` (its dict form).

    An unjudged result (no policy yet) uses the policy defaults: every check is required
    unless its gate is ``ignore``. A judged policy that does not name a check ignores it,
    as ``audit.gate.judge`` does.
    """
    rules = policy.get("checks") if isinstance(policy, dict) else None
    if not rules:
        return check.gate != "ignore"
    rule = rules.get(check.check_id)
    if rule is None:
        return False
    return bool(rule.get("required", True)) and rule.get("gate", "fail") != "ignore"


def blocks_verdict(check: CheckResult, policy: dict[str, Any]) -> bool:
    """Checks that explain a failing verdict: failed ones and required ones that did not run."""
    if check.status == Status.FAIL:
        return True
    return check.status in (Status.NOT_RUN, Status.ERROR) and is_required(check, policy)
