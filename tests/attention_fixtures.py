"""Small flat Keras classifiers for the Grad-CAM and attention tests (engineer ATTENTION).

Flat means the head is applied to the backbone's output tensor, as the models layer
builds them, so Grad-CAM reaches the conv layer by name. Weights files come from the
repo's sibling ``shared/weights`` folder; tests needing them skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import keras

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "shared" / "weights"
MOBILENET_V2_035 = WEIGHTS_DIR / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


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
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dense(32, activation="relu", kernel_initializer=init)(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=init)(x)
    return keras.Model(inputs, outputs, name="flat_mobilenet_v2")
