"""Bring your own classifier: a saved Keras model plus a small preprocessing spec (YAML).

The spec says how the model wants its input and what its outputs mean::

    input_size: 224            # square side the model takes (its saved size, if fixed)
    channels: 3                # 1 or 3 (grayscale is repeated to 3); the model's own
    scaling: "0-1"             # "0-255" | "0-1" | "-1-1" | "imagenet-caffe" | "imagenet-torch"
    classes: [normal, covid, opacity, other]   # meaning of each output, in output order
    last_conv_layer: conv_pw_13_relu           # optional: found automatically otherwise
    embedding_layer: dense                     # optional: the layer before the output
    backbone: mobilenet                        # optional label for reports

Both are checked against the model's saved input: a model saved with a fixed size must be
given that size (the spec cannot resize it, and re-applying a convolutional model to
another size often runs and silently changes the numbers); a model saved for any size
``(None, None, channels)`` is run at the spec's ``input_size``.

The loaded model is wrapped so it follows ``TrainedModel``'s convention (float32 pixels
0..255 in, probabilities in ``CLASSES`` order out): a ``Rescaling`` layer maps 0..255 to
the model's own scale, and the output layer's units are permuted into our class order.
The model's layers are re-applied to the new input (the same layer objects, so the same
weights), which keeps the result flat: a backbone nested as one layer of a simple chain
(``Model(x, head(backbone(x)))``, ``Sequential([backbone, ...])``) is expanded in place, so
Grad-CAM can reach its convolutions. A nested model inside a branching graph cannot be
expanded; it is kept as it is and the metadata says Grad-CAM cannot reach it
(``gradcam_available: false``). The spec is kept in the metadata (``external_spec``) and is
part of the model's ``identity`` with its weights: two models of one ``backbone`` label
are told apart by content, not by their file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audit.core.cache import hash_file
from audit.core.config import CLASSES
from audit.core.errors import InputError
from audit.core.io import read_text
from models.trained import TrainedModel

if TYPE_CHECKING:
    import keras

SCALINGS = {
    "0-255": {"scale": 1.0, "offset": 0.0},
    "0-1": {"scale": 1.0 / 255.0, "offset": 0.0},
    "-1-1": {"scale": 1.0 / 127.5, "offset": -1.0},
    "imagenet-caffe": {"scale": 1.0, "offset": [-103.939, -116.779, -123.68]},
    "imagenet-torch": {"scale": [1 / (255 * s) for s in (0.229, 0.224, 0.225)],
                       "offset": [-m / s for m, s in ((0.485, 0.229), (0.456, 0.224),
                                                       (0.406, 0.225))]},
}


class ExternalSpec(BaseModel):
    """The preprocessing spec of an external model (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_size: int = Field(ge=8)
    channels: Literal[1, 3] = 3
    scaling: Literal["0-255", "0-1", "-1-1", "imagenet-caffe", "imagenet-torch"]
    classes: list[Literal["covid", "opacity", "other", "normal"]]
    last_conv_layer: str | None = None
    embedding_layer: str | None = None
    backbone: str = "external"


def read_spec(spec_path: str | Path) -> ExternalSpec:
    """Read and validate a spec file; ``InputError`` names the file and each bad key."""
    spec_path = Path(spec_path)
    try:
        raw = yaml.safe_load(read_text(spec_path, "model spec"))
    except yaml.YAMLError as error:
        raise InputError(f"{spec_path}: not valid YAML ({error})") from None
    try:
        spec = ExternalSpec.model_validate(raw or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in error.errors())
        raise InputError(f"{spec_path}: invalid model spec ({problems})") from None
    if len(set(spec.classes)) != len(spec.classes):
        raise InputError(f"{spec_path}: classes must not repeat, got {spec.classes}")
    return spec


def _own_layers(model: keras.Model) -> list:
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _is_chain(model: keras.Model) -> bool:
    """True when every layer takes one input tensor, so the layers can be re-applied in order."""
    return all(not isinstance(layer.input, (list, tuple)) for layer in _own_layers(model))


class _CannotFlatten(Exception):
    pass


def _reapply(model: keras.Model, x):
    """Apply ``model``'s own layers to tensor ``x`` (nested models expanded in place)."""
    import keras

    if _is_chain(model):
        for layer in _own_layers(model):
            x = _reapply(layer, x) if isinstance(layer, keras.Model) else layer(x)
        return x
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        raise _CannotFlatten(model.name)
    # Calls each layer of the graph on the new tensor (what Functional.call does), creating
    # new nodes on the same layers; keras.models.clone_model(input_tensors=x) would start
    # from a disconnected copy of x instead.
    return model._run_through_graph(x, operation_fn=lambda layer: layer)


def _rebuild(model: keras.Model, spec: ExternalSpec) -> tuple[keras.Model, bool]:
    """Input 0..255 -> Rescaling -> the user's layers, flat when possible: (model, flat)."""
    import keras

    inputs = keras.Input((spec.input_size, spec.input_size, spec.channels), name="image")
    scaled = keras.layers.Rescaling(**SCALINGS[spec.scaling], name="external_scaling")(inputs)
    try:
        rebuilt, flat = keras.Model(inputs, _reapply(model, scaled)), True
    except _CannotFlatten:
        rebuilt, flat = keras.Model(inputs, model(scaled)), False
    # The re-applied layers still carry their nodes in the user's graph, where
    # ``get_layer(name).output`` would point; a clone has layers used once (same names).
    fresh = keras.models.clone_model(rebuilt)
    fresh.set_weights(rebuilt.get_weights())
    return fresh, flat


def _reorder_outputs(model: keras.Model, spec: ExternalSpec, spec_path: Path) -> tuple[str, ...]:
    """Permute the output Dense layer's units into ``CLASSES`` order; return the classes."""
    import keras

    order = [spec.classes.index(name) for name in CLASSES if name in spec.classes]
    if order == list(range(len(order))):
        return tuple(spec.classes)
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise InputError(f"{spec_path}: classes {spec.classes} are not in the order "
                         f"{list(CLASSES)}, and the model's last layer ({last.name}, "
                         f"{type(last).__name__}) is not a Dense layer whose units could be "
                         f"reordered; save the model with outputs in that order")
    kernel, *bias = last.get_weights()
    last.set_weights([kernel[:, order], *(b[order] for b in bias)])
    return tuple(spec.classes[k] for k in order)


def _last_conv_layer(model: keras.Model) -> str | None:
    """The last layer with a 4-D (batch, h, w, c) output, as tf-keras-vis looks for it."""
    for layer in reversed(model.layers):
        if len(getattr(layer.output, "shape", ())) == 4 and layer.name != "external_scaling":
            return layer.name
    return None


def _check_input_shape(model: keras.Model, spec: ExternalSpec, spec_path: Path,
                       model_path: Path) -> None:
    """Check the spec's ``channels`` and ``input_size`` against the model's saved input.

    A model saved with a fixed input size must be given images of that size: re-applied
    to another size, a convolutional model often still runs and silently changes the
    numbers. A model saved for any size (``(None, None, channels)``) takes the spec's.

    Raises:
        InputError: naming the spec file, the key, the model's input shape and the value.
    """
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shapes = [tuple(tensor.shape) for tensor in model.inputs]
        raise InputError(f"{model_path}: the model must take one image input of shape "
                         f"(batch, height, width, channels), got input(s) {shapes}")
    height, width, channels = tuple(model.inputs[0].shape)[1:]
    shape = f"(batch, {height}, {width}, {channels})"
    if channels is not None and channels != spec.channels:
        raise InputError(f"{spec_path}: channels: {spec.channels}, but the model {model_path} "
                         f"takes input of shape {shape}; set channels: {channels}")
    if (height, width) == (None, None) or (height, width) == (spec.input_size,) * 2:
        return
    fix = (f"set input_size: {height}" if height == width and height is not None
           else "a spec describes a square input; save the model with one")
    raise InputError(f"{spec_path}: input_size: {spec.input_size}, but the model {model_path} "
                     f"takes input of shape {shape}; {fix}")


def load_external_model(model_path: str | Path, spec_path: str | Path) -> TrainedModel:
    """Load a user's saved Keras classifier as a ``TrainedModel``.

    Args:
        model_path: a ``.keras`` (or ``.h5``) file saved by Keras.
        spec_path: the YAML preprocessing spec (module docstring).

    Raises:
        InputError: unreadable model or spec, a spec whose ``channels`` or ``input_size``
            does not match the model's input, output size not matching ``classes``, a
            named layer that does not exist, or classes that cannot be reordered.
    """
    import keras

    model_path, spec_path = Path(model_path), Path(spec_path)
    spec = read_spec(spec_path)
    try:
        original = keras.models.load_model(model_path, compile=False)
    except Exception as error:
        raise InputError(f"{model_path}: cannot load the Keras model ({error})") from None
    _check_input_shape(original, spec, spec_path, model_path)
    units = original.outputs[0].shape[-1]
    if units != len(spec.classes):
        raise InputError(f"{spec_path}: classes lists {len(spec.classes)} classes but the model "
                         f"{model_path} has {units} outputs")
    model, flat = _rebuild(original, spec)
    classes = _reorder_outputs(model, spec, spec_path)
    names = {layer.name for layer in model.layers}
    for key in ("last_conv_layer", "embedding_layer"):
        name = getattr(spec, key)
        if name is not None and name not in names:
            raise InputError(f"{spec_path}: {key} {name!r} is not a layer of {model_path} "
                             f"(or sits inside a nested sub-model)")
    last_conv = spec.last_conv_layer or (_last_conv_layer(model) if flat else None)
    metadata = {"backbone": spec.backbone, "input_mode": "raw", "training_path": "external",
                "weights_origin": f"file {model_path} (sha256 {hash_file(model_path)})",
                "external_spec": spec.model_dump(), "gradcam_available": last_conv is not None}
    if last_conv is None:
        metadata["gradcam_note"] = (f"{model_path} nests its backbone in a way that cannot be "
                                    "flattened; Grad-CAM cannot reach its convolutions")
    return TrainedModel(
        key=f"{spec.backbone}/raw", backbone=spec.backbone, input_mode="raw",
        load_keras=lambda: model, classes=classes, last_conv_layer=last_conv or "",
        embedding_layer=spec.embedding_layer or model.layers[-2].name, metadata=metadata,
        path=model_path, input_size=spec.input_size, channels=spec.channels)
