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

Both paths train the very same layers with the same update rule, batches and seeds, so on
the same inputs they give the same model up to rounding (``tests/test_models_train.py``
checks it): the cached path's fused Adam kernel rounds differently from Keras' optimizer,
which over many epochs with dropout can grow into another best epoch, as another seed would.
BatchNormalization layers stay frozen in both (inference mode), which is what makes the
part below the cut a fixed function.

Common to both: Adam, sparse categorical cross-entropy, balanced class weights (the
paper's COVID class has about half the images of the others; ``n / (k * count)`` per
class, scikit-learn's ``"balanced"``), batches in a new ``spec.seed``-seeded numpy order
each epoch (``epoch_orders``), and best-validation-epoch selection: the weights of the
epoch with the highest validation accuracy are restored (first such epoch on ties).

The end-to-end path trains with Keras ``fit`` (``fit_best_epoch``); the cached path with
``fit_cached``, a lean loop doing the same arithmetic: one compiled call per epoch runs
all its batches over the in-memory arrays, with Adam as TensorFlow's fused kernel
(``fused_adam``), then one call scores the validation rows.
Keras ``fit`` spends tens of milliseconds per epoch on callbacks, ``tf.data`` and
validation batches, which for a head on ~1,000 cached vectors is most of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
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
from models.metrics import classification_metrics, fold_summary
from models.saving import library_versions, load_trained, save_trained
from models.trained import CachedRows, TrainedModel

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from audit.core.config import AuditConfig, ModelsConfig
    from audit.data.dataset import Dataset, Splits

_STEPS_PER_EXECUTION = 16
SCORES_FILE = "proba.npy"  # in a classifier_scores stage: its rows' class probabilities


GRID_FIELDS = frozenset({"backbones", "input_modes", "seeds", "cross_validate", "sweep",
                         "final_sizes"})
"""``ModelsConfig`` fields that shape the grid of classifiers or the experiments, not one
classifier: no spec's key holds them, so adding a seed or a sweep step retrains nothing."""


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything that determines one trained classifier (besides the data and split).

    Attributes:
        settings: the training settings: the config's ``models`` section, whose defaults
            are the paper's Table 2 (its ``GRID_FIELDS`` play no part in one classifier).
        backbone: the pretrained base.
        input_mode: what part of the images the classifier sees.
        image_size: model input side; dataset images are resized to it.
        seed: seeds the head's initial weights, dropout, batch order and rotated views.
        border_fraction: band width of the ``border_only`` input mode
            (``probes.border_fraction``); no other mode depends on it.
    """

    settings: ModelsConfig
    backbone: str
    input_mode: str
    image_size: int
    seed: int
    border_fraction: float

    @property
    def path(self) -> str:
        """The training path this spec takes: ``"cached"`` or ``"end_to_end"``."""
        return "end_to_end" if self.settings.training_path == "end_to_end" else "cached"

    @property
    def rotates(self) -> bool:
        return self.settings.rotation_degrees > 0 and (self.path == "end_to_end"
                                                       or self.settings.augmented_views > 0)

    def with_settings(self, **changes: Any) -> ClassifierSpec:
        """This spec with some training settings changed, validated as the config is."""
        settings = type(self.settings).model_validate({**self.settings.model_dump(), **changes})
        return replace(self, settings=settings)

    def as_dict(self) -> dict[str, Any]:
        """The spec as plain data (a trained model's ``metadata["spec"]``)."""
        return {**self.settings.model_dump(mode="json", exclude=set(GRID_FIELDS)),
                "backbone": self.backbone, "input_mode": self.input_mode,
                "image_size": self.image_size, "seed": self.seed,
                "border_fraction": self.border_fraction}

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the trained model (cache key and config hash)."""
        fields = self.as_dict()
        fields.pop("weights_dirs")  # where the weights were found is in the weights origin
        fields["training_path"] = self.path
        if self.input_mode != "border_only":
            fields.pop("border_fraction")  # no other mode shows the band
        return fields


def spec_from_config(config: AuditConfig, backbone: str, input_mode: str,
                     seed: int) -> ClassifierSpec:
    """The spec of one classifier of a run: the config's ``models`` section, its image size
    and border band, and the classifier's backbone, input mode and seed."""
    return ClassifierSpec(settings=config.models, backbone=backbone, input_mode=input_mode,
                          image_size=config.data.image_size, seed=seed,
                          border_fraction=config.probes.border_fraction)


@dataclass(frozen=True)
class VariantRequest:
    """One classifier a probe asks the run to train and score: the run's settings on other
    rows, or with another input mode, seed or backbone.

    Attributes:
        train_rows: dataset rows to fit on.
        val_rows: dataset rows for best-epoch selection.
        score_rows: dataset rows whose class probabilities the probe gets back.
        input_mode: Defaults to "raw".
        seed: Defaults to 0.
        backbone: None for the audited model's backbone. Defaults to None.
    """

    train_rows: tuple[int, ...]
    val_rows: tuple[int, ...]
    score_rows: tuple[int, ...]
    input_mode: str = "raw"
    seed: int = 0
    backbone: str | None = None

    def __post_init__(self) -> None:
        # Rows may arrive as arrays; as plain ints a request compares, hashes and travels
        # in a job's JSON payload.
        for name in ("train_rows", "val_rows", "score_rows"):
            object.__setattr__(self, name, tuple(int(row) for row in getattr(self, name)))


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


def epoch_orders(spec: ClassifierSpec, n_rows: int) -> Iterator[np.ndarray]:
    """Row orders of the training batches, a new permutation of ``n_rows`` rows per epoch,
    drawn by ``np.random.default_rng(spec.seed)`` (both training paths use them)."""
    orders = np.random.default_rng(spec.seed)
    while True:
        yield orders.permutation(n_rows)


def array_batches(x: np.ndarray, y: np.ndarray, spec: ClassifierSpec, shuffle: bool,
                  transform=None) -> tf.data.Dataset:
    """``tf.data`` batches of ``(x, y)``, in a new ``spec.seed``-seeded order each epoch
    when ``shuffle``; ``transform(x_batch)`` runs per batch.

    The orders come from numpy, not from ``Dataset.shuffle``: tf.data combines its seed
    with TensorFlow's global seed, which any earlier ``keras.utils.set_random_seed`` in
    the process changes, so one spec trained in a fresh process (a resumed run, a Ray
    worker) and after other work in the same process would see different batches.
    """
    import tensorflow as tf

    batch_size = spec.settings.batch_size
    if not shuffle:
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    else:
        orders = epoch_orders(spec, len(x))
        x_all, y_all = tf.constant(x), tf.constant(y)

        def epoch_order():  # called once per epoch, when Keras starts iterating
            yield from next(orders)

        data = (tf.data.Dataset.from_generator(epoch_order,
                                               output_signature=tf.TensorSpec((), tf.int64))
                .batch(batch_size)
                # a generator's length is unknown to Keras, which would warn each training
                .apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size)))
                .map(lambda rows: (tf.gather(x_all, rows), tf.gather(y_all, rows))))
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

    rotation = keras.layers.RandomRotation(spec.settings.rotation_degrees / 360.0, fill_mode="constant",
                                           fill_value=0.0, seed=spec.seed) if rotate else None

    def transform(batch):
        x = tf.cast(batch, tf.float32)[..., None]
        if rotation is not None:
            x = rotation(x, training=True)
        if x.shape[1] != spec.image_size:
            x = tf.image.resize(x, (spec.image_size, spec.image_size), antialias=True)
        return tf.repeat(x, 3, axis=-1)

    return transform


def _cut_features(model: Callable[[], keras.Model], spec: ClassifierSpec,
                  cut: str) -> FeatureSpec:
    """The features at the classifier's cut, computed (when not cached) by its own layers
    below the cut; ``model`` gives the classifier's network only then."""
    def build() -> keras.Model:
        import keras

        network = model()
        return keras.Model(network.inputs[0], network.get_layer(cut).output)

    settings = spec.settings
    return FeatureSpec(spec.backbone, settings.weights, settings.alpha, spec.image_size,
                       tuple(settings.weights_dirs), POOLED if cut == HEAD_POOL else cut,
                       build)


def _feature_arrays(model: keras.Model, images: ModeImages, labels: np.ndarray,
                    train_idx: np.ndarray, spec: ClassifierSpec, cut: str,
                    cache: StageCache | None):
    """Cached features at the cut for all rows, and the training arrays (with views)."""
    settings = spec.settings
    source = _cut_features(lambda: model, spec, cut)
    features = frozen_features(images, source, cache)
    x_train, y_train = [features[train_idx]], [labels[train_idx]]
    if spec.rotates:
        views = view_features(images, settings.augmented_views, settings.rotation_degrees,
                              spec.seed, source, cache)
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

    model.compile(optimizer=keras.optimizers.Adam(spec.settings.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=_STEPS_PER_EXECUTION)
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                         patience=spec.settings.epochs, restore_best_weights=True)
    history = model.fit(train, validation_data=val, epochs=spec.settings.epochs,
                        class_weight=class_weight, callbacks=[best, *(callbacks or [])],
                        shuffle=False, verbose=0)
    return ({name: [float(v) for v in values] for name, values in history.history.items()},
            int(best.best_epoch) + 1)


def fused_adam(variables: list, optimizer: keras.optimizers.Adam) -> Callable[[list], None]:
    """``optimizer``'s update of ``variables``, as one fused TensorFlow kernel per variable.

    ``ResourceApplyAdam`` computes Keras Adam's update (bias correction folded into the
    step size; plain Adam, no amsgrad) from the optimizer's own learning rate, betas and
    epsilon; the Keras optimizer itself only supplies them. Keras 3's ``apply`` issues a
    dozen small ops per variable and step: for a MobileNetV2 head (1,280 -> 256 -> 4, 2,890
    rows, 60 epochs) training took 9.5 s with it against 5.9 s fused, measured side by side
    when this was written. The kernel rounds ``1 - beta`` in float32 where Keras
    computes it in float64, so the two agree to rounding, not to the last bit
    (``tests/test_models_train.py`` holds ``fit_cached`` to ``fit_best_epoch``).

    Returns:
        ``apply(gradients)``, to call inside a ``tf.function`` once per step.
    """
    import tensorflow as tf

    learning_rate = float(optimizer.learning_rate)
    moments = [(tf.Variable(tf.zeros_like(variable.value)),
                tf.Variable(tf.zeros_like(variable.value))) for variable in variables]
    step = tf.Variable(0.0)

    def apply(gradients: list) -> None:
        step.assign_add(1.0)
        beta_1_power = tf.pow(optimizer.beta_1, step)
        beta_2_power = tf.pow(optimizer.beta_2, step)
        for variable, gradient, (first, second) in zip(variables, gradients, moments,
                                                       strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.value.handle, m=first.handle, v=second.handle,
                beta1_power=beta_1_power, beta2_power=beta_2_power, lr=learning_rate,
                beta1=optimizer.beta_1, beta2=optimizer.beta_2, epsilon=optimizer.epsilon,
                grad=gradient)

    return apply


def fit_cached(model: keras.Model, train: tuple[np.ndarray, np.ndarray],
               val: tuple[np.ndarray, np.ndarray], spec: ClassifierSpec,
               class_weight: dict[int, float]) -> tuple[dict, int, np.ndarray]:
    """Fit ``model`` on in-memory arrays as ``fit_best_epoch`` would, without Keras ``fit``.

    The same arithmetic as ``fit`` with ``array_batches``: Adam, the loss Keras compiles
    for ``"sparse_categorical_crossentropy"`` with the class weights as sample weights
    (mean over the batch), batches of ``batch_size`` rows in the ``epoch_orders`` order,
    dropout drawn by the model's own seeded layers, and the same history: ``loss`` the
    batch-size-weighted mean of the batch losses, ``accuracy`` weighted by the class
    weights, ``val_loss`` and ``val_accuracy`` over the validation rows. One compiled call
    runs an epoch's batches and one scores the validation rows.

    Args:
        model: the trainable part (cached activations in, class probabilities out).
        train: ``(x, y)`` training arrays.
        val: ``(x, y)`` validation arrays.
        spec: supplies the optimizer settings, epochs, batch size and seed.
        class_weight: weight per class index.

    Returns:
        ``(history, best_epoch, val_proba)``: as ``fit_best_epoch``, and the validation
        rows' class probabilities under the best epoch's weights, which ``model`` holds.
    """
    import keras
    import tensorflow as tf

    settings = spec.settings
    x_train, y_train = tf.constant(train[0]), tf.constant(train[1], tf.int64)
    weights = tf.constant([class_weight.get(int(label), 1.0) for label in train[1]],
                          tf.float32)
    x_val, y_val = tf.constant(val[0]), tf.constant(val[1], tf.int64)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    variables = model.trainable_variables
    apply_adam = fused_adam(variables, keras.optimizers.Adam(settings.learning_rate))
    n_rows, batch_size = len(train[0]), settings.batch_size

    @tf.function
    def train_epoch(order):
        loss_sum, correct, weight_sum = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
        for start in tf.range(0, n_rows, batch_size):
            rows = order[start:start + batch_size]
            y, w = tf.gather(y_train, rows), tf.gather(weights, rows)
            with tf.GradientTape() as tape:
                proba = model(tf.gather(x_train, rows), training=True)
                loss = loss_fn(y, proba, sample_weight=w)
            apply_adam(tape.gradient(loss, variables))
            hits = tf.cast(tf.equal(tf.argmax(proba, axis=-1), y), tf.float32)
            loss_sum += loss * tf.cast(tf.shape(rows)[0], tf.float32)
            correct += tf.reduce_sum(hits * w)
            weight_sum += tf.reduce_sum(w)
        return loss_sum / n_rows, correct / weight_sum

    @tf.function
    def score_val():
        proba = model(x_val, training=False)
        hits = tf.cast(tf.equal(tf.argmax(proba, axis=-1), y_val), tf.float32)
        return (proba, tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_val, proba)),
                tf.reduce_mean(hits))

    history: dict[str, list[float]] = {"accuracy": [], "loss": [], "val_accuracy": [],
                                       "val_loss": []}
    best = (-np.inf, 0, None, None)  # accuracy, epoch, weights, probabilities
    orders = epoch_orders(spec, n_rows)
    for epoch in range(1, settings.epochs + 1):
        loss, accuracy = train_epoch(tf.constant(next(orders)))
        proba, val_loss, val_accuracy = score_val()
        for name, value in (("loss", loss), ("accuracy", accuracy), ("val_loss", val_loss),
                            ("val_accuracy", val_accuracy)):
            history[name].append(float(value))
        if history["val_accuracy"][-1] > best[0]:  # first epoch wins ties, as EarlyStopping
            best = (history["val_accuracy"][-1], epoch,
                    [variable.numpy() for variable in variables], proba.numpy())
    for variable, value in zip(variables, best[2], strict=True):
        variable.assign(value)
    return history, best[1], best[3]


def _train(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray,
           spec: ClassifierSpec, cache: StageCache | None) -> TrainedModel:
    import keras

    images, labels, settings = mode_images(dataset, spec), dataset.labels, spec.settings
    model, last_conv, embedding, origin = build_classifier(
        spec.backbone, spec.image_size, settings.weights, settings.alpha, settings.dropout,
        settings.dense_units, len(dataset.classes), settings.unfreeze_blocks,
        list(settings.weights_dirs), spec.seed)
    cut = cut_layer_name(model, spec.backbone, settings.unfreeze_blocks)
    class_weight = balanced_class_weights(labels[train_idx], len(dataset.classes))
    if spec.path == "cached":
        trainable = keras.Model(model.get_layer(cut).output, model.output)
        features, x_train, y_train = _feature_arrays(model, images, labels, train_idx, spec,
                                                     cut, cache)
        history, best_epoch, val_proba = fit_cached(
            trainable, (x_train, y_train), (features[val_idx], labels[val_idx]), spec,
            class_weight)
    else:
        x_train, y_train = images[train_idx], labels[train_idx]
        train = image_batches(x_train, y_train, spec, shuffle=True, rotate=spec.rotates)
        val = image_batches(images[val_idx], labels[val_idx], spec, shuffle=False, rotate=False)
        history, best_epoch = fit_best_epoch(model, train, val, spec, class_weight)
        val_proba = model.predict(val, verbose=0)
    metadata = {
        "backbone": spec.backbone, "input_mode": spec.input_mode, "weights": settings.weights,
        "weights_origin": origin, "training_path": spec.path, "cut_layer": cut,
        "spec": spec.as_dict(), "config_hash": stable_hash(spec.key_fields()),
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
        input_mode=spec.input_mode, load_keras=lambda: model, classes=tuple(dataset.classes),
        last_conv_layer=last_conv, embedding_layer=embedding, metadata=metadata,
        border_fraction=spec.border_fraction, input_size=spec.image_size)


def classifier_stage_inputs(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray,
                  spec: ClassifierSpec, cache: StageCache) -> dict[str, Any]:
    settings = spec.settings
    _, origin = resolve_weights(settings.weights, spec.backbone, settings.alpha,
                                spec.image_size, list(settings.weights_dirs), cache.hash_file)
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
    train_idx, val_idx = _training_rows(train_idx, val_idx)
    if cache is None:
        trained = _train(dataset, train_idx, val_idx, spec, cache)
    else:
        computed: list[TrainedModel] = []  # filled when this call trains (not on reuse)

        def compute(tmp: Path) -> None:
            computed.append(_train(dataset, train_idx, val_idx, spec, cache))
            save_trained(computed[-1], tmp)

        def load(folder: Path) -> TrainedModel:
            trained = computed[-1] if computed else load_trained(folder)
            trained.path = folder
            return trained

        trained = cache.run_and_load(
            "classifier", classifier_stage_inputs(dataset, train_idx, val_idx, spec, cache),
            compute, load)
    if out_dir is not None:
        save_trained(trained, out_dir)
        trained.path = Path(out_dir)
    return trained


def attach_cached_rows(trained: TrainedModel, dataset: Dataset, spec: ClassifierSpec,
                       cache: StageCache) -> TrainedModel:
    """``trained``, scoring and embedding ``dataset``'s rows from the features its training
    cached (``models.trained.CachedRows``) from now on.

    Training on the cached path leaves the features at the cut of every dataset row in
    ``cache``; the part above the cut applied to them gives what the whole model gives on
    the images, without running the backbone over the rows again or tracing the whole
    model's predict. A classifier ``spec`` trains end to end is returned as it is.

    Args:
        trained: the classifier ``train_classifier`` returned for ``spec`` (or its saved
            copy, loaded).
        dataset: the dataset it was trained on.
        spec: the classifier's spec.
        cache: the stage cache it was trained with.
    """
    if spec.path != "cached":
        return trained
    cut = trained.metadata["cut_layer"]
    features = frozen_features(ModeImages(dataset, spec.input_mode, spec.border_fraction),
                               _cut_features(lambda: trained.keras_model, spec, cut), cache)
    trained.cached_rows = CachedRows(dataset.data_key, dataset.masks_key, cut, features)
    return trained


def train_and_score(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray,
                    score_idx: np.ndarray, spec: ClassifierSpec, cache: StageCache) -> np.ndarray:
    """The class probabilities of rows ``score_idx`` under the classifier ``spec`` trains
    on rows ``train_idx`` (its epoch chosen on ``val_idx``), trained into the cache when it
    is not there yet.

    For a job that needs a classifier's scores, not the classifier: the rows are scored
    from the features training cached (``attach_cached_rows``), and the probabilities are a
    stage of their own, keyed on the classifier's stage inputs and the rows, so an
    unchanged rerun reads them back without training or loading the classifier (seconds
    for a backbone).

    Returns:
        ``(len(score_idx), n_classes)`` float32 probabilities, in row order.
    """
    train_idx, val_idx = _training_rows(train_idx, val_idx)
    score_idx = np.asarray(score_idx, dtype=np.int64)

    def compute(tmp: Path) -> None:
        trained = attach_cached_rows(train_classifier(dataset, train_idx, val_idx, spec, cache),
                                     dataset, spec, cache)
        np.save(tmp / SCORES_FILE, trained.predict_proba(dataset, score_idx))

    return cache.run_and_load(
        "classifier_scores",
        {"classifier": classifier_stage_inputs(dataset, train_idx, val_idx, spec, cache),
         "rows": hash_array(score_idx)},
        compute, lambda folder: np.load(folder / SCORES_FILE))


def _training_rows(train_idx: np.ndarray, val_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both row sets as int64 arrays.

    Raises:
        ValueError: either is empty.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"train_classifier needs training and validation rows, got "
                         f"{len(train_idx)} and {len(val_idx)}")
    return train_idx, val_idx


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
        ``{"spec", "training_path", "folds": [{"fold", "best_epoch", "weights_origin",
        "metrics"}], "mean": models.metrics.fold_summary of the folds' metrics, "pooled":
        out-of-fold metrics with CIs, "mean_history": per-epoch means over folds}``.
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
    pooled = classification_metrics(np.concatenate(truth), np.concatenate(proba),
                                    dataset.classes, seed=spec.seed)
    mean_history = {name: np.mean([h[name] for h in histories], axis=0).tolist()
                    for name in histories[0]}
    return {"spec": spec.as_dict(), "training_path": spec.path, "folds": folds,
            "mean": fold_summary([fold["metrics"] for fold in folds]), "pooled": pooled,
            "mean_history": mean_history}
