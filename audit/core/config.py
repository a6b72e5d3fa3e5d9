"""The one validated configuration object of an audit run.

A run is described by a YAML file with six sections: ``data``, ``segmentation``,
``models``, ``probes``, ``policy`` and ``runtime``. Every field has a documented default,
so an empty file is a valid config. Unknown keys are rejected with the key's dotted path,
the allowed keys and what arrived (pydantic ``extra="forbid"``), which catches typos
before any expensive step runs.

Relative paths in the file are resolved against the folder of the YAML file, so an
example config refers to data relative to itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from audit.core.errors import InputError
from audit.core.io import read_text

ClassName = Literal["covid", "opacity", "other", "normal"]
CLASSES: tuple[str, ...] = get_args(ClassName)
"""The paper's four classes, in the order every model outputs them."""

InputMode = Literal["raw", "lung_masked", "lungs_removed", "border_only"]
Backbone = Literal["mobilenet", "mobilenetv2", "resnet50", "inceptionv3", "xception"]

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Strict: YAML's `true` or `2.5` for a count is a mistake to report, not to round to 1 or 2.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteTraits(_Section):
    """Acquisition traits a synthetic source carries outside the lungs (all on by default)."""

    markers: StrictBool = True  # burned-in laterality marker / text at a site-specific place
    borders: StrictBool = True  # collimation border or letterbox bars
    intensity: StrictBool = True  # site-specific exposure, contrast and noise profile


class SynthConfig(_Section):
    """The synthetic phantom generator (``audit.data.phantoms``, whose docstring has the details).

    Every class has ``n_per_class * n_sources`` images. Label ``i`` (``CLASSES`` order) has
    the home source ``i mod n_sources``; at ``confounding`` c a share ``1/k + c (1 - 1/k)``
    of each class (k sources) comes from its home source and the rest is spread evenly over
    the others: 0 gives ``n_per_class`` in every label x source cell, 1 puts each label in
    its home source only. ``signal_strength`` scales the disease signal (inside the lungs
    only; 1.0 is calibrated to be learnable but not trivial); site traits are drawn outside
    the lungs only. One image per synthetic patient, view PA, deterministic by ``seed``.
    """

    n_per_class: PositiveInt = 60  # images per class per source at confounding 0
    n_sources: Annotated[int, Field(ge=1, le=8)] = 4
    image_size: Annotated[int, Field(ge=64, le=1024)] = 256
    signal_strength: Annotated[float, Field(ge=0.0, le=3.0)] = 1.0
    confounding: Fraction = 1.0  # 0: sources balanced over labels, 1: each label its own source
    site_traits: SiteTraits = SiteTraits()
    seed: int = 0


class DataConfig(_Section):
    """Where the images come from and how they are split."""

    manifest: Path | None = None  # CSV/Parquet manifest; None -> generate ``synth`` data
    # Manifests of sources that did not train the model (``generalization.external``),
    # read, validated and decoded as ``manifest`` is.
    external: list[Path] = []
    synth: SynthConfig = SynthConfig()
    label_map: dict[str, ClassName] = {}
    image_size: Annotated[int, Field(ge=32, le=1024)] = 224
    test_fraction: Annotated[float, Field(gt=0.0, le=0.5)] = 0.15  # held-out test patients
    n_folds: Annotated[int, Field(ge=2, le=20)] = 5
    seed: int = 0


class SegmentationConfig(_Section):
    """Lung masks (``models.segment``): ``manifest`` (the manifest's only), ``unet`` (a
    U-Net trained on the manifest's masks, for every row), ``pretrained`` (the lung U-Net
    shipped with the package, for every row) or ``auto``: the manifest's mask where a row
    has one, the shipped U-Net's elsewhere. ``encoder`` to ``patience`` and ``seed``
    configure the ``unet`` training; ``batch_size`` is also the prediction batch and the
    lung fractions flag every mask, whatever its origin."""

    source: Literal["auto", "manifest", "unet", "pretrained"] = "auto"
    encoder: str = "mobilenetv2"
    encoder_weights: str = "none"  # "imagenet", "none" or a path to a Keras weights file
    image_size: Annotated[int, Field(ge=64, le=1024)] = 256
    # Filters of the five decoder blocks, deepest first (segmentation_models' default).
    decoder_filters: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt, PositiveInt] = (
        256, 128, 64, 32, 16)
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 8
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    min_lung_fraction: Fraction = 0.08  # quality flag below this lung area fraction
    max_lung_fraction: Fraction = 0.65  # quality flag above this
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.2  # held-out patients for Dice
    patience: PositiveInt = 4  # early-stopping epochs without improvement
    seed: int = 0


class SweepStep(_Section):
    """One hyper-parameter of the paper's one-after-the-other optimisation (Tables 3-5)."""

    param: Literal["learning_rate", "dropout", "unfreeze_blocks"]
    values: list[Annotated[float, Field(ge=0)]]


class ModelsConfig(_Section):
    """The paper's classifiers. Defaults are its Table 2."""

    backbones: Annotated[list[Backbone], Field(min_length=1)] = ["mobilenetv2"]
    alpha: Annotated[float, Field(gt=0, le=1.4)] = 1.0  # width multiplier (MobileNet family)
    weights: str = "imagenet"  # "imagenet", "none" or a path to a Keras weights file
    weights_dirs: list[Path] = []  # folders searched for Keras' cache-named ImageNet files
    input_modes: Annotated[list[InputMode], Field(min_length=1)] = ["raw", "lung_masked"]
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.3
    dense_units: PositiveInt = 256
    epochs: PositiveInt = 60
    batch_size: PositiveInt = 32
    unfreeze_blocks: Annotated[int, Field(ge=0)] = 0  # 0 = base completely frozen
    rotation_degrees: Annotated[float, Field(ge=0, le=45)] = 10.0
    augmented_views: Annotated[int, Field(ge=0)] = 2  # extra rotated copies per image (cached path)
    training_path: Literal["auto", "cached", "end_to_end"] = "auto"
    cross_validate: StrictBool = True
    seeds: Annotated[list[Annotated[int, Field(strict=True)]], Field(min_length=1)] = [0]
    sweep: list[SweepStep] = []  # `cxr-audit train`: examined in order, best value kept
    final_sizes: list[PositiveInt] = []  # `cxr-audit train`: images per non-COVID class, test runs

    @model_validator(mode="after")
    def _audits_a_raw_model(self) -> ModelsConfig:
        # The audited model is the raw-input one: the attention, site-embedding, masking
        # and generalization checks read it, and the masked modes are compared against it.
        if "raw" not in self.input_modes:
            raise ValueError(f"input_modes must include 'raw' (the audited model takes the "
                             f"radiograph as it is), got {list(self.input_modes)}")
        return self


class ProbesConfig(_Section):
    """Which checks run and their (non-threshold) parameters. Thresholds live in the policy."""

    # None runs every registered check (``cxr-audit checks`` lists them); the ids are
    # validated by the application, which knows the registry (this layer does not).
    checks: list[str] | None = None
    border_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.10
    cam_max_images: PositiveInt = 200
    n_permutations: PositiveInt = 480
    n_bootstrap: PositiveInt = 1000
    # The class the masking and ablation checks follow (the paper's COVID); the run refuses
    # a class the data holds no image of (``audit.pipeline.check_target_class``).
    target_class: ClassName = "covid"
    # Pairs of test images the swap checks build composites of (the surround swap: half
    # within a source, half across sources).
    swap_pairs: Annotated[int, Field(ge=2)] = 200
    ablation_sizes: list[PositiveInt] = [1000, 2000]  # per non-target class; scaled to the data
    ablation_seeds: list[int] = [0, 1, 2]
    site_features_backbone: Literal["audited", "imagenet"] = "imagenet"
    # performance.within_source measures a source only with this many test images (and
    # at least two labels among them): skill from fewer is mostly noise.
    within_source_min_images: PositiveInt = 10
    seed: int = 0


class CheckPolicy(_Section):
    """How the gate judges one check: a check *fires* when metric > threshold and, when
    the check has a p-value, its Holm-adjusted p-value is below ``alpha``."""

    gate: Literal["fail", "warn", "ignore"] = "fail"
    threshold: FiniteFloat | None = None  # .inf would silently switch a check off
    required: StrictBool = True  # a required check that did not run fails the gate
    # Why the policy departs from the check's default (shown in the report's sign-off).
    reason: str | None = None


class PolicyConfig(_Section):
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    checks: dict[str, CheckPolicy] = {}


class RuntimeConfig(_Section):
    backend: Literal["local", "ray"] = "local"
    workers: PositiveInt = 1
    ray_address: str | None = None
    cache_dir: Path | None = None  # default: <out>/cache
    quiet: StrictBool = False
    verify: StrictBool = False  # hash every file of a reused stage (``--verify``)


class AuditConfig(_Section):
    data: DataConfig = DataConfig()
    segmentation: SegmentationConfig = SegmentationConfig()
    models: ModelsConfig = ModelsConfig()
    probes: ProbesConfig = ProbesConfig()
    policy: PolicyConfig = PolicyConfig()
    runtime: RuntimeConfig = RuntimeConfig()


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = item.get("input")
        got_text = repr(got) if not isinstance(got, dict) else "a mapping"
        lines.append(f"  - {key}: {item['msg']} (got {got_text})")
    return "\n".join(lines)


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the config's relative paths relative to the YAML file's folder."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((base / value).resolve())
        return value

    data = raw.get("data")
    if isinstance(data, dict) and data.get("manifest"):
        data["manifest"] = fix(data["manifest"])
    if isinstance(data, dict) and isinstance(data.get("external"), list):
        data["external"] = [fix(p) for p in data["external"]]
    for section, key in (("models", "weights"), ("segmentation", "encoder_weights")):
        part = raw.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            if part[key] not in ("imagenet", "none"):
                part[key] = fix(part[key])
    models = raw.get("models")
    if isinstance(models, dict) and isinstance(models.get("weights_dirs"), list):
        models["weights_dirs"] = [fix(p) for p in models["weights_dirs"]]
    runtime = raw.get("runtime")
    if isinstance(runtime, dict) and runtime.get("cache_dir"):
        runtime["cache_dir"] = fix(runtime["cache_dir"])
    return raw


def parse_config(raw: dict[str, Any] | None, source: str = "<config>", base: Path | None = None) -> AuditConfig:
    """Validate a config mapping. Raises ``InputError`` naming each bad key."""
    raw = dict(raw or {})
    if base is not None:
        raw = _resolve_paths(raw, base)
    try:
        return AuditConfig.model_validate(raw)
    except ValidationError as error:
        raise InputError(format_validation_error(error, source)) from None


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    text = read_text(path, "config file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({error})") from None
    if raw is not None and not isinstance(raw, dict):
        raise InputError(f"{path}: a config must be a mapping of sections, got {type(raw).__name__}")
    return parse_config(raw, source=str(path), base=path.parent.resolve())


def dump_config(config: AuditConfig) -> str:
    """The fully resolved config as YAML (written to every run folder)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
