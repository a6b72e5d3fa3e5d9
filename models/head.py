"""The paper's classification head (its Fig. 5) and the assembled flat classifier.

The head, applied to the backbone's last feature map::

    GlobalAveragePooling2D            name "head_pool"
    Dense(dense_units, relu)          name "head_dense"    (default 256 units)
    Dropout(dropout)                  name "head_dropout"  (default 0.3, Table 2)
    Dense(n_classes, softmax)         name "predictions"   (4 classes)

Fig. 5 shows pooling, one fully connected layer, dropout and the 4-way softmax; the paper
does not print the dense width, so 256 is our choice (``models.dense_units``). Initial
weights and dropout masks are seeded, so two builds with the same seed train alike.

The classifier is *flat*: the head is applied to ``backbone.output`` inside the same
functional graph as the backbone's own layers (input -> ``preprocess`` -> backbone -> head),
so Grad-CAM reaches the last convolutional layer by name, also after save and load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.backbones import backbone_info, block_cut_layer, build_backbone

if TYPE_CHECKING:
    import keras

HEAD_POOL = "head_pool"
EMBEDDING_LAYER = "head_dense"
OUTPUT_LAYER = "predictions"


def add_head(features, dropout: float = 0.3, dense_units: int = 256, n_classes: int = 4,
             seed: int = 0):
    """Apply the head to a feature-map tensor and return the class-probability tensor.

    Args:
        features: ``(batch, h, w, c)`` symbolic tensor, the backbone's output.
        dropout: dropout rate before the softmax layer. Defaults to 0.3.
        dense_units: width of the hidden dense layer. Defaults to 256.
        n_classes: number of output classes. Defaults to 4.
        seed: seeds the initial weights and the dropout masks. Defaults to 0.
    """
    import keras

    x = keras.layers.GlobalAveragePooling2D(name=HEAD_POOL)(features)
    x = keras.layers.Dense(dense_units, activation="relu", name=EMBEDDING_LAYER,
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    return keras.layers.Dense(n_classes, activation="softmax", name=OUTPUT_LAYER,
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1))(x)


def cut_layer_name(model: keras.Model, backbone: str, unfreeze_blocks: int) -> str:
    """Layer whose output is the input of the trainable part: ``head_pool`` when frozen."""
    if unfreeze_blocks == 0:
        return HEAD_POOL
    return block_cut_layer(model, backbone, unfreeze_blocks)


def set_trainable_top(model: keras.Model, cut_layer: str) -> None:
    """Freeze every layer up to ``cut_layer``; train the layers after it.

    BatchNormalization layers stay frozen everywhere (they then run in inference mode),
    as Keras' fine-tuning guide advises for small data: their statistics stay ImageNet's,
    which also makes the cached-activation path exactly equal to end-to-end training.
    """
    import keras

    names = [layer.name for layer in model.layers]
    first_trainable = names.index(cut_layer) + 1
    for position, layer in enumerate(model.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = position >= first_trainable and not is_bn


def build_classifier(
    backbone: str,
    input_size: int = 224,
    weights: str = "imagenet",
    alpha: float = 1.0,
    dropout: float = 0.3,
    dense_units: int = 256,
    n_classes: int = 4,
    unfreeze_blocks: int = 0,
    weights_dirs: list[Path] | None = None,
    seed: int = 0,
) -> tuple[keras.Model, str, str, str]:
    """Build the flat classifier: pixels 0..255 -> preprocessing -> backbone -> head.

    Args:
        backbone: registry name (``models.backbones.BACKBONES``).
        input_size: square input side. Defaults to 224.
        weights: ``"imagenet"``, ``"none"`` or a weights file path. Defaults to "imagenet".
        alpha: width multiplier, MobileNet family only. Defaults to 1.0.
        dropout: head dropout rate. Defaults to 0.3.
        dense_units: head hidden width. Defaults to 256.
        n_classes: output classes. Defaults to 4.
        unfreeze_blocks: top backbone blocks left trainable; 0 freezes the whole base.
            Defaults to 0.
        weights_dirs: folders searched for local ImageNet files. Defaults to none.
        seed: seeds the head's initial weights and dropout. Defaults to 0.

    Returns:
        ``(model, last_conv_layer, embedding_layer, weights_origin)``.
    """
    import keras

    base, origin = build_backbone(backbone, input_size, weights, alpha, weights_dirs)
    outputs = add_head(base.output, dropout, dense_units, n_classes, seed)
    model = keras.Model(base.inputs[0], outputs, name=f"{backbone}_classifier")
    set_trainable_top(model, cut_layer_name(model, backbone, unfreeze_blocks))
    return model, backbone_info(backbone).last_conv_layer, EMBEDDING_LAYER, origin
