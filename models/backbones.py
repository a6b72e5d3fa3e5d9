"""The paper's five ImageNet backbones and where their pretrained weights come from.

Each backbone is a ``keras.applications`` constructor used with ``include_top=False``. Its
own input preprocessing is built into the model as a ``keras.layers.Rescaling`` layer
named ``preprocess``, so every model takes plain pixel arrays (float32, 0..255):

- MobileNet, MobileNetV2, InceptionV3, Xception ("tf" mode): ``x / 127.5 - 1``.
- ResNet50 ("caffe" mode): per-channel mean subtraction ``x - [103.939, 116.779, 123.68]``.
  Caffe mode also flips RGB to BGR first; the flip is left out because every image this
  tool feeds is a grayscale radiograph repeated over three channels, where it is the
  identity. A built-in layer keeps saved models loadable without custom objects.

Weights are ``"imagenet"`` (a local copy under Keras' cache file name when one is found in
``weights_dirs`` or Keras' cache folder, else Keras' own download), ``"none"`` (random
initialisation) or a path to a weights file. ``resolve_weights`` says which one a run used;
a failed download raises ``WeightsUnavailableError`` naming the file to fetch and where
to put it, never a silent fall-back to random weights.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from audit.core.cache import hash_file
from audit.core.errors import WeightsUnavailableError

if TYPE_CHECKING:
    import keras

_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"
TF_MODE = {"scale": 1.0 / 127.5, "offset": -1.0}
CAFFE_MODE = {"scale": 1.0, "offset": [-103.939, -116.779, -123.68]}


@dataclass(frozen=True)
class BackboneInfo:
    """What the project needs to know about one ``keras.applications`` backbone."""

    constructor: str  # attribute of ``keras.applications``
    preprocess: dict  # ``Rescaling`` arguments reproducing the backbone's preprocess_input
    last_conv_layer: str  # activation of the last convolution: the Grad-CAM target
    min_input_size: int  # smallest side ``include_top=False`` accepts
    block_end: str  # regex of layer names that end a block (unfreezing counts blocks)
    weights_file: str  # Keras' cache file name of the no-top ImageNet weights
    url_folder: str  # folder of that file under ``_WEIGHTS_URL``
    # (kernel, stride, total padding) of each layer up to the last convolution that changes
    # the side: side -> (side + padding - kernel) // stride + 1 (a stride-2 "same" layer
    # is (1, 2, 0), i.e. ceil(side / 2)). Read off keras.applications' sources.
    downsampling: tuple[tuple[int, int, int], ...] = ()
    has_alpha: bool = False  # width multiplier applies (MobileNet family)


BACKBONES: dict[str, BackboneInfo] = {
    "mobilenet": BackboneInfo(
        "MobileNet", TF_MODE, "conv_pw_13_relu", 32, r"^conv_pw_\d+_relu$",
        "mobilenet_{alpha}_{rows}_tf_no_top.h5", "mobilenet",
        downsampling=((1, 2, 0), *[(3, 2, 1)] * 4), has_alpha=True),
    "mobilenetv2": BackboneInfo(
        "MobileNetV2", TF_MODE, "out_relu", 32,
        r"^(block_\d+_add|block_\d+_project_BN|expanded_conv_project_BN)$",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5", "mobilenet_v2",
        downsampling=((1, 2, 0),) * 5, has_alpha=True),
    "resnet50": BackboneInfo(
        "ResNet50", CAFFE_MODE, "conv5_block3_out", 32, r"^conv\d_block\d+_out$",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet",
        downsampling=((1, 2, 0),) * 5),
    "inceptionv3": BackboneInfo(
        "InceptionV3", TF_MODE, "mixed10", 75, r"^mixed\d+$",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "inception_v3",
        downsampling=((3, 2, 0), (3, 1, 0), (3, 2, 0), (3, 1, 0), (3, 2, 0), (3, 2, 0),
                      (3, 2, 0))),
    "xception": BackboneInfo(
        "Xception", TF_MODE, "block14_sepconv2_act", 71, r"^add(_\d+)?$",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "xception",
        downsampling=((3, 2, 0), (3, 1, 0), *[(1, 2, 0)] * 4)),
}

# Input sizes for which Keras publishes MobileNet weights; other sizes use the 224 file.
_MOBILENET_ROWS = (128, 160, 192, 224)
_MOBILENETV2_ROWS = (96, 128, 160, 192, 224)


def backbone_info(backbone: str) -> BackboneInfo:
    """The registry entry of ``backbone``; ``ValueError`` naming the known ones otherwise."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def cam_grid(backbone: str, input_size: int) -> int:
    """Cells a side of the backbone's last convolution (its Grad-CAM) at ``input_size``."""
    side = input_size
    for kernel, stride, padding in backbone_info(backbone).downsampling:
        side = (side + padding - kernel) // stride + 1
    return side


def keras_weights_file_name(backbone: str, alpha: float = 1.0, input_size: int = 224) -> str:
    """The file name Keras caches the no-top ImageNet weights of this backbone under.

    Args:
        backbone: registry name, e.g. ``"mobilenetv2"``.
        alpha: width multiplier (MobileNet family only). Defaults to 1.0.
        input_size: model input side; sizes Keras has no file for map to 224. Defaults to 224.
    """
    info = backbone_info(backbone)
    if backbone == "mobilenet":
        alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}.get(alpha, str(alpha))
        rows = input_size if input_size in _MOBILENET_ROWS else 224
        return info.weights_file.format(alpha=alpha_text, rows=rows)
    if backbone == "mobilenetv2":
        rows = input_size if input_size in _MOBILENETV2_ROWS else 224
        return info.weights_file.format(alpha=float(alpha), rows=rows)
    return info.weights_file


def keras_cache_dir() -> Path:
    """Keras' download cache folder (``$KERAS_HOME/models``, default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_file_names(backbone: str, alpha: float = 1.0, input_size: int = 224) -> list[str]:
    """The no-top ImageNet files a local copy is looked for under, in order: Keras' cache
    name at ``input_size``, then at 224 (the file Keras falls back to for other sizes).

    Args:
        backbone: registry name.
        alpha: width multiplier (MobileNet family only). Defaults to 1.0.
        input_size: model input side. Defaults to 224.
    """
    return list(dict.fromkeys([keras_weights_file_name(backbone, alpha, input_size),
                               keras_weights_file_name(backbone, alpha, 224)]))


def check_weights_file(weights: str, key: str = "models.weights") -> None:
    """Raise ``WeightsUnavailableError`` unless ``weights`` is ``"imagenet"``, ``"none"`` or
    an existing file.

    Args:
        weights: the configured value.
        key: the config key it came from, named in the error. Defaults to "models.weights".
    """
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise WeightsUnavailableError(
            f"{key}: expected 'imagenet', 'none' or an existing weights file, got "
            f"{weights!r} (no such file; a relative path is read from the config file's "
            f"folder)")


def _find_local_imagenet(names: list[str], weights_dirs: list[Path]) -> Path | None:
    for folder in [*map(Path, weights_dirs), keras_cache_dir()]:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def resolve_weights(
    weights: str,
    backbone: str,
    alpha: float = 1.0,
    input_size: int = 224,
    weights_dirs: list[Path] | None = None,
    file_hash: Callable[[Path], str] = hash_file,
) -> tuple[str | None, str]:
    """Decide what to pass as Keras' ``weights=`` and describe where the weights come from.

    Args:
        weights: ``"imagenet"``, ``"none"`` or a path to a weights file.
        backbone: registry name.
        alpha: width multiplier (MobileNet family). Defaults to 1.0.
        input_size: model input side. Defaults to 224.
        weights_dirs: folders searched for Keras' cache-named ImageNet files before
            downloading. Defaults to none (only Keras' cache folder).
        file_hash: the hash of a weights file in ``origin``; a ``StageCache.hash_file``
            remembers it for every key built with that cache. Defaults to ``hash_file``
            (reads the file).

    Returns:
        ``(keras_weights, origin)``: ``None``, a file path or ``"imagenet"`` (download),
        and a human-readable origin such as ``"imagenet (local file …, sha256 …)"``.

    Raises:
        WeightsUnavailableError: ``weights`` is a path that does not exist
            (``check_weights_file``).
    """
    backbone_info(backbone)
    check_weights_file(weights)
    if weights == "none":
        return None, "none"
    if weights == "imagenet":
        local = _find_local_imagenet(imagenet_file_names(backbone, alpha, input_size),
                                     weights_dirs or [])
        if local is None:
            return "imagenet", "imagenet (keras download)"
        return str(local), f"imagenet (local file {local}, sha256 {file_hash(local)})"
    path = Path(weights)
    return str(path), f"file {path} (sha256 {file_hash(path)})"


def _download_error(backbone: str, alpha: float, input_size: int, weights_dirs: list[Path],
                    error: Exception) -> WeightsUnavailableError:
    """What to do when Keras cannot download the weights (offline): which files, where from,
    and every folder a copy would have been found in."""
    folder = backbone_info(backbone).url_folder
    names = imagenet_file_names(backbone, alpha, input_size)
    urls = " or ".join(f"{_WEIGHTS_URL}/{folder}/{name}" for name in names)
    searched = ", ".join(str(path) for path in [*map(Path, weights_dirs), keras_cache_dir()])
    return WeightsUnavailableError(
        f"Could not download the ImageNet weights of {backbone} ({error}). No local copy "
        f"was found under the name{'s' if len(names) > 1 else ''} "
        f"{' or '.join(map(repr, names))} in {searched}. Download {urls} on a machine with "
        f"internet access and put the file, under that name, in a folder listed in "
        f"models.weights_dirs (or in {keras_cache_dir()}), or set models.weights to its "
        f"path; models.weights: none trains from random weights.")


def build_backbone(
    backbone: str,
    input_size: int,
    weights: str = "imagenet",
    alpha: float = 1.0,
    weights_dirs: list[Path] | None = None,
) -> tuple[keras.Model, str]:
    """A flat no-top backbone whose input is float32 pixels 0..255 ``(S, S, 3)``.

    Args:
        backbone: registry name.
        input_size: square input side; at least the backbone's ``min_input_size``.
        weights: ``"imagenet"``, ``"none"`` or a weights file path. Defaults to "imagenet".
        alpha: width multiplier, MobileNet family only (ignored otherwise). Defaults to 1.0.
        weights_dirs: folders searched for local ImageNet files. Defaults to none.

    Returns:
        ``(model, weights_origin)``. The model's layers are ``input``, ``preprocess``
        (Rescaling) and the application's layers, all in one functional graph.
    """
    import keras

    info = backbone_info(backbone)
    if input_size < info.min_input_size:
        raise ValueError(f"{backbone} needs an input size of at least {info.min_input_size} "
                         f"pixels, got {input_size}")
    keras_weights, origin = resolve_weights(weights, backbone, alpha, input_size, weights_dirs)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    scaled = keras.layers.Rescaling(**info.preprocess, name="preprocess")(inputs)
    kwargs = {"alpha": alpha} if info.has_alpha else {}
    constructor = getattr(keras.applications, info.constructor)
    try:
        model = constructor(include_top=False, weights=keras_weights, input_tensor=scaled,
                            input_shape=(input_size, input_size, 3), **kwargs)
    except Exception as error:
        if keras_weights == "imagenet" and "URL fetch failure" in str(error):
            raise _download_error(backbone, alpha, input_size, weights_dirs or [],
                                  error) from error
        raise
    if keras_weights is None:
        _draw_seeded(model)
    return model, origin


def _draw_seeded(model: keras.Model, seed: int = 0) -> None:
    """Draw every variable of a random-weights backbone again from its layer's own
    initializer, seeded by its position in the model.

    Keras' unseeded initializers draw from process-global state, so two builds of one
    random backbone differed, and with them every feature, trained model and verdict of a
    ``models.weights: none`` run. Constant initializers (biases, batch-norm statistics)
    take no seed and are drawn as they were.
    """
    import keras

    for layer in model.layers:
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            # kernel -> kernel_initializer; depthwise_kernel -> depthwise_initializer; a
            # DepthwiseConv2D's "kernel" -> depthwise_initializer
            attribute = next((candidate for candidate in (
                f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer",
                "depthwise_initializer") if hasattr(layer, candidate)), None)
            if attribute is None:
                continue  # no initializer (e.g. a Normalization layer's fixed statistics)
            initializer = getattr(layer, attribute)
            config = initializer.get_config()
            if "seed" in config:
                seeded = type(initializer).from_config({**config, "seed": seed})
                variable.assign(keras.ops.cast(seeded(variable.shape), variable.dtype))
            seed += 1


def block_cut_layer(model: keras.Model, backbone: str, unfreeze_blocks: int) -> str:
    """Name of the layer whose output feeds the top ``unfreeze_blocks`` blocks.

    Blocks end at layers matching the backbone's ``block_end`` pattern; only ends whose
    output alone determines the rest of the network count (no skip connection crosses
    them), so the layers after the cut form a model of their own.
    """
    import keras

    if unfreeze_blocks < 1:
        raise ValueError(f"unfreeze_blocks must be at least 1 here, got {unfreeze_blocks}")
    info = backbone_info(backbone)
    pattern = re.compile(info.block_end)
    names = [layer.name for layer in model.layers]
    last_conv = names.index(info.last_conv_layer)
    # The backbone's own output ends the last block: it is never a cut.
    ends = [name for name in names[:last_conv] if pattern.match(name)]
    found = 0
    for name in reversed(ends):
        try:
            keras.Model(model.get_layer(name).output, model.output)
        except ValueError:
            continue  # a skip connection crosses this layer
        found += 1
        if found == unfreeze_blocks:
            return name
    raise ValueError(f"models.unfreeze_blocks: {backbone} has {found} blocks that can be "
                     f"unfrozen, got {unfreeze_blocks}")
