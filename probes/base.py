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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from audit.core.result import CheckResult, Status

if TYPE_CHECKING:  # the models layer imports TensorFlow; keep this module light
    from audit.core.cache import StageCache
    from audit.core.config import ProbesConfig
    from audit.data.dataset import Dataset, Splits
    from models.train import VariantRequest
    from models.trained import TrainedModel


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
    train_variants: Callable[[list[VariantRequest]], list[TrainedModel]] | None = None
    """``train_variants(requests)`` trains one classifier per ``models.train.VariantRequest``
    with the run's settings (cached; the run's runner may train them in parallel, so ask
    for all at once) and returns them in request order. ``None`` when auditing an
    external model: probes that need retraining return ``not_run``."""
    image_features: Callable[[Any], Any] | None = None
    """``image_features(images_uint8_NxSxS) -> (N, D)`` float32 features of a frozen ImageNet
    backbone (cached by content)."""
    seed: int = 0


class Probe(Protocol):
    check_id: str
    title: str

    def run(self, context: ProbeContext) -> CheckResult: ...


__all__ = ["CheckResult", "Probe", "ProbeContext", "Status"]
