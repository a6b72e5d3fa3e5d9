"""Grad-CAM, compiled once per model: the raw maps the attention checks measure.

``GradCam`` computes the same raw maps as tf-keras-vis' ``Gradcam`` with
``ReplaceToLinear`` (class score taken from the logits, not the softmax; channel weights
are the spatial mean of the score's gradient; ReLU of the weighted channel sum; no
min-max normalisation, no upsampling), but as one ``tf.function`` traced once, which is
several times faster than tf-keras-vis' eager per-call model rebuild. tf-keras-vis stays
the reference (``reference_gradcam``) and the home of the wider method family
(Grad-CAM++, Score-CAM).

Maps are *raw*: the attention checks compare mass ratios, which min-max standardisation
would distort. ``explain_rows`` is the service the pipeline caches and hands to the probes
(``ProbeContext.explanations``); ``upsample_cams`` brings maps to the image side for
``probes.regions``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from models.explanations import CAM_TARGETS, Explanations

if TYPE_CHECKING:
    import keras

    from audit.data.dataset import Dataset
    from models.trained import TrainedModel

class GradCam:
    """Batched Grad-CAM of a flat Keras classifier at its conv layer's resolution.

    Args:
        model: A flat Keras model whose last layer produces the class scores: a ``Dense``
            layer (any activation; its pre-activation logits are used) or an
            ``Activation`` layer (its input is used).
        layer_name: Name of the convolutional layer (or its activation) to explain.
        batch_size: Images per compiled call. Defaults to 32.

    Example::

        explained = GradCam(trained.keras_model, trained.last_conv_layer).explain(x, labels)
        explained.cams["predicted"]  # (n, h, w) raw maps of each image's predicted class
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
        self._compiled_explain = tf.function(self._batch_explain, input_signature=signature)

    def explain(self, x: np.ndarray, true_class: np.ndarray) -> Explanations:
        """Each image's predicted class and its raw Grad-CAMs for the predicted and for the
        true class, from a single forward pass per image.

        The gradient of a class score with respect to the conv maps only runs back through
        the layers after them (the head), so the second map costs little next to the
        forward pass; predicting first and explaining afterwards would run it twice.
        """
        x, true_class = self._validated(x, true_class)
        predicted = np.empty(len(x), dtype=np.int64)
        cams = {target: np.empty((len(x), *self.resolution), dtype=np.float32)
                for target in CAM_TARGETS}
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            batch = self._compiled_explain(x[start:stop], true_class[start:stop])
            predicted[start:stop] = batch[0].numpy()
            cams["predicted"][start:stop] = batch[1].numpy()
            cams["true"][start:stop] = batch[2].numpy()
        return Explanations(predicted_class=predicted, cams=cams)

    def _batch_explain(self, x: tf.Tensor, true_class: tf.Tensor) -> tuple[tf.Tensor, ...]:
        with _recording(x) as tape:
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

    def _validated(self, x: np.ndarray, true_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        true_class = np.asarray(true_class)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(
                f"Grad-CAM input must have shape (n, {', '.join(map(str, self.input_shape))}); "
                f"got {x.shape}"
            )
        if true_class.shape != (len(x),):
            raise ValueError(
                f"true_class must have one class per image, shape ({len(x)},); "
                f"got {true_class.shape}"
            )
        if len(true_class) and (true_class.min() < 0 or true_class.max() >= self.n_classes):
            raise ValueError(
                f"true_class must lie in 0..{self.n_classes - 1}; got values "
                f"{true_class.min()}..{true_class.max()}"
            )
        return x, true_class.astype(np.int32)


def explain_rows(trained: TrainedModel, dataset: Dataset, rows: np.ndarray) -> Explanations:
    """Grad-CAMs of ``trained`` for the dataset's ``rows``, in the model's input mode, for
    each image's predicted and true class (``dataset.labels``)."""
    rows = np.asarray(rows)
    gradcam = GradCam(trained.keras_model, trained.last_conv_layer)
    return gradcam.explain(trained.model_inputs(dataset, rows), dataset.labels[rows])


@contextmanager
def _recording(x: tf.Tensor) -> Iterator[tf.GradientTape]:
    # Watching the input records every op, so the gradient can reach the intermediate
    # maps even when the backbone's weights are frozen (not watched by default).
    # Persistent: one forward pass gives the gradients of two class scores.
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
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
