"""Training the paper's classifiers: one function, two interchangeable paths.

``train_classifier`` builds the flat classifier (``models.head.build_classifier``) and
trains everything above the *cut*: the head alone when the base is frozen (the paper's
Table 2 setting), or the head plus the top ``unfreeze_blocks`` blocks (its Table 5).

- ``cached`` path (``training_path`` ``auto`` or ``cached``): everything below the cut is a
  fixed function of the image, so its output is computed once per image and per augmented
  view (``models.features``, cached by content, shared by all folds and hyper-parameter
  settings) and only the part above the cut is fitted, on those arrays. Rotation
  augmentation uses ``augmented_views`` fixed rotated copies of each training image
  (angles uniform in ``±rotation_degrees``, seeded).
- ``end_to_end`` path: ordinary Keras ``fit`` of the whole model on images, with random
  rotations drawn afresh every epoch (Keras ``RandomRotation``), as in the paper.

Both paths train the very same layers with the same optimizer, batches and seeds, so on
the same inputs they give the same model (``tests/test_models_train.py`` checks it).
BatchNormalization layers stay frozen in both (inference mode), which is what makes the
part below the cut a fixed function.

Common to both: Adam, sparse categorical cross-entropy, balanced class weights (the
paper's COVID class has about half the images of the others; ``n / (k * count)`` per
class, scikit-learn's ``"balanced"``), batches shuffled by a seeded ``tf.data`` shuffle,
and best-validation-epoch selection: the weights of the epoch with the highest validation
accuracy are restored (first such epoch on ties).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from audit.core.cache import StageCache, hash_array, stable_hash
from audit.core.progress import log
from models.backbones import resolve_weights
from models.features import POOLED, FeatureSpec, frozen_features, view_features
from models.head import HEAD_POOL, build_classifier, cut_layer_name
from models.inputs import MASKED_MODES, ModeImages
from models.metrics import classification_metrics
from models.saving import library_versions, load_trained, save_trained
from models.trained import TrainedModel

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from audit.core.config import ModelsConfig
    from audit.data.dataset import Dataset, Splits

_STEPS_PER_EXECUTION = 16


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything that determines one trained classifier (besides the data and split)."""

    backbone: str = "mobilenetv2"
    input_mode: str = "raw"
    image_size: int = 224  # model input side; dataset images are resized to it
    weights: str = "imagenet"  # "imagenet", "none" or a weights file path
    weights_dirs: tuple[str, ...] = ()  # folders searched for local ImageNet files
    alpha: float = 1.0
    learning_rate: float = 1e-3
    dropout: float = 0.3
    dense_units: int = 256
    epochs: int = 60
    batch_size: int = 32
    unfreeze_blocks: int = 0
    rotation_degrees: float = 10.0
    augmented_views: int = 2  # fixed rotated copies per training image (cached path)
    training_path: str = "auto"  # "auto" (= cached), "cached" or "end_to_end"
    border_fraction: float = 0.10
    seed: int = 0

    @property
    def path(self) -> str:
        """The training path this spec takes: ``"cached"`` or ``"end_to_end"``."""
        return "end_to_end" if self.training_path == "end_to_end" else "cached"

    @property
    def rotates(self) -> bool:
        return self.rotation_degrees > 0 and (self.path == "end_to_end" or self.augmented_views > 0)

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the trained model (cache key and config hash)."""
        fields = asdict(self)
        fields.pop("weights_dirs")  # where the weights were found is in the weights origin
        fields["training_path"] = self.path
        return fields


def spec_from_config(models_cfg: ModelsConfig, backbone: str, input_mode: str,
                     image_size: int, seed: int, border_fraction: float) -> ClassifierSpec:
    """The spec of one classifier of a run, from the config's ``models`` section."""
    return ClassifierSpec(
        backbone=backbone, input_mode=input_mode, image_size=image_size,
        weights=models_cfg.weights, weights_dirs=tuple(str(p) for p in models_cfg.weights_dirs),
        alpha=models_cfg.alpha, learning_rate=models_cfg.learning_rate,
        dropout=models_cfg.dropout, dense_units=models_cfg.dense_units,
        epochs=models_cfg.epochs, batch_size=models_cfg.batch_size,
        unfreeze_blocks=models_cfg.unfreeze_blocks,
        rotation_degrees=models_cfg.rotation_degrees,
        augmented_views=models_cfg.augmented_views,
        training_path=models_cfg.training_path, border_fraction=border_fraction, seed=seed)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n / (n_present * count)`` per present class (scikit-learn "balanced"); 1.0 if absent."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    found = dict(zip(present.tolist(), weights.tolist(), strict=True))
    return {k: float(found.get(k, 1.0)) for k in range(n_classes)}


def mode_images(dataset: Dataset, spec: ClassifierSpec) -> ModeImages:
    """All dataset images as the spec's input mode shows them (masked as they are read)."""
    if spec.input_mode in MASKED_MODES and dataset.has_mask is not None:
        missing = int(np.sum(~dataset.has_mask))
        if missing:
            log.warning("%s: %d of %d images have no lung mask; they are shown to the model "
                        "as %s", spec.input_mode, missing, len(dataset),
                        "blank images" if spec.input_mode == "lung_masked" else "unmasked")
    return ModeImages(dataset, spec.input_mode, spec.border_fraction)


def array_batches(x: np.ndarray, y: np.ndarray, spec: ClassifierSpec, shuffle: bool,
                  transform=None) -> tf.data.Dataset:
    """``tf.data`` batches of ``(x, y)``, shuffled each epoch by a ``spec.seed``-seeded
    shuffle when ``shuffle``; ``transform(x_batch)`` runs per batch."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        data = data.shuffle(len(x), seed=spec.seed, reshuffle_each_iteration=True)
    data = data.batch(spec.batch_size)
    if transform is not None:
        data = data.map(lambda xb, yb: (transform(xb), yb))
    return data.prefetch(2)


def image_batches(images: np.ndarray, y: np.ndarray, spec: ClassifierSpec, shuffle: bool,
                  rotate: bool) -> tf.data.Dataset:
    """Batches of uint8 ``(N, S, S)`` images as model input, randomly rotated if ``rotate``."""
    return array_batches(np.asarray(images), y, spec, shuffle, _image_transform(spec, rotate))


def _image_transform(spec: ClassifierSpec, rotate: bool):
    """uint8 ``(b, S, S)`` batches -> model input float32 ``(b, s, s, 3)`` (as ``to_model_array``)."""
    import keras
    import tensorflow as tf

    rotation = keras.layers.RandomRotation(spec.rotation_degrees / 360.0, fill_mode="constant",
                                           fill_value=0.0, seed=spec.seed) if rotate else None

    def transform(batch):
        x = tf.cast(batch, tf.float32)[..., None]
        if rotation is not None:
            x = rotation(x, training=True)
        if x.shape[1] != spec.image_size:
            x = tf.image.resize(x, (spec.image_size, spec.image_size), antialias=True)
        return tf.repeat(x, 3, axis=-1)

    return transform


def _feature_arrays(model: keras.Model, images: ModeImages, labels: np.ndarray,
                    train_idx: np.ndarray, spec: ClassifierSpec, cut: str,
                    cache: StageCache | None):
    """Cached features at the cut for all rows, and the training arrays (with views).

    Computed (when not cached) by the classifier's own layers below the cut.
    """
    import keras

    extractor = keras.Model(model.inputs[0], model.get_layer(cut).output)
    source = FeatureSpec(spec.backbone, spec.weights, spec.alpha, spec.image_size,
                         tuple(Path(p) for p in spec.weights_dirs),
                         POOLED if cut == HEAD_POOL else cut, extractor)
    features = frozen_features(images, source, cache)
    x_train, y_train = [features[train_idx]], [labels[train_idx]]
    if spec.rotates:
        views = view_features(images, spec.augmented_views, spec.rotation_degrees, spec.seed,
                              source, cache)
        x_train += [view[train_idx] for view in views]
        y_train += [labels[train_idx]] * len(views)
    return features, np.concatenate(x_train), np.concatenate(y_train)


def fit_best_epoch(model: keras.Model, train: tf.data.Dataset, val: tf.data.Dataset,
                   spec: ClassifierSpec, class_weight: dict[int, float],
                   callbacks: list | None = None) -> tuple[dict, int]:
    """Fit with Adam and restore the best-validation-accuracy epoch.

    ``callbacks`` are extra Keras callbacks (e.g. a timer). Several steps run per compiled
    call (``steps_per_execution``), which cuts Python overhead on small cached arrays
    without changing the arithmetic.

    Returns:
        ``(history, best_epoch)``: per-epoch lists of loss/accuracy/val_loss/val_accuracy
        and the 1-based epoch whose weights the model now holds.
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=_STEPS_PER_EXECUTION)
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                         patience=spec.epochs, restore_best_weights=True)
    history = model.fit(train, validation_data=val, epochs=spec.epochs,
                        class_weight=class_weight, callbacks=[best, *(callbacks or [])],
                        shuffle=False, verbose=0)
    return ({name: [float(v) for v in values] for name, values in history.history.items()},
            int(best.best_epoch) + 1)


def _train(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray,
           spec: ClassifierSpec, cache: StageCache | None) -> TrainedModel:
    import keras

    images, labels = mode_images(dataset, spec), dataset.labels
    model, last_conv, embedding, origin = build_classifier(
        spec.backbone, spec.image_size, spec.weights, spec.alpha, spec.dropout,
        spec.dense_units, len(dataset.classes), spec.unfreeze_blocks,
        [Path(p) for p in spec.weights_dirs], spec.seed)
    cut = cut_layer_name(model, spec.backbone, spec.unfreeze_blocks)
    if spec.path == "cached":
        trainable = keras.Model(model.get_layer(cut).output, model.output)
        features, x_train, y_train = _feature_arrays(model, images, labels, train_idx, spec,
                                                     cut, cache)
        train = array_batches(x_train, y_train, spec, shuffle=True)
        val = array_batches(features[val_idx], labels[val_idx], spec, shuffle=False)
    else:
        trainable = model
        x_train, y_train = images[train_idx], labels[train_idx]
        train = image_batches(x_train, y_train, spec, shuffle=True, rotate=spec.rotates)
        val = image_batches(images[val_idx], labels[val_idx], spec, shuffle=False, rotate=False)
    class_weight = balanced_class_weights(labels[train_idx], len(dataset.classes))
    history, best_epoch = fit_best_epoch(trainable, train, val, spec, class_weight)
    val_proba = trainable.predict(val, verbose=0)
    metadata = {
        "backbone": spec.backbone, "input_mode": spec.input_mode, "weights": spec.weights,
        "weights_origin": origin, "training_path": spec.path, "cut_layer": cut,
        "spec": asdict(spec), "config_hash": stable_hash(spec.key_fields()),
        "data_manifest_hash": dataset.manifest_hash, "mask_origin": dataset.mask_origin,
        "split": {"train": train_idx.tolist(), "val": val_idx.tolist()}, "seed": spec.seed,
        "n_train_examples": len(x_train), "class_weight": class_weight,
        "library_versions": library_versions(), "history": history, "best_epoch": best_epoch,
        "val_proba": val_proba.tolist(),
        "metrics": classification_metrics(labels[val_idx], val_proba, dataset.classes,
                                          seed=spec.seed),
    }
    return TrainedModel(
        key=f"{spec.backbone}/{spec.input_mode}", backbone=spec.backbone,
        input_mode=spec.input_mode, keras_model=model, classes=tuple(dataset.classes),
        last_conv_layer=last_conv, embedding_layer=embedding, metadata=metadata,
        border_fraction=spec.border_fraction, input_size=spec.image_size)


def classifier_stage_inputs(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray,
                  spec: ClassifierSpec, cache: StageCache) -> dict[str, Any]:
    _, origin = resolve_weights(spec.weights, spec.backbone, spec.alpha, spec.image_size,
                                [Path(p) for p in spec.weights_dirs], cache.hash_file)
    return {"spec": spec.key_fields(), "weights_origin": origin,
            "data": dataset.data_key,
            "labels": hash_array(dataset.labels),
            "masks": dataset.masks_key if spec.input_mode in MASKED_MODES else None,
            "train": hash_array(train_idx), "val": hash_array(val_idx)}


def train_classifier(
    dataset: Dataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    spec: ClassifierSpec,
    cache: StageCache | None = None,
    out_dir: Path | None = None,
) -> TrainedModel:
    """Train one classifier on rows ``train_idx``, selecting its epoch on rows ``val_idx``.

    Args:
        dataset: the run's dataset (masks needed for the masked input modes).
        train_idx: dataset rows to fit on.
        val_idx: dataset rows for best-epoch selection and the metadata's metrics.
        spec: what to train.
        cache: stage cache; with it, features and the trained model are reused by key
            (spec, data hash, masks, rows). Defaults to None.
        out_dir: also save ``model.keras`` + ``metadata.json`` here. Defaults to None.

    Returns:
        The trained model; ``metadata["training_path"]`` says which path trained it.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"train_classifier needs training and validation rows, got "
                         f"{len(train_idx)} and {len(val_idx)}")
    if cache is None:
        trained = _train(dataset, train_idx, val_idx, spec, cache)
    else:
        computed: list[TrainedModel] = []  # filled when this call trains (not on reuse)

        def compute(tmp: Path) -> None:
            computed.append(_train(dataset, train_idx, val_idx, spec, cache))
            save_trained(computed[0], tmp)

        folder = cache.run("classifier",
                           classifier_stage_inputs(dataset, train_idx, val_idx, spec, cache),
                           compute)
        trained = computed[0] if computed else load_trained(folder)
        trained.path = folder
    if out_dir is not None:
        save_trained(trained, out_dir)
        trained.path = Path(out_dir)
    return trained


def _fold_mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def cross_validate(
    dataset: Dataset,
    splits: Splits,
    spec: ClassifierSpec,
    cache: StageCache | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Train one model per fold of ``splits.folds`` and summarise as in the paper's tables.

    Args:
        dataset: the run's dataset.
        splits: patient-grouped folds (``(train, val)`` rows each).
        spec: what to train.
        cache: stage cache (features are computed once for all folds). Defaults to None.
        out_dir: each fold's model is saved under ``out_dir/fold<i>``. Defaults to None.

    Returns:
        ``{"spec", "training_path", "folds": [{"fold", "best_epoch", "metrics"}],
        "mean": {"accuracy", "accuracy_std", "macro_f1", "auroc", "per_class_recall",
        "confusion_matrix" (summed over folds)}, "pooled": out-of-fold metrics with CIs,
        "mean_history": per-epoch means over folds}``.
    """
    folds, truth, proba, histories = [], [], [], []
    for number, (train_idx, val_idx) in enumerate(splits.folds):
        fold_dir = Path(out_dir) / f"fold{number}" if out_dir is not None else None
        trained = train_classifier(dataset, train_idx, val_idx, spec, cache, fold_dir)
        meta = trained.metadata
        folds.append({"fold": number, "best_epoch": meta["best_epoch"],
                      "weights_origin": meta["weights_origin"], "metrics": meta["metrics"]})
        truth.append(dataset.labels[np.asarray(val_idx)])
        proba.append(np.asarray(meta["val_proba"]))
        histories.append(meta["history"])
    metrics = [fold["metrics"] for fold in folds]
    accuracies = [m["accuracy"] for m in metrics]
    mean = {
        "accuracy": _fold_mean(accuracies),
        "accuracy_std": float(np.std(accuracies)),
        "macro_f1": _fold_mean([m["macro_f1"] for m in metrics]),
        "auroc": _fold_mean([m["auroc"] for m in metrics]),
        "per_class_recall": {name: _fold_mean([m["per_class"][name]["recall"] for m in metrics])
                             for name in dataset.classes},
        "confusion_matrix": np.sum([m["confusion_matrix"] for m in metrics], axis=0).tolist(),
    }
    pooled = classification_metrics(np.concatenate(truth), np.concatenate(proba),
                                    dataset.classes, seed=spec.seed)
    mean_history = {name: np.mean([h[name] for h in histories], axis=0).tolist()
                    for name in histories[0]}
    return {"spec": asdict(spec), "training_path": spec.path, "folds": folds, "mean": mean,
            "pooled": pooled, "mean_history": mean_history}
