"""The probe interface and its one result type.

A probe is a small object with a ``check_id`` and ``run(context) -> CheckResult``. It reads
data and trained models from the ``ProbeContext``, asks the models layer (through the
context's services, cached by the pipeline) for variants, features and Grad-CAMs, and
returns plain data: numbers, tables, figure specs and the arrays a figure draws
(``CheckResult.artifacts``). It never renders, never reads or writes files and never
applies a threshold: the gate judges results against the policy, so a finished run can be
re-judged without recomputing.

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
- ``{"kind": "cam_gallery", "title", "artifact": "<name>", "captions": [...]}`` where
  ``CheckResult.artifacts[<name>]`` holds ``images`` (n,S,S) uint8, ``cams`` (n,h,w) float
  and optionally ``masks`` (n,S,S) uint8. The pipeline saves those arrays once, as
  ``artifacts/<check_id>/<name>.npz`` in the run folder, and adds that run-relative path
  to the spec as ``"npz"``, which the report reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from audit.core.result import CheckResult, Status

if TYPE_CHECKING:  # the models layer imports TensorFlow; keep this module light
    import numpy as np

    from audit.core.config import ProbesConfig
    from audit.data.dataset import Dataset, Splits
    from models.gradcam import Explanations
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
    train_variants: Callable[[list[VariantRequest]], list[TrainedModel]] | None = None
    """``train_variants(requests)`` trains one classifier per ``models.train.VariantRequest``
    with the run's settings (cached; the run's runner may train them in parallel, so ask
    for all at once) and returns them in request order. ``None`` when auditing an
    external model: probes that need retraining return ``not_run``."""
    image_features: Callable[[Any], Any] | None = None
    """``image_features(images_uint8_NxSxS) -> (N, D)`` float32 features of a frozen ImageNet
    backbone (cached by content)."""
    explanations: Callable[[str, np.ndarray], Explanations] | None = None
    """``explanations(model_key, rows)`` -> raw Grad-CAMs of ``models[model_key]`` for the
    dataset's ``rows``: each image's predicted class and its maps for the predicted and the
    true class (``models.gradcam.explain_rows``, cached by the pipeline per model and rows)."""
    seed: int = 0


class Probe(Protocol):
    check_id: str
    title: str

    def run(self, context: ProbeContext) -> CheckResult: ...


__all__ = ["CheckResult", "Probe", "ProbeContext", "Status"]
