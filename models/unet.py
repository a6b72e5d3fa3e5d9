"""The U-Net itself: build it (optionally with a local ImageNet encoder), predict and
clean lung masks, and measure them.

The network is ``segmentation_models``' U-Net (imported through ``models._sm``). It takes
grayscale images as float ``(n, S, S, 1)`` in the uint8 range 0..255; the model itself
replicates the channel to three and rescales to [-1, 1] (MobileNetV2's ImageNet
convention), so callers never preprocess.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from audit.core.errors import InputError, WeightsUnavailableError
from audit.core.progress import log
from models._sm import import_segmentation_models

if TYPE_CHECKING:
    import keras

BATCH_NORM_MOMENTUM = 0.9
DECODER_FILTERS = (256, 128, 64, 32, 16)
"""``segmentation_models``' default decoder, deepest block first."""


def build_unet(
    encoder: str = "mobilenetv2",
    encoder_weights: str = "none",
    image_size: int = 256,
    decoder_filters: tuple[int, ...] = DECODER_FILTERS,
) -> keras.Model:
    """Build a U-Net that maps grayscale images to a lung probability map.

    Args:
        encoder: A ``segmentation_models`` backbone name. Defaults to "mobilenetv2".
        encoder_weights: "none" (random), "imagenet" (``segmentation_models``' own download,
            needs internet) or the path of a local Keras ``MobileNetV2(include_top=False)``
            weights file, copied into the encoder layer by layer. Defaults to "none".
        image_size: Side of the square input in pixels (a multiple of 32).
            Defaults to 256.
        decoder_filters: Filters of the five decoder blocks, deepest first. Defaults to
            ``segmentation_models``' own (256, 128, 64, 32, 16).

    Returns:
        A Keras model taking float ``(n, S, S, 1)`` in 0..255 and giving ``(n, S, S, 1)``
        sigmoid probabilities.

    Raises:
        WeightsUnavailableError: the ImageNet download failed or the weights file is unusable.
        ValueError: ``image_size`` is not a multiple of 32.
    """
    import keras

    if image_size % 32:
        raise ValueError(f"segmentation.image_size must be a multiple of 32, got {image_size}")
    unet = _sm_unet(encoder, encoder_weights, image_size, tuple(decoder_filters))
    if encoder_weights not in ("none", "imagenet"):
        _copy_encoder_weights(unet, encoder, Path(encoder_weights), image_size)
    for layer in unet.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras' MobileNetV2 keeps moving statistics with momentum 0.999: after the few
            # hundred steps an audit trains for, inference-mode statistics still lag the
            # weights, and a random encoder then predicted nothing (held-out Dice 0.00 on
            # the real set). 0.9 tracks the training data within a few dozen steps.
            layer.momentum = BATCH_NORM_MOMENTUM
    gray = keras.Input((image_size, image_size, 1), name="gray")
    rgb = keras.layers.Concatenate(name="gray_to_rgb")([gray, gray, gray])
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(rgb)
    return keras.Model(gray, unet(scaled), name=f"unet_{encoder}")


def _sm_unet(
    encoder: str, encoder_weights: str, image_size: int, decoder_filters: tuple[int, ...]
) -> keras.Model:
    sm = import_segmentation_models()
    kwargs = dict(input_shape=(image_size, image_size, 3), classes=1, activation="sigmoid",
                  decoder_filters=decoder_filters)
    if encoder_weights != "imagenet":
        return sm.Unet(encoder, encoder_weights=None, **kwargs)
    try:
        return sm.Unet(encoder, encoder_weights="imagenet", **kwargs)
    except Exception as error:  # offline: "URL fetch failure" within a second
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: 'imagenet' weights for encoder {encoder!r} could "
            f"not be downloaded ({error}). Offline, set segmentation.encoder_weights to the "
            "path of a local Keras weights file, e.g. "
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 for "
            "encoder 'mobilenetv2', or to 'none'."
        ) from None


def _copy_encoder_weights(unet: keras.Model, encoder: str, path: Path, image_size: int) -> int:
    """Copy a local Keras MobileNetV2 weights file into the U-Net's encoder by layer name."""
    import keras

    if encoder != "mobilenetv2":
        raise InputError(
            f"segmentation.encoder_weights: a local weights file is supported for encoder "
            f"'mobilenetv2' only, got encoder {encoder!r} with file {path}"
        )
    if not path.is_file():
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: file {path} does not exist (expected a Keras "
            "MobileNetV2 include_top=False weights file, 'imagenet' or 'none')"
        )
    try:
        source = keras.applications.MobileNetV2(
            include_top=False, weights=str(path), input_shape=(image_size, image_size, 3)
        )
    except (OSError, ValueError) as error:
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: {path} is not a MobileNetV2 (alpha 1.0, "
            f"include_top=False) Keras weights file: {error}"
        ) from None
    targets = {layer.name: layer for layer in unet.layers}
    filled = 0
    for layer in source.layers:
        if layer.weights and layer.name in targets:
            targets[layer.name].set_weights(layer.get_weights())
            filled += 1
    expected = sum(1 for layer in source.layers if layer.weights)
    if filled != expected:
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: only {filled} of {expected} MobileNetV2 layers "
            f"of {path} matched the U-Net encoder by name"
        )
    log.info("U-Net encoder: copied %d layers from %s", filled, path)
    return filled



def predict_masks(model: keras.Model, images_uint8: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Predict post-processed lung masks for grayscale images of any square size.

    Images are resized to the U-Net's side, the probability maps back to the images' side
    (bilinear), thresholded at 0.5 and cleaned with ``postprocess_mask``.

    Args:
        model: A model from ``build_unet``.
        images_uint8: ``(N, S, S)`` grayscale images.
        batch_size: Images per forward pass. Defaults to 8.

    Returns:
        ``(N, S, S)`` uint8 masks with values 0/1.
    """
    import tensorflow as tf

    images = np.asarray(images_uint8)
    side, unet_side = images.shape[1], model.input_shape[1]
    masks = np.zeros(images.shape, dtype=np.uint8)
    for start in range(0, len(images), batch_size):
        batch = resize_batch(images[start : start + batch_size], unet_side)[..., None]
        probability = model(batch, training=False)
        if unet_side != side:
            probability = tf.image.resize(probability, (side, side))
        binary = np.asarray(probability)[..., 0] > 0.5
        for offset, mask in enumerate(binary):
            masks[start + offset] = postprocess_mask(mask)
    return masks


def postprocess_mask(mask: np.ndarray) -> np.ndarray:
    """Keep the two largest connected components (the lungs) and fill their holes.

    Args:
        mask: ``(S, S)`` binary mask.

    Returns:
        ``(S, S)`` uint8 mask with values 0/1.
    """
    labelled, count = ndimage.label(mask > 0)
    if count == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    sizes = ndimage.sum_labels(np.ones(mask.shape), labelled, index=np.arange(1, count + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    return ndimage.binary_fill_holes(np.isin(labelled, keep)).astype(np.uint8)


def mask_quality_flags(masks: np.ndarray, min_fraction: float, max_fraction: float) -> list[str]:
    """One flag per mask: "" when plausible, else the reason (e.g. "lung area 3% < 8%").

    Args:
        masks: ``(N, S, S)`` binary masks.
        min_fraction: Lowest plausible lung share of the image.
        max_fraction: Highest plausible lung share of the image.

    Returns:
        A list of N strings.
    """
    fractions = np.asarray(masks).reshape(len(masks), -1).astype(bool).mean(axis=1)
    flags = []
    for fraction in fractions:
        if fraction < min_fraction:
            flags.append(f"lung area {fraction:.0%} < {min_fraction:.0%}")
        elif fraction > max_fraction:
            flags.append(f"lung area {fraction:.0%} > {max_fraction:.0%}")
        else:
            flags.append("")
    return flags



def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of binary ``(n, S, S)`` masks (1.0 when both are empty)."""
    predicted = predicted.reshape(len(predicted), -1) > 0
    truth = truth.reshape(len(truth), -1) > 0
    overlap = (predicted & truth).sum(axis=1)
    total = predicted.sum(axis=1) + truth.sum(axis=1)
    union = total - overlap
    dice = np.where(total > 0, 2 * overlap / np.maximum(total, 1), 1.0)
    iou = np.where(union > 0, overlap / np.maximum(union, 1), 1.0)
    return dice, iou



def resize_batch(arrays: np.ndarray, size: int, binary: bool = False) -> np.ndarray:
    """Resize ``(n, H, W)`` arrays to ``(n, size, size)`` float32 (bilinear; masks re-thresholded)."""
    import tensorflow as tf

    arrays = np.asarray(arrays, dtype=np.float32)
    if arrays.shape[1] != size:
        arrays = tf.image.resize(arrays[..., None], (size, size)).numpy()[..., 0]
    return (arrays > 0.5).astype(np.float32) if binary else arrays

