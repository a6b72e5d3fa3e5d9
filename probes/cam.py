"""Grad-CAM, compiled once per model, plus the mass-ratio helpers the attention checks use.

``GradCam`` computes the same raw maps as tf-keras-vis' ``Gradcam`` with
``ReplaceToLinear`` (class score taken from the logits, not the softmax; channel weights
are the spatial mean of the score's gradient; ReLU of the weighted channel sum; no
min-max normalisation, no upsampling), but as one ``tf.function`` traced once, which is
several times faster than tf-keras-vis' eager per-call model rebuild. tf-keras-vis stays
the reference (``reference_gradcam``) and the home of the wider method family
(Grad-CAM++, Score-CAM).

Maps are *raw*: the attention checks compare mass ratios, which min-max standardisation
would distort. The map helpers measure them: ``upsample_cams``, ``mass_fraction``,
``measure`` (region shares with a cell-shuffled random-CAM baseline) and
``zone_enrichment`` (corners, edges and centre at the CAM's own resolution).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    import keras

RANDOM_CAM_DRAWS = 8  # cell shuffles averaged into the random-CAM baseline of ``measure``
MEASURE_CHUNK = 32  # images upsampled at a time (bounds memory at large image sizes)


class GradCam:
    """Batched Grad-CAM of a flat Keras classifier at its conv layer's resolution.

    Args:
        model: A flat Keras model whose last layer produces the class scores: a ``Dense``
            layer (any activation; its pre-activation logits are used) or an
            ``Activation`` layer (its input is used).
        layer_name: Name of the convolutional layer (or its activation) to explain.
        batch_size: Images per compiled call. Defaults to 32.

    Example::

        cams = GradCam(trained.keras_model, trained.last_conv_layer)(x, classes)
        explained = GradCam(trained.keras_model, trained.last_conv_layer).explain(x, labels)
    """

    def __init__(self, model: keras.Model, layer_name: str, batch_size: int = 32):
        import keras

        conv_output = _get_layer(model, layer_name).output
        if len(conv_output.shape) != 4:
            raise ValueError(
                f"Grad-CAM layer {layer_name!r} must output (batch, h, w, channels) maps; "
                f"its output shape is {tuple(conv_output.shape)}"
            )
        score_layer = model.layers[-1]
        self._logits = _logits_function(score_layer)
        self._maps_and_scores = keras.Model(model.inputs, [conv_output, score_layer.input])
        self.n_classes = int(model.output_shape[-1])
        self.input_shape = tuple(model.input_shape[1:])
        self.resolution = tuple(int(d) for d in conv_output.shape[1:3])
        self.batch_size = batch_size
        signature = [tf.TensorSpec((None, *self.input_shape), tf.float32),
                     tf.TensorSpec((None,), tf.int32)]
        self._compiled = tf.function(self._batch_cams, input_signature=signature)
        self._compiled_explain = tf.function(self._batch_explain, input_signature=signature)

    def __call__(self, x: np.ndarray, class_idx: np.ndarray) -> np.ndarray:
        """Raw Grad-CAMs ``(n, h, w)`` float32 of ``x`` ``(n, *input_shape)`` for ``class_idx``."""
        x, class_idx = self._validated(x, class_idx)
        cams = np.empty((len(x), *self.resolution), dtype=np.float32)
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            cams[start:stop] = self._compiled(x[start:stop], class_idx[start:stop]).numpy()
        return cams

    def explain(self, x: np.ndarray, true_class: np.ndarray) -> Explanation:
        """Each image's predicted class and its raw Grad-CAMs for the predicted and for the
        true class, from a single forward pass per image.

        The gradient of a class score with respect to the conv maps only runs back through
        the layers after them (the head), so the second map costs little next to the
        forward pass; predicting first and explaining afterwards would run it twice.
        """
        x, true_class = self._validated(x, true_class)
        predicted = np.empty(len(x), dtype=np.int64)
        cams = {target: np.empty((len(x), *self.resolution), dtype=np.float32)
                for target in ("predicted", "true")}
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            batch = self._compiled_explain(x[start:stop], true_class[start:stop])
            predicted[start:stop] = batch[0].numpy()
            cams["predicted"][start:stop] = batch[1].numpy()
            cams["true"][start:stop] = batch[2].numpy()
        return Explanation(predicted_class=predicted, cam_predicted=cams["predicted"],
                           cam_true=cams["true"])

    def _batch_cams(self, x: tf.Tensor, class_idx: tf.Tensor) -> tf.Tensor:
        with _recording(x) as tape:
            maps, logits = self._maps_and_logits(x)
            score = _class_score(logits, class_idx)
        return _cam(maps, tape.gradient(score, maps))

    def _batch_explain(self, x: tf.Tensor, true_class: tf.Tensor) -> tuple[tf.Tensor, ...]:
        with _recording(x, persistent=True) as tape:
            maps, logits = self._maps_and_logits(x)
            predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
            predicted_score = _class_score(logits, predicted)
            true_score = _class_score(logits, true_class)
        cam_predicted = _cam(maps, tape.gradient(predicted_score, maps))
        cam_true = _cam(maps, tape.gradient(true_score, maps))
        return predicted, cam_predicted, cam_true

    def _maps_and_logits(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        maps, pre_scores = self._maps_and_scores(x, training=False)
        return maps, self._logits(pre_scores)

    def _validated(self, x: np.ndarray, class_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        class_idx = np.asarray(class_idx)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(
                f"Grad-CAM input must have shape (n, {', '.join(map(str, self.input_shape))}); "
                f"got {x.shape}"
            )
        if class_idx.shape != (len(x),):
            raise ValueError(
                f"class_idx must have one class per image, shape ({len(x)},); got {class_idx.shape}"
            )
        if len(class_idx) and (class_idx.min() < 0 or class_idx.max() >= self.n_classes):
            raise ValueError(
                f"class_idx must lie in 0..{self.n_classes - 1}; got values "
                f"{class_idx.min()}..{class_idx.max()}"
            )
        return x, class_idx.astype(np.int32)


@dataclass(frozen=True)
class Explanation:
    """What ``GradCam.explain`` returns: per image, the predicted class and two raw maps."""

    predicted_class: np.ndarray  # (n,) int64
    cam_predicted: np.ndarray  # (n, h, w) float32, for the predicted class
    cam_true: np.ndarray  # (n, h, w) float32, for the true class


@contextmanager
def _recording(x: tf.Tensor, persistent: bool = False) -> Iterator[tf.GradientTape]:
    # Watching the input records every op, so the gradient can reach the intermediate
    # maps even when the backbone's weights are frozen (not watched by default).
    with tf.GradientTape(persistent=persistent, watch_accessed_variables=False) as tape:
        tape.watch(x)
        yield tape


def _class_score(logits: tf.Tensor, class_idx: tf.Tensor) -> tf.Tensor:
    """Sum over the batch of each image's logit for its class: each image's score depends
    on its own maps only, so one gradient of the sum gives every image's gradient."""
    return tf.reduce_sum(tf.gather(logits, class_idx, axis=1, batch_dims=1))


def _cam(maps: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM: ReLU of the channel sum weighted by the spatial mean of the gradient."""
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(maps * weights, axis=-1))


def _get_layer(model: keras.Model, layer_name: str) -> keras.layers.Layer:
    try:
        return model.get_layer(layer_name)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer {layer_name!r}; its last layers are "
            f"{[layer.name for layer in model.layers[-6:]]}"
        ) from None


def _logits_function(score_layer: keras.layers.Layer) -> Callable[[tf.Tensor], tf.Tensor]:
    """The score layer applied without its activation (what ``ReplaceToLinear`` does)."""
    import keras

    if isinstance(score_layer, keras.layers.Dense):

        def dense_logits(inputs: tf.Tensor) -> tf.Tensor:
            logits = tf.matmul(inputs, score_layer.kernel)
            return logits + score_layer.bias if score_layer.use_bias else logits

        return dense_logits
    if isinstance(score_layer, keras.layers.Activation):
        return tf.identity
    raise ValueError(
        f"The model's last layer {score_layer.name!r} must be a Dense or Activation layer "
        f"producing the class scores; got {type(score_layer).__name__}"
    )


def reference_gradcam(
    model: keras.Model, layer_name: str, x: np.ndarray, class_idx: np.ndarray
) -> np.ndarray:
    """Raw Grad-CAMs from tf-keras-vis (the reference ``GradCam`` is tested against).

    Uses ``Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)`` with
    ``normalize_cam=False`` and ``expand_cam=False`` (tf-keras-vis 0.8.7 names; older
    releases called the first ``standardize_cam``) and ``seek_penultimate_conv_layer=False``
    so it differentiates against exactly ``layer_name``.
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    gradcam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
    cams = gradcam(
        CategoricalScore([int(c) for c in class_idx]),
        np.asarray(x, dtype=np.float32),
        penultimate_layer=layer_name,
        seek_penultimate_conv_layer=False,
        normalize_cam=False,
        expand_cam=False,
    )
    return np.asarray(cams, dtype=np.float32)


def upsample_cams(cams: np.ndarray, size: int, batch_size: int = 256) -> np.ndarray:
    """Bilinear upsampling of ``(n, h, w)`` maps to ``(n, size, size)`` float32.

    Bilinear interpolation of non-negative maps stays non-negative, so masses stay
    comparable. ``batch_size`` bounds the temporary memory. Defaults to 256.
    """
    cams = np.asarray(cams, dtype=np.float32)
    out = np.empty((len(cams), size, size), dtype=np.float32)
    for start in range(0, len(cams), batch_size):
        chunk = cams[start : start + batch_size, ..., None]
        out[start : start + batch_size] = tf.image.resize(chunk, (size, size)).numpy()[..., 0]
    return out


def mass_fraction(cams: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per image, the fraction of positive CAM mass inside ``regions``.

    Args:
        cams: ``(n, S, S)`` maps (negative values are ignored).
        regions: ``(S, S)`` or ``(n, S, S)`` masks, nonzero inside the region.

    Returns:
        ``(n,)`` float64 fractions in 0..1; NaN for an image whose map has no positive mass.
    """
    positive = np.clip(np.asarray(cams, dtype=np.float64), 0.0, None)
    regions = np.asarray(regions) > 0
    if regions.shape[-2:] != positive.shape[-2:]:
        raise ValueError(
            f"regions shape {regions.shape} does not match the maps' {positive.shape[-2:]}"
        )
    total = positive.sum(axis=(1, 2))
    inside = (positive * regions).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full_like(total, np.nan), where=total > 0)


ZONES = ("top-left", "top", "top-right", "left", "centre", "right",
         "bottom-left", "bottom", "bottom-right")
"""The 3x3 zones of ``zone_enrichment``, row by row."""


def zone_enrichment(cams: np.ndarray, width: int = 1) -> np.ndarray:
    """Per image, each zone's share of positive CAM mass divided by its share of the cells.

    The map is cut into corners, edges and centre by a band of ``width`` cells along every
    side (corners are ``width`` x ``width``), at the CAM's own resolution, so "where" is
    read without interpolation. 1 means the zone got the attention its size would get.

    Args:
        cams: ``(n, h, w)`` maps, ``h, w > 2 * width``.
        width: band width in cells. Defaults to 1.

    Returns:
        ``(n, 9)`` float64 in ``ZONES`` order; NaN rows for maps without positive mass.
    """
    positive = np.clip(np.asarray(cams, dtype=np.float64), 0.0, None)
    n, h, w = positive.shape
    if min(h, w) <= 2 * width:
        raise ValueError(f"zone_enrichment: maps of {h}x{w} cells are too small for a "
                         f"{width}-cell band; need more than {2 * width} cells a side")
    total = positive.sum(axis=(1, 2))
    out = np.full((n, 9), np.nan)
    bounds = [((0, width), (width, side - width), (side - width, side)) for side in (h, w)]
    for zone, ((top, bottom), (left, right)) in enumerate(
        (rows, cols) for rows in bounds[0] for cols in bounds[1]
    ):
        block = positive[:, top:bottom, left:right]
        area = block.shape[1] * block.shape[2] / (h * w)
        np.divide(block.sum(axis=(1, 2)) / area, total, out=out[:, zone], where=total > 0)
    return out


@dataclass(frozen=True)
class Measurement:
    """Per-image shares of one model's CAMs in the region (NaN: no positive mass)."""

    share: np.ndarray
    random_share: np.ndarray
    peak_in_region: np.ndarray


def measure(cams: np.ndarray, regions: np.ndarray, size: int, seed: int) -> Measurement:
    """Shares of positive CAM mass in ``regions`` at image side ``size``, with a random-CAM
    baseline and whether each map's peak lies in the region.

    The random CAM is each map with its cells shuffled (``RANDOM_CAM_DRAWS`` draws from
    ``seed``, averaged), measured the same way: same mass and values, random position.

    Args:
        cams: ``(n, h, w)`` raw maps.
        regions: ``(size, size)`` shared or ``(n, size, size)`` per-image region masks.
        size: image side the maps are upsampled to.
        seed: seed of the shuffles.
    """
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(cams), MEASURE_CHUNK):
        chunk = slice(start, start + MEASURE_CHUNK)
        region = regions if regions.ndim == 2 else regions[chunk]
        maps = upsample_cams(cams[chunk], size)
        peaks = maps.reshape(len(maps), -1).argmax(axis=1)
        flat_region = np.broadcast_to(region, maps.shape).reshape(len(maps), -1)
        random = [mass_fraction(upsample_cams(_shuffle_cells(cams[chunk], rng), size), region)
                  for _ in range(RANDOM_CAM_DRAWS)]
        parts.append((mass_fraction(maps, region), np.mean(random, axis=0),
                      flat_region[np.arange(len(maps)), peaks]))
    share, random_share, peak = (np.concatenate(column) for column in zip(*parts, strict=True))
    return Measurement(share=share, random_share=random_share, peak_in_region=peak)


def _shuffle_cells(cams: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each map's cells in a random order: same mass and values, random position."""
    flat = cams.reshape(len(cams), -1)
    return rng.permuted(flat, axis=1).reshape(cams.shape)
