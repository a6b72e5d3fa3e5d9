"""The check interface: a ``CheckSpec`` per check, the ``ProbeContext`` it reads, its result.

A check is one module of ``probes.checks`` exporting ``SPEC`` (a ``CheckSpec``: what the
check asks, what its metric means, its default gate and what it needs) and
``run(context) -> CheckResult``. ``run`` reads data and trained models from the
``ProbeContext``, asks the models layer (through the context's services, cached by the
pipeline) for variants, features and Grad-CAMs, and returns plain data: numbers, tables,
figure specs and the arrays a figure draws (``CheckResult.artifacts``). It never renders,
never reads or writes files and never applies a threshold: the gate judges results against
the policy, so a finished run can be re-judged without recomputing. The registry, the
config's check ids, the default policy, ``cxr-audit checks``, the report's questions and
JUnit's test names all come from the specs.

Every headline metric is oriented the same way: **larger means more shortcut**. The gate's
rule is therefore uniform: a check fires when ``metric > threshold`` and, where the check
has a p-value, the Holm-adjusted p-value is below the policy's ``alpha``.

Figure specs (``CheckResult.figures`` values) are plain data that ``reports.figures`` draws;
the kinds it knows:

- ``{"kind": "heatmap", "title", "row_labels", "col_labels", "values": [[...]], "fmt": "d"|".2f",
  "center": float, "colorbar_label"}`` (``center``, optional: a ratio's neutral value, drawn
  with a diverging colormap centred on it)
- ``{"kind": "bars", "title", "labels", "values", "ci_low", "ci_high", "reference": float|None,
  "reference_label", "metric_scale": bool, "ylabel"}`` (all but labels and values optional;
  ``reference``: a dashed line, chance or uniform unless ``reference_label`` names it;
  ``metric_scale`` false: the bars are not the check's metric (accuracies behind an
  accuracy drop), so the report draws no gate threshold beside the reference)
- ``{"kind": "lines", "title", "x", "series": {name: [...]}, "xlabel", "ylabel"}``
- ``{"kind": "hist", "title", "series": {name: [...]}, "xlabel", "reference": float|None}``
- ``{"kind": "cam_gallery", "title", "artifact": "<name>", "captions": [...], "sources": [...]}``
  where ``CheckResult.artifacts[<name>]`` holds ``images`` (n,S,S) uint8, ``cams`` (n,h,w)
  float, optionally ``masks`` (n,S,S) uint8 and ``twin_cams`` (n,h,w): the lung-masked
  twin model's maps of the same images. The pipeline saves those arrays once, as
  ``artifacts/<check_id>/<name>.npz`` in the run folder, and adds that run-relative path
  to the spec as ``"npz"``, which the report reads.
- ``{"kind": "image_gallery", "title", "artifact": "<name>", "captions": [...], "columns": int,
  "caption": str}`` (``caption``, optional, for any kind: how to read the figure, shown
  under it)
  where the artifact holds ``images`` (n,S,S) uint8 and optionally ``masks`` (n,S,S) uint8
  (drawn as outlines), saved and read as for ``cam_gallery``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from audit.core.result import CheckResult, Status

if TYPE_CHECKING:  # the models layer imports TensorFlow; keep this module light
    import numpy as np

    from audit.core.config import ProbesConfig
    from audit.data.dataset import Dataset, Splits
    from models.explanations import Explanations
    from models.train import VariantRequest
    from models.trained import TrainedModel

GateLevel = Literal["fail", "warn", "ignore"]
Need = Literal["masks", "two_sources", "retraining", "lung_masked_model", "external_data"]
PValueKind = Literal["permutation", "analytic", "none"]
"""How a check's p-value is computed: ``"permutation"`` (its smallest value is
``1 / (probes.n_permutations + 1)``, fixed by the run's settings), ``"analytic"`` (a closed-form
or exact test with no floor the settings impose) or ``"none"`` (the check reports none and
stays out of the Holm family)."""
NEEDS = MappingProxyType({
    "masks": "lung masks: the manifest's or a segmenter's (see segmentation.source)",
    "two_sources": "images from at least two sources",
    "retraining": "retraining the classifier (not possible for an external model)",
    "lung_masked_model": "a classifier of the same backbone trained on lung-masked images",
    "external_data": "images of sources that did not train the model, listed in data.external",
})
"""Each prerequisite a check may declare, with what it means for a reader."""
CHECK_ID = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Gate:
    """A check's default rule in the policy: the gate applies it, the spec only states it.

    Attributes:
        level: What a firing check becomes: ``"fail"``, ``"warn"``, or ``"ignore"`` (never
            gated).
        threshold: The check fires when its metric is larger (and its p-value, if any, is
            below the policy's alpha).
        required: Whether the check not running fails the verdict.
    """

    level: GateLevel
    threshold: float
    required: bool = True

    def __post_init__(self) -> None:
        if self.level not in get_args(GateLevel):
            raise ValueError(f"Gate level must be one of {', '.join(get_args(GateLevel))}; "
                             f"got {self.level!r}")


@dataclass(frozen=True)
class CheckSpec:
    """Everything about a check except how it computes: the one definition of the check.

    Attributes:
        id: ``"<family>.<name>"``, e.g. ``"site.image"``: the key in configs, policies,
            reports and JUnit.
        title: A short heading (the result's and the report section's title).
        question: The reviewer's question the check answers, in plain words.
        metric: What the headline metric measures; larger always means more shortcut.
        default: The default policy's rule for this check.
        order: Position in listings, reports and runs (ascending; ties by id): data checks
            first, the checks that retrain last.
        needs: Prerequisites from ``NEEDS``; without one the check reports ``not_run``.
        p_value: How the check's p-value is computed (``PValueKind``); the run refuses a
            ``probes.n_permutations`` too small for a gated permutation check to fire.
        explanation: What a finding means, for a reader who is not an expert (the
            result's explanation, which a check may extend with what it measured).
        next_steps: What to do when the check fires or cannot run.
        follows_target_class: Whether the check measures one class, ``probes.target_class``
            (the run refuses a target class the data holds no image of).
    """

    id: str
    title: str
    question: str
    metric: str
    default: Gate
    order: int
    needs: tuple[Need, ...] = ()
    p_value: PValueKind = "none"
    explanation: str = ""
    next_steps: str = ""
    follows_target_class: bool = False

    def __post_init__(self) -> None:
        if not CHECK_ID.match(self.id):
            raise ValueError(f"check id must look like 'family.name' (lower case, digits, "
                             f"underscores); got {self.id!r}")
        unknown = [need for need in self.needs if need not in NEEDS]
        if unknown:
            raise ValueError(f"{self.id}: unknown prerequisite(s) {', '.join(unknown)}; "
                             f"known: {', '.join(NEEDS)}")
        if self.p_value not in get_args(PValueKind):
            raise ValueError(f"{self.id}: p_value must be one of "
                             f"{', '.join(get_args(PValueKind))}; got {self.p_value!r}")

    def not_run(self, reason: str) -> CheckResult:
        """This check's ``not_run`` result with ``reason``."""
        return CheckResult.not_run(self.id, self.title, reason)

    def result(self, **fields: Any) -> CheckResult:
        """A measured result of this check: id, title and explanation from the spec unless
        ``fields`` (the other ``CheckResult`` fields) give the explanation."""
        return CheckResult(check_id=self.id, title=self.title,
                           **{"explanation": self.explanation, **fields})


@dataclass
class ProbeContext:
    """What a check may use. Built by the pipeline; checks never construct models or read files."""

    dataset: Dataset
    splits: Splits
    models: dict[str, TrainedModel]
    """Trained models keyed ``"<backbone>/<input_mode>"`` (e.g. ``"mobilenetv2/raw"``)."""
    audited: str
    """Key in ``models`` of the model under audit (its raw-input model)."""
    params: ProbesConfig
    """The run's ``probes`` settings; ``params.target_class`` is the class the checks that
    follow one class (``CheckSpec.follows_target_class``) measure."""
    train_variants: Callable[[list[VariantRequest]], list[np.ndarray]] | None = None
    """``train_variants(requests)`` trains one classifier per ``models.train.VariantRequest``
    with the run's settings (cached; the run's runner may train them in parallel, so ask
    for all at once) and returns, in request order, each one's class probabilities of its
    ``score_rows``: ``(len(score_rows), classes)`` in the dataset's class order. The
    classifiers themselves stay where they were trained. ``None`` when auditing an
    external model: checks that need retraining return ``not_run``."""
    mode_features: Callable[[str], np.ndarray] | None = None
    """``mode_features(mode) -> (len(dataset), D)`` float32 features of a frozen ImageNet
    backbone for every dataset row shown in input ``mode`` (``models.inputs.ModeImages``,
    ``params.border_fraction``). The pipeline caches them as the same stage as the cached
    classifiers' training features of that backbone and mode, so a mode the run trains on
    costs no forward pass here; rows a mode cannot show (no lung mask) get features too,
    which a check leaves out."""
    explanations: Callable[[str, np.ndarray], Explanations] | None = None
    """``explanations(model_key, rows)`` -> raw Grad-CAMs of ``models[model_key]`` for the
    dataset's ``rows``: each image's predicted class and its maps for the predicted and the
    true class (``models.gradcam.explain_rows``, cached by the pipeline per model and rows)."""
    predict_images: Callable[[str, np.ndarray, np.ndarray | None], np.ndarray] | None = None
    """``predict_images(model_key, images, masks)`` -> class probabilities ``(n, classes)``
    of ``models[model_key]`` for uint8 ``(n, S, S)`` images that are no dataset rows (the
    swap checks' composites; ``masks`` their lung masks, or None), in the model's class
    order (cached by the pipeline per model and image content)."""
    external: tuple[Dataset, ...] = ()
    """The ``data.external`` manifests, one ``Dataset`` each, validated, quarantined and
    decoded at the size of ``dataset``: sources that did not train the audited model.
    Empty when none is configured."""
    seed: int = 0


def class_word(name: str) -> str:
    """How a check's texts name a class: ``COVID`` as the paper writes it, any other class
    quoted (``'other'``), since ``other`` and ``normal`` also read as plain words."""
    return "COVID" if name == "covid" else f"'{name}'"


def signed(value: float, digits: int = 2) -> str:
    """``value`` with its sign, rounded first so a tiny negative reads ``+0.00``, not ``-0.00``."""
    return f"{round(float(value), digits) + 0.0:+.{digits}f}"


class Check(Protocol):
    """The interface of a check module of ``probes.checks`` (a module satisfies it)."""

    SPEC: CheckSpec

    def run(self, context: ProbeContext) -> CheckResult: ...


__all__ = ["NEEDS", "Check", "CheckResult", "CheckSpec", "Gate", "PValueKind", "ProbeContext",
           "Status", "class_word", "signed"]
