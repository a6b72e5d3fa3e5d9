"""Small flat Keras classifiers for the Grad-CAM and attention tests (engineer ATTENTION).

Flat means the head is applied to the backbone's output tensor, as the models layer
builds them, so Grad-CAM reaches the conv layer by name. Weights files come from the
repo's sibling ``shared/weights`` folder; tests needing them skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from audit.core.cache import StageCache
from audit.core.config import ProbesConfig
from audit.data.dataset import Dataset, Splits
from audit.pipeline import explanation_service
from models.trained import TrainedModel
from probes.base import ProbeContext
from tests.conftest import MOBILENET_V2_035
from tests.probe_fixtures import probe_context


def tiny_cnn(size: int = 32, n_classes: int = 4, seed: int = 0) -> keras.Model:
    """A two-conv CNN taking 0..255 pixels; Grad-CAM layer ``"last_relu"`` at size/2."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init)(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="last_conv", kernel_initializer=init)(x)
    x = keras.layers.ReLU(name="last_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="relu", kernel_initializer=init)(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=init)(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def flat_mobilenet_v2(size: int = 96, n_classes: int = 4, seed: int = 0) -> keras.Model:
    """The paper's head (GAP + dense + dropout + softmax) on a frozen ImageNet MobileNetV2 0.35.

    Takes 0..255 pixels (preprocessing inside); Grad-CAM layer ``"out_relu"``.
    """
    inputs = keras.Input((size, size, 3))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    base = keras.applications.MobileNetV2(  # built on ``scaled``: its layers join this graph
        input_tensor=scaled, alpha=0.35, include_top=False, weights=str(MOBILENET_V2_035)
    )
    base.trainable = False
    init = keras.initializers.GlorotUniform(seed=seed)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    x = keras.layers.Dense(32, activation="relu", kernel_initializer=init, name="head_dense")(x)
    x = keras.layers.Dropout(0.3, seed=seed, name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=init,
                                 name="predictions")(x)
    return keras.Model(inputs, outputs, name="flat_mobilenet_v2")


def train_flat_mobilenet_v2(
    dataset: Dataset, train_rows: np.ndarray, input_mode: str = "raw", input_size: int = 224,
    epochs: int = 40, seed: int = 0,
) -> TrainedModel:
    """Frozen ImageNet MobileNetV2 0.35 with a head trained on its cached feature maps.

    A stand-in for ``models.train.train_classifier`` that keeps the tests self-contained
    and fast: the backbone runs once over the training images, then only the head trains.
    """
    model = flat_mobilenet_v2(size=input_size, n_classes=len(dataset.classes), seed=seed)
    trained = TrainedModel(
        key=f"mobilenetv2/{input_mode}", backbone="mobilenetv2", input_mode=input_mode,
        load_keras=lambda: model, classes=dataset.classes, last_conv_layer="out_relu",
        embedding_layer="head_dense", input_size=input_size,
    )
    conv = model.get_layer("out_relu").output
    maps = keras.Model(model.inputs, conv).predict(
        trained.model_inputs(dataset, train_rows), batch_size=64, verbose=0)
    head_input = keras.Input(tuple(conv.shape[1:]))
    x = head_input
    for name in ("head_pool", "head_dense", "head_dropout", "predictions"):
        x = model.get_layer(name)(x)  # shared layers: training the head trains ``model``
    head = keras.Model(head_input, x)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    head.fit(maps, dataset.labels[train_rows], epochs=epochs, batch_size=32, verbose=0,
             shuffle=False)
    return trained


def synthetic_context(
    tmp_path: Path, dataset: Dataset, models: list[TrainedModel], test_rows: np.ndarray,
    seed: int = 0, cache: StageCache | None = None, **params,
) -> ProbeContext:
    """A probe context over ``dataset`` with ``models`` (the first is audited) and the
    pipeline's Grad-CAM service on ``cache`` (default: a new one in ``tmp_path/cache``)."""
    train_rows = np.setdiff1d(np.arange(len(dataset)), test_rows)
    splits = Splits(train=train_rows, test=np.asarray(test_rows), folds=((train_rows, test_rows),),
                    seed=seed)
    by_key = {m.key: m for m in models}
    explanations = explanation_service(dataset, by_key, cache or StageCache(tmp_path / "cache"))
    return probe_context(dataset, splits, models=by_key, audited=models[0].key,
                         params=ProbesConfig(**params), explanations=explanations, seed=seed)


def half_split(dataset: Dataset, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label-stratified 50/50 (train, test) rows."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(dataset))
    train, test = train_test_split(rows, test_size=0.5, stratify=dataset.labels, random_state=seed)
    return np.sort(train), np.sort(test)


def brightness_model(size: int = 64, cells: int = 8) -> keras.Model:
    """A fixed (untrained) model whose Grad-CAM for class 0 is the image's brightness.

    Pixels are scaled and averaged into a ``cells`` x ``cells`` map (layer ``"cells"``); class
    0's logit is that map's mean, class 1's its negative. So class 0's Grad-CAM is the
    brightness map at cell resolution and class 1's is all zero (no positive mass).
    """
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / (3 * 255.0))(inputs)
    x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="gray")(x)
    x = keras.layers.AveragePooling2D(size // cells, name="cells")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    kernel = keras.initializers.Constant(np.array([[1.0, -1.0, 0.0, 0.0]]))
    outputs = keras.layers.Dense(4, activation="softmax", kernel_initializer=kernel,
                                 bias_initializer="zeros", name="predictions")(x)
    return keras.Model(inputs, outputs, name="brightness")


def brightness_trained(input_mode: str = "raw", size: int = 64) -> TrainedModel:
    return TrainedModel(
        key=f"bright/{input_mode}", backbone="bright", input_mode=input_mode,
        load_keras=lambda: brightness_model(size), classes=("covid", "opacity", "other", "normal"),
        last_conv_layer="cells", embedding_layer="cells", input_size=size,
    )


def lung_phantoms(n: int = 16, size: int = 64, bright: str = "lungs", seed: int = 0) -> Dataset:
    """Gray images with two rectangular 'lungs'; ``bright`` says what is brightest:
    ``"lungs"`` (a lung-focused model) or ``"border"`` (a frame along the edges)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, size // 4 : 3 * size // 4, size // 5 : 2 * size // 5 + 2] = 1
    masks[:, size // 4 : 3 * size // 4, 3 * size // 5 - 2 : 4 * size // 5] = 1
    images = rng.integers(20, 40, (n, size, size)).astype(np.uint8)
    if bright == "lungs":
        images[masks > 0] = 200
    elif bright == "border":
        frame = size // 8
        images[:, :frame], images[:, -frame:] = 220, 220
        images[:, :, :frame], images[:, :, -frame:] = 220, 220
    else:
        raise ValueError(f"bright must be 'lungs' or 'border'; got {bright!r}")
    labels = np.array(["covid", "opacity", "other", "normal"])[np.arange(n) % 4]
    manifest = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "label": labels,
                             "source": "a", "patient_id": [f"p{i}" for i in range(n)],
                             "view": "PA", "mask_path": ""})
    return Dataset(manifest=manifest, images=images, masks=masks, has_mask=np.ones(n, bool),
                   mask_origin="manifest", manifest_hash=f"lung-phantoms-{bright}-{n}-{size}-{seed}")
