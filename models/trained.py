"""A trained classifier as the rest of the tool sees it (ours or a user's external model).

The Keras model is *flat* (the head applied to the backbone's output tensor, not a nested
backbone layer) so Grad-CAM can reach the last convolutional layer by name, and it carries
its own preprocessing: it takes plain pixel arrays ``(n, S, S, 3)`` float32 in 0..255.

A model's ``identity`` is a content hash of what decides every number a probe reads from
it: the weight arrays in order, how inputs are prepared (input mode, border fraction,
size, channels), the class order, the layers Grad-CAM and embeddings read, and for an
external model its preprocessing spec (scaling is a ``Rescaling`` layer's setting, not a
weight). It is computed from the loaded model, so a model saved and loaded again (weights
round-trip exactly) has the identity it had, whatever file or folder it came from; stage
keys use it instead of a name.

A saved model (``models.saving.load_trained``) reads its Keras file on first use of
``keras_model``, its identity the one recorded beside it: an unchanged rerun, whose probes
come from the cache, loads no network (and imports no TensorFlow) to name its models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.core.cache import hash_array, stable_hash
from audit.core.errors import InputError
from models.inputs import apply_input_mode

_PREDICT_ROWS = 512  # rows turned into float32 model input at a time (bounds memory)

if TYPE_CHECKING:
    import keras

    from audit.data.dataset import Dataset


@dataclass(frozen=True)
class CachedRows:
    """The features at a model's cut layer for every row of one dataset, as its training
    cached them (``models.train.attach_cached_rows``): the layers above the cut turn them
    into what the whole model gives on those rows (the layers below are a fixed function of
    the image; float noise only), without running the backbone again."""

    data_key: str
    masks_key: str | None
    cut_layer: str
    features: np.ndarray  # (n_rows, ...), read from the cache stage

    def covers(self, dataset: Dataset) -> bool:
        """Whether ``dataset`` is the one the features are of: same data, masks and rows."""
        return ((dataset.data_key, dataset.masks_key, len(dataset))
                == (self.data_key, self.masks_key, len(self.features)))


@dataclass
class TrainedModel:
    key: str  # "<backbone>/<input_mode>", e.g. "mobilenetv2/raw"
    backbone: str
    input_mode: str
    load_keras: Callable[[], keras.Model] = field(repr=False, compare=False)
    """Gives the Keras model, called once, on first use of ``keras_model``."""
    classes: tuple[str, ...]
    last_conv_layer: str  # layer Grad-CAM differentiates against
    embedding_layer: str  # penultimate (pre-softmax) layer for embedding probes
    metadata: dict[str, Any] = field(default_factory=dict)
    """Backbone, weights origin, input mode, training path, config hash, data hash, split,
    seed, library versions, metrics: also written next to the saved model."""
    path: Path | None = None
    border_fraction: float = 0.10  # used by the ``border_only`` input mode
    input_size: int = 224  # side the Keras model expects; images are resized to it
    channels: int = 3
    recorded_identity: str | None = None
    """A saved model's identity as recorded beside it; the loaded network must have it."""
    identity: str = field(init=False)
    """Content hash of the weights and the preprocessing (module docstring)."""
    cached_rows: CachedRows | None = field(default=None, repr=False, compare=False)
    """When set, ``predict_proba`` and ``embed`` of that dataset's rows read its features."""
    _parts: dict[tuple[str | None, str | None], keras.Model] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.identity = self.recorded_identity or self.identity_of(self.keras_model)

    @cached_property
    def keras_model(self) -> keras.Model:
        model = self.load_keras()
        if self.recorded_identity is not None and (
                found := self.identity_of(model)) != self.recorded_identity:
            raise InputError(f"{self.path}: the network's weights do not match the identity "
                             f"recorded with it ({self.recorded_identity} recorded, {found} "
                             "loaded); save the model again")
        return model

    def identity_of(self, keras_model: keras.Model) -> str:
        """The identity this model has with ``keras_model`` as its network."""
        weights = [hash_array(np.asarray(array)) for array in keras_model.get_weights()]
        return stable_hash({
            "weights": weights, "input_mode": self.input_mode,
            "border_fraction": self.border_fraction, "input_size": self.input_size,
            "channels": self.channels, "classes": list(self.classes),
            "last_conv_layer": self.last_conv_layer, "embedding_layer": self.embedding_layer,
            "external_spec": self.metadata.get("external_spec"),
        })

    def model_inputs(self, dataset: Dataset, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the dataset as this model's input: mode applied, resized, float32."""
        idx = np.asarray(idx)
        masks = dataset.masks[idx] if dataset.masks is not None else None
        return self.image_inputs(dataset.images[idx], masks)

    def image_inputs(self, images: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(n, S, S)`` images (and their lung masks, for a masked input mode) as
        this model's input: mode applied, resized, float32."""
        images = apply_input_mode(images, self.input_mode, masks, self.border_fraction)
        return to_model_array(images, self.input_size, self.channels)

    def predict_proba(self, dataset: Dataset, idx: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self._rows_at(None, dataset, idx, batch_size)

    def predict_images(self, images: np.ndarray, masks: np.ndarray | None = None,
                       batch_size: int = 64) -> np.ndarray:
        """Class probabilities of images that are no dataset rows (the swap checks'
        composites): uint8 ``(n, S, S)``, with their lung masks for a masked input mode."""
        parts = [predict_in_full_batches(
                     self.keras_model,
                     self.image_inputs(images[start:start + _PREDICT_ROWS],
                                       None if masks is None
                                       else masks[start:start + _PREDICT_ROWS]),
                     batch_size)
                 for start in range(0, max(len(images), 1), _PREDICT_ROWS)]
        return np.concatenate(parts)

    def embed(self, dataset: Dataset, idx: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self._rows_at(self.embedding_layer, dataset, idx, batch_size)

    def _rows_at(self, output_layer: str | None, dataset: Dataset, idx: np.ndarray,
                 batch_size: int) -> np.ndarray:
        """The output of ``output_layer`` (None: the model's) for dataset rows ``idx``: from
        their cached features when ``cached_rows`` covers the dataset, else from the images."""
        if self.cached_rows is not None and self.cached_rows.covers(dataset):
            return predict_in_full_batches(
                self._part(self.cached_rows.cut_layer, output_layer),
                np.asarray(self.cached_rows.features[np.asarray(idx)]), batch_size)
        return self._predict(self._part(None, output_layer), dataset, idx, batch_size)

    def _part(self, start_layer: str | None, output_layer: str | None) -> keras.Model:
        """The layers of ``keras_model`` from ``start_layer``'s output (None: its input) to
        ``output_layer``'s (None: its output), built on first use and kept: every new Keras
        model traces its predict function again (seconds for a backbone)."""
        if start_layer is None and output_layer is None:
            return self.keras_model
        key = (start_layer, output_layer)
        if key not in self._parts:
            import keras

            model = self.keras_model
            # inputs[0], not the list: a one-element list makes Keras 3 expect list inputs
            # and warn.
            start = model.inputs[0] if start_layer is None else model.get_layer(start_layer).output
            end = model.output if output_layer is None else model.get_layer(output_layer).output
            self._parts[key] = keras.Model(start, end)
        return self._parts[key]

    def _predict(self, model: keras.Model, dataset: Dataset, idx: np.ndarray,
                 batch_size: int) -> np.ndarray:
        """``model`` over rows ``idx``, building the float32 inputs ``_PREDICT_ROWS`` rows at
        a time (all 3,400 rows of a fold at 224 px would be 2 GB of input at once)."""
        idx = np.asarray(idx)
        parts = [predict_in_full_batches(
                     model, self.model_inputs(dataset, idx[start:start + _PREDICT_ROWS]),
                     batch_size)
                 for start in range(0, max(len(idx), 1), _PREDICT_ROWS)]
        return np.concatenate(parts)


def predict_in_full_batches(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model.predict(x)`` with every batch ``batch_size`` rows: a short last batch is
    padded with zero rows, which are dropped from the output.

    Keras traces a model's predict function again for each new batch shape (until it
    generalises), and a short last batch is one: seconds for a backbone, each time a new
    model or a new row count comes along. With full batches only, each model is traced
    once, for the price of computing fewer than ``batch_size`` padding rows. Rows do not
    interact at inference (BatchNormalization uses its moving statistics), so the padding
    changes no other row's output.

    Args:
        model: Any Keras model taking ``x``'s rows.
        x: The inputs, ``(n, ...)``.
        batch_size: Rows per predict batch.

    Returns:
        The model's output for the ``n`` rows of ``x``, as an array.
    """
    n = len(x)
    padding = -n % batch_size
    if padding:
        x = np.concatenate([x, np.zeros((padding, *x.shape[1:]), dtype=x.dtype)])
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))[:n]


def to_model_array(images: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """uint8 ``(n, S, S)`` -> float32 ``(n, size, size, channels)`` in 0..255."""
    x = np.asarray(images, dtype=np.float32)
    if x.shape[1] != size or x.shape[2] != size:
        import tensorflow as tf

        x = tf.image.resize(x[..., None], (size, size), antialias=True).numpy()[..., 0]
    x = x[..., None]
    if channels == 3:
        x = np.repeat(x, 3, axis=-1)
    return x
