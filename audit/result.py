"""``AuditResult``: everything a finished run found, as plain data.

The pipeline builds it, the gate sets ``verdict`` and each check's status from the policy,
and the report writers render it. ``summary.json`` is its serialised form, so ``cxr-audit
gate`` can reload a run and re-judge it without recomputing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from audit.stages import atomic_write
from probes.base import CheckResult, _json_safe

SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class AuditResult:
    checks: tuple[CheckResult, ...]
    models: tuple[dict[str, Any], ...] = ()
    """Per trained model: key, backbone, input_mode, weights_origin, training_path, path,
    metrics (accuracy, per-class recall, confusion, macro F1, AUROC, with CIs), cv (per fold
    and mean) where cross-validated."""
    data: dict[str, Any] = field(default_factory=dict)
    """n_images, classes, sources, label x source counts, quarantined rows, mask origin."""
    segmentation: dict[str, Any] | None = None
    """U-Net quality (Dice/IoU overall and per source) when masks came from the U-Net."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Resolved config, library versions, data and model hashes, seeds, timings, stages."""
    verdict: str = "unjudged"  # "pass" | "fail" (set by the gate)
    verdict_reasons: tuple[str, ...] = ()
    policy: dict[str, Any] = field(default_factory=dict)  # the policy that judged it

    def check(self, check_id: str) -> CheckResult:
        for result in self.checks:
            if result.check_id == check_id:
                return result
        raise KeyError(check_id)

    def with_judgement(self, checks: tuple[CheckResult, ...], verdict: str,
                       reasons: tuple[str, ...], policy: dict[str, Any]) -> AuditResult:
        return replace(self, checks=checks, verdict=verdict, verdict_reasons=reasons, policy=policy)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe({
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict,
            "verdict_reasons": list(self.verdict_reasons),
            "checks": [c.to_dict() for c in self.checks],
            "models": list(self.models),
            "data": self.data,
            "segmentation": self.segmentation,
            "provenance": self.provenance,
            "policy": self.policy,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        return cls(
            checks=tuple(CheckResult.from_dict(c) for c in data["checks"]),
            models=tuple(data.get("models", ())),
            data=data.get("data", {}),
            segmentation=data.get("segmentation"),
            provenance=data.get("provenance", {}),
            verdict=data.get("verdict", "unjudged"),
            verdict_reasons=tuple(data.get("verdict_reasons", ())),
            policy=data.get("policy", {}),
        )

    def save_json(self, path: str | Path) -> None:
        with atomic_write(path) as handle:
            json.dump(self.to_dict(), handle, indent=2)

    @classmethod
    def load_json(cls, path: str | Path) -> AuditResult:
        return cls.from_dict(json.loads(Path(path).read_text()))
