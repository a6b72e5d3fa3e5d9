"""The probe interface and its one result type.

A probe is a small object with a ``check_id`` and ``run(context) -> CheckResult``. It reads
data and trained models from the ``ProbeContext``, asks the models layer (through the
context) when it needs a variant trained, and returns plain data. It never renders, never
reads files on its own and never applies a threshold: the gate judges results against the
policy, so a finished run can be re-judged without recomputing.

Every headline metric is oriented the same way: **larger means more shortcut**. The gate's
rule is therefore uniform: a check fires when ``metric > threshold`` and, where the check
has a p-value, the Holm-adjusted p-value is below the policy's ``alpha``.

Figure specs (``CheckResult.figures`` values) are plain data that ``reports.figures`` draws;
the kinds it knows:

- ``{"kind": "heatmap", "title", "row_labels", "col_labels", "values": [[...]], "fmt": "d"|".2f"}``
- ``{"kind": "bars", "title", "labels", "values", "ci_low", "ci_high", "reference": float|None,
  "ylabel"}`` (ci lists and reference optional)
- ``{"kind": "lines", "title", "x", "series": {name: [...]}, "xlabel", "ylabel"}``
- ``{"kind": "hist", "title", "series": {name: [...]}, "xlabel", "reference": float|None}``
- ``{"kind": "cam_gallery", "title", "npz": "<path relative to the run folder>",
  "captions": [...]}`` where the npz holds ``images`` (n,S,S) uint8, ``cams`` (n,h,w)
  float and optionally ``masks`` (n,S,S) uint8.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the models layer imports TensorFlow; keep this module light
    from audit.config import ProbesConfig
    from audit.data.dataset import Dataset, Splits
    from audit.stages import StageCache
    from models.trained import TrainedModel


class Status(StrEnum):
    MEASURED = "measured"  # computed, not yet judged by the gate
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_RUN = "not_run"  # could not run here (reason says why); not a crash
    ERROR = "error"  # the probe crashed; the traceback's last line is in ``reason``


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
    p_adjusted: float | None = None  # Holm across the run's checks, set by the pipeline
    threshold: float | None = None  # set by the gate from the policy
    gate: str | None = None  # "fail" | "warn" | "ignore", set by the gate
    summary: str = ""  # one plain sentence with the numbers, written by the probe
    explanation: str = ""  # what the finding means for the model, for a non-expert reader
    reason: str | None = None  # why not_run / error
    details: dict[str, Any] = field(default_factory=dict)  # secondary numbers
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name -> rows
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> figure spec
    notes: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.status not in (Status.NOT_RUN, Status.ERROR)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["ci"] = list(self.ci) if self.ci is not None else None
        return _json_safe(data)

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


def _json_safe(value: Any) -> Any:
    """NaN/inf become None and numpy scalars plain numbers, so results serialise as JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class ProbeContext:
    """What a probe may use. Built by the pipeline; probes never construct models or read files."""

    dataset: Dataset
    splits: Splits
    models: dict[str, TrainedModel]
    """Trained models keyed ``"<backbone>/<input_mode>"`` (e.g. ``"mobilenetv2/raw"``)."""
    audited: str
    """Key in ``models`` of the model under audit (its raw-input model)."""
    params: ProbesConfig
    cache: StageCache
    artifacts_dir: Path
    """Where a probe may write large figure data (``.npz``) that a figure spec refers to
    by a path relative to the run folder."""
    train_variant: Callable[..., TrainedModel] | None = None
    """``train_variant(train_idx, val_idx, *, input_mode=..., seed=..., backbone=...)`` trains
    a classifier with the run's settings through the models layer (cached). ``None`` when
    auditing an external model: probes that need retraining return ``not_run``."""
    image_features: Callable[[Any], Any] | None = None
    """``image_features(images_uint8_NxSxS) -> (N, D)`` float32 features of a frozen ImageNet
    backbone (cached by content)."""
    seed: int = 0


class Probe(Protocol):
    check_id: str
    title: str

    def run(self, context: ProbeContext) -> CheckResult: ...
