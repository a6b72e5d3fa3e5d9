"""Test scaffolding for the probes: ProbeContexts built from synthetic phantoms.

- ``synth_data``: a phantom ``Dataset`` (tiny images) plus label-stratified ``Splits``.
- ``pixel_features``: a deterministic frozen "backbone": block-averaged pixels.
- ``mobilenet_features``: the real frozen ImageNet MobileNetV2 (alpha 0.35) from
  ``../shared/weights``, or None when the file is absent.
- ``PixelModel`` / ``train_pixel_model`` / ``pixel_train_variants``: a small trained
  classifier with the ``TrainedModel`` surface probes use (``key``, ``input_mode``,
  ``classes``, ``predict_proba``, ``embed``): a logistic regression on block-averaged
  pixels of the model's input mode, balanced class weights. Fast enough to retrain many
  variants in a test.
- ``probe_context``: the one ``ProbeContext`` builder of the tests (every test module
  builds its contexts with it); ``make_context``: one around all of the above.
- ``judged_status`` / ``fires`` / ``default_threshold``: a check result judged by the real
  gate with the shipped default policy, so probe tests never copy a threshold or the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from audit.core.config import CLASSES, ProbesConfig, SiteTraits, SynthConfig
from audit.core.result import AuditResult, CheckResult, Status
from audit.data.dataset import Dataset, Splits
from audit.data.phantoms import plant_marker, synthetic_dataset
from audit.gate import judge, load_policy
from models.inputs import ModeImages, apply_input_mode
from models.train import VariantRequest
from probes.base import ProbeContext
from tests.conftest import MOBILENET_V2_035

IMAGE_SIZE = 64
BLOCK = 4  # pixel features: mean over BLOCK x BLOCK cells


def synth_data(
    confounding: float,
    traits: bool,
    seed: int,
    n_per_class: int = 10,
    n_sources: int = 4,
    signal_strength: float = 1.0,
) -> tuple[Dataset, Splits]:
    """Phantoms at ``IMAGE_SIZE`` px and a 75/25 label-stratified split (3 folds)."""
    site_traits = SiteTraits(markers=traits, borders=traits, intensity=traits)
    config = SynthConfig(n_per_class=n_per_class, n_sources=n_sources, image_size=IMAGE_SIZE,
                         confounding=confounding, site_traits=site_traits, seed=seed,
                         signal_strength=signal_strength)
    dataset = synthetic_dataset(config)
    return dataset, stratified_splits(dataset, seed)


def stratified_splits(dataset: Dataset, seed: int, n_folds: int = 3) -> Splits:
    """Train/test 75/25 stratified by label, folds by striding the train rows."""
    rows = np.arange(len(dataset))
    train, test = train_test_split(rows, test_size=0.25, stratify=dataset.labels, random_state=seed)
    train = np.sort(train)
    folds = tuple((np.setdiff1d(train, train[k::n_folds]), train[k::n_folds]) for k in range(n_folds))
    return Splits(train=train, test=np.sort(test), folds=folds, seed=seed)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """``(n, S, S)`` -> ``(n, (S/BLOCK)^2)`` block means: a cheap deterministic backbone."""
    x = np.asarray(images, dtype=np.float32)
    n, size = x.shape[0], x.shape[1] // BLOCK * BLOCK
    x = x[:, :size, :size].reshape(n, size // BLOCK, BLOCK, size // BLOCK, BLOCK)
    return x.mean(axis=(2, 4)).reshape(n, -1)


def mobilenet_features():
    """A frozen ImageNet MobileNetV2 0.35 feature function at 96 px, or None without weights."""
    if not MOBILENET_V2_035.exists():
        return None
    import keras
    import tensorflow as tf

    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False,
                                          weights=str(MOBILENET_V2_035), pooling="avg")

    def features(images: np.ndarray) -> np.ndarray:
        x = tf.image.resize(np.asarray(images, np.float32)[..., None], (96, 96))
        x = keras.applications.mobilenet_v2.preprocess_input(tf.repeat(x, 3, axis=-1))
        return np.asarray(base.predict(x, batch_size=64, verbose=0))

    return features


@dataclass
class PixelModel:
    """A trained logistic regression on block-averaged pixels of its input mode."""

    key: str
    input_mode: str
    estimator: LogisticRegression
    classes: tuple[str, ...] = CLASSES
    border_fraction: float = 0.10
    metadata: dict = field(default_factory=dict)

    def model_inputs(self, dataset: Dataset, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        masks = dataset.masks[idx] if dataset.masks is not None else None
        shown = apply_input_mode(dataset.images[idx], self.input_mode, masks, self.border_fraction)
        return pixel_features(shown) / 255.0

    def predict_proba(self, dataset: Dataset, idx: np.ndarray) -> np.ndarray:
        proba = np.zeros((len(idx), len(self.classes)))
        proba[:, self.estimator.classes_] = self.estimator.predict_proba(self.model_inputs(dataset, idx))
        return proba

    def embed(self, dataset: Dataset, idx: np.ndarray) -> np.ndarray:
        return self.model_inputs(dataset, idx)


def train_pixel_model(dataset: Dataset, rows: np.ndarray, input_mode: str = "raw",
                      seed: int = 0, backbone: str = "pixels") -> PixelModel:
    """A ``PixelModel`` of ``input_mode`` fitted on ``dataset``'s ``rows``."""
    model = PixelModel(f"{backbone}/{input_mode}", input_mode,
                       LogisticRegression(C=0.1, class_weight="balanced", max_iter=300,
                                          random_state=seed))
    rows = np.asarray(rows)
    model.estimator.fit(model.model_inputs(dataset, rows), dataset.labels[rows])
    return model


def pixel_train_variants(dataset: Dataset, backbone: str = "pixels"):
    """A ``train_variants`` callable that fits one ``PixelModel`` per request on ``dataset``
    and returns its probabilities of the request's score rows."""

    def train_and_score(request: VariantRequest) -> np.ndarray:
        model = train_pixel_model(dataset, request.train_rows, request.input_mode,
                                  request.seed, request.backbone or backbone)
        return model.predict_proba(dataset, request.score_rows)

    return lambda requests: [train_and_score(request) for request in requests]


def probe_context(dataset: Dataset, splits: Splits, *, models: dict | None = None,
                  audited: str = "", params: ProbesConfig | None = None,
                  **services) -> ProbeContext:
    """A ``ProbeContext`` over ``dataset`` and ``splits``; ``services`` are the context's
    optional fields (``train_variants``, ``mode_features``, ``explanations``, ``seed``),
    absent ones None as for an audit that lacks them."""
    params = params or ProbesConfig()
    return ProbeContext(dataset=dataset, splits=splits, models=dict(models or {}),
                        audited=audited, params=params, **{"seed": params.seed, **services})


def make_context(
    dataset: Dataset,
    splits: Splits,
    tmp_path: Path,
    *,
    features=pixel_features,
    models: dict | None = None,
    **params,
) -> ProbeContext:
    """A ProbeContext with pixel-model training; ``params`` override ``ProbesConfig``.

    39 permutations by default: the fewest for which p < 0.05 is possible (1/40).
    """
    probe_params = ProbesConfig(**{"n_permutations": 39, "n_bootstrap": 200, **params})
    return probe_context(dataset, splits, models=models, audited="pixels/raw",
                         params=probe_params, train_variants=pixel_train_variants(dataset),
                         mode_features=None if features is None else mode_feature_service(
                             dataset, features, probe_params.border_fraction))


def mode_feature_service(dataset: Dataset, features, border_fraction: float):
    """``mode_features`` from a function of uint8 images: ``features`` of every row of
    ``dataset`` shown in the mode (as the pipeline's service, uncached)."""
    return lambda mode: features(ModeImages(dataset, mode, border_fraction)[:])


def with_marker(dataset: Dataset, rows: np.ndarray) -> Dataset:
    """``dataset`` with ``audit.data.phantoms.plant_marker``'s corner square burned into ``rows``."""
    return replace(dataset, images=plant_marker(dataset.images, rows),
                   manifest_hash=f"{dataset.manifest_hash}+marker")


def train_pair(context: ProbeContext) -> ProbeContext:
    """Add ``pixels/raw`` and ``pixels/lung_masked`` models trained on the training rows."""
    for mode in ("raw", "lung_masked"):
        model = train_pixel_model(context.dataset, context.splits.train, mode)
        context.models[model.key] = model
    return context


def judged_status(result: CheckResult) -> Status:
    """The status the gate gives ``result`` under the shipped default policy (alone in a
    run, so its raw p-value stands in for the Holm-adjusted one)."""
    return judge(AuditResult(checks=(result,)), load_policy()).check(result.check_id).status


def fires(result: CheckResult) -> bool:
    """The default policy flags ``result`` (fail or warn, whichever its gate is)."""
    return judged_status(result) in (Status.FAIL, Status.WARN)


def default_threshold(check_id: str) -> float:
    """The shipped default policy's threshold for ``check_id``."""
    return load_policy().checks[check_id].threshold
