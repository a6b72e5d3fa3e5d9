"""The result types: one check's ``CheckResult`` and a run's ``AuditResult``, plain data.

The pipeline builds it; the gate sets each check's status, Holm-adjusted p-value and
``blocking``, the result's ``absent_required`` and ``verdict``; the report writers render
it. ``summary.json`` is its serialised form, so ``cxr-audit gate`` can reload a run and
re-judge it without recomputing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.core.errors import InputError
from audit.core.io import atomic_write

if TYPE_CHECKING:
    import numpy as np


class Status(StrEnum):
    MEASURED = "measured"  # computed, not yet judged by the gate
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_RUN = "not_run"  # could not run here (reason says why); not a crash
    ERROR = "error"  # the probe crashed; the traceback's last line is in ``reason``
    UNDERPOWERED = "underpowered"  # set by the gate: over threshold, but its p cannot reach alpha


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: plain, JSON-able data. Reports render it, the gate judges it."""

    check_id: str
    title: str
    status: Status = Status.MEASURED
    metric_name: str = ""
    metric: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    p_adjusted: float | None = None  # Holm across the checks the policy gates, set by the gate
    p_floor: float | None = None  # smallest p-value the test can give (permutation tests)
    threshold: float | None = None  # set by the gate from the policy
    gate: str | None = None  # "fail" | "warn" | "ignore", set by the gate
    blocking: bool = False  # set by the gate: this check is a reason the verdict fails
    summary: str = ""  # one plain sentence with the numbers, written by the probe
    explanation: str = ""  # what the finding means for the model, for a non-expert reader
    reason: str | None = None  # why not_run / error
    details: dict[str, Any] = field(default_factory=dict)  # secondary numbers
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name -> rows
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> figure spec
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, compare=False,
                                                        repr=False)
    """Name -> arrays a figure spec refers to (``"artifact": name``). Not part of
    ``to_dict``: the pipeline saves each as ``artifacts/<check_id>/<name>.npz`` in the run
    folder and sets the spec's ``"npz"`` to that path."""

    @property
    def ran(self) -> bool:
        return self.status not in (Status.NOT_RUN, Status.ERROR)

    def to_dict(self) -> dict[str, Any]:
        data = {item.name: getattr(self, item.name) for item in fields(self)
                if item.name != "artifacts"}
        data["status"] = str(self.status)
        data["ci"] = list(self.ci) if self.ci is not None else None
        return json_safe(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        data = dict(data)
        data["status"] = Status(data["status"])
        if data.get("ci") is not None:
            data["ci"] = tuple(data["ci"])
        return cls(**data)

    @classmethod
    def not_run(cls, check_id: str, title: str, reason: str) -> CheckResult:
        return cls(check_id=check_id, title=title, status=Status.NOT_RUN, reason=reason,
                   summary=f"Not run: {reason}")


def json_safe(value: Any) -> Any:
    """NaN/inf become None and numpy scalars plain numbers, so results serialise as JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


SCHEMA_VERSION = "2.1"


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
    audited: dict[str, Any] = field(default_factory=dict)
    """What was audited (``audit.audited``): ``model`` (file, sha256, identity, backbone,
    input mode), ``data`` (manifest name, rows, sha256, sources), ``tool`` (version, git
    commit), ``date`` (UTC ISO 8601) and, set by the gate, ``policy`` (name, sha256). File
    names and run-relative paths only."""
    verdict: str = "unjudged"  # "pass" | "fail" (set by the gate)
    verdict_reasons: tuple[str, ...] = ()
    absent_required: tuple[str, ...] = ()  # set by the gate: required checks the run lacks
    policy: dict[str, Any] = field(default_factory=dict)  # the policy that judged it

    def check(self, check_id: str) -> CheckResult:
        for result in self.checks:
            if result.check_id == check_id:
                return result
        raise KeyError(check_id)

    def with_judgement(self, checks: tuple[CheckResult, ...], verdict: str,
                       reasons: tuple[str, ...], absent_required: tuple[str, ...],
                       policy: dict[str, Any]) -> AuditResult:
        return replace(self, checks=checks, verdict=verdict, verdict_reasons=reasons,
                       absent_required=absent_required, policy=policy)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict,
            "verdict_reasons": list(self.verdict_reasons),
            "absent_required": list(self.absent_required),
            "checks": [c.to_dict() for c in self.checks],
            "models": list(self.models),
            "data": self.data,
            "segmentation": self.segmentation,
            "provenance": self.provenance,
            "audited": self.audited,
            "policy": self.policy,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "summary.json") -> AuditResult:
        """The result ``to_dict`` wrote.

        Args:
            data: The parsed ``summary.json``.
            source: File name used in the error message. Defaults to "summary.json".

        Raises:
            InputError: ``data`` was written with another schema version.
        """
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise InputError(f"{source}: summary schema version {version!r}, but this "
                             f"cxr-audit reads version {SCHEMA_VERSION!r}; re-run the audit "
                             "to write it anew")
        return cls(
            checks=tuple(CheckResult.from_dict(c) for c in data["checks"]),
            models=tuple(data.get("models", ())),
            data=data.get("data", {}),
            segmentation=data.get("segmentation"),
            provenance=data.get("provenance", {}),
            audited=data.get("audited", {}),
            verdict=data.get("verdict", "unjudged"),
            verdict_reasons=tuple(data.get("verdict_reasons", ())),
            absent_required=tuple(data.get("absent_required", ())),
            policy=data.get("policy", {}),
        )

    def save_json(self, path: str | Path) -> None:
        with atomic_write(path) as handle:
            json.dump(self.to_dict(), handle, indent=2)

    @classmethod
    def load_json(cls, path: str | Path) -> AuditResult:
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))
