"""Backbone features computed once and cached: what makes frozen-base training fast.

With a frozen base the backbone is a fixed function of the image, so its output (pooled
by the head's global average pooling, or the activation map at a block boundary when the
top blocks are trained) is computed once per image and per augmented view and cached by
content. Training then only runs the small trainable top on these arrays.

Augmented views are fixed rotated copies of each image: angles drawn uniformly from
``[-degrees, degrees]`` by ``np.random.default_rng(seed)`` (``view_angles``), so the same
seed gives the same views and therefore the same cached features. Views are rotated a
chunk at a time as the backbone reads them, never held whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from audit.core.cache import StageCache, hash_array, hash_file
from models.backbones import backbone_info, build_backbone, resolve_weights
from models.inputs import ModeImages
from models.trained import predict_in_full_batches, to_model_array

if TYPE_CHECKING:
    import keras

POOLED = "pooled"
_CHUNK = 128  # images converted to float32 model input at a time (bounds memory)


def view_angles(n_views: int, n_images: int, degrees: float, seed: int) -> np.ndarray:
    """Rotation angles of the fixed augmented views, ``(n_views, n_images)`` degrees drawn
    uniformly from ``[-degrees, degrees]`` by ``np.random.default_rng(seed)``."""
    return np.random.default_rng(seed).uniform(-degrees, degrees, size=(n_views, n_images))


def rotate_images(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Each uint8 ``(S, S)`` image rotated by its angle about the centre, bilinear, corners
    filled with background (0); ``(N, S, S)`` uint8."""
    rotated = np.empty(images.shape, dtype=np.uint8)
    for row, (image, angle) in enumerate(zip(images, angles, strict=True)):
        turned = ndimage.rotate(image.astype(np.float32), angle, reshape=False, order=1,
                                mode="constant", cval=0.0)
        rotated[row] = np.clip(np.rint(turned), 0, 255).astype(np.uint8)
    return rotated


class _RotatedView:
    """One augmented view of ``images``, rotated a slice at a time as ``extract`` reads it:
    a whole view of 20,000 images at 224 px would hold 1 GB."""

    def __init__(self, images: np.ndarray | ModeImages, angles: np.ndarray):
        self.images, self.angles = images, angles

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return rotate_images(np.asarray(self.images[rows]), self.angles[rows])


def feature_extractor(backbone: str, weights: str, alpha: float, input_size: int,
                      weights_dirs: list[Path] | None, cut: str = POOLED) -> tuple[keras.Model, str]:
    """A model mapping pixels 0..255 to the backbone's output at ``cut``, and its weights origin.

    ``cut`` is ``"pooled"`` (global average of the backbone's last feature map, exactly the
    head's first layer) or the name of a backbone layer.
    """
    import keras

    base, origin = build_backbone(backbone, input_size, weights, alpha, weights_dirs)
    if cut == POOLED:
        output = keras.layers.GlobalAveragePooling2D()(base.output)
    else:
        output = base.get_layer(cut).output
    return keras.Model(base.inputs[0], output), origin


def extract(extractor: keras.Model, images: np.ndarray | ModeImages | _RotatedView,
            input_size: int,
            batch_size: int = 32) -> np.ndarray:
    """Run ``extractor`` over uint8 ``(N, S, S)`` images, read and converted in chunks;
    float32 output."""
    outputs = []
    for start in range(0, len(images), _CHUNK):
        x = to_model_array(images[start : start + _CHUNK], input_size)
        outputs.append(predict_in_full_batches(extractor, x, batch_size))
    return np.concatenate(outputs).astype(np.float32)


def _cached(cache: StageCache | None, stage: str, inputs: dict, compute) -> np.ndarray:
    if cache is None:
        return compute()
    return cache.run_and_load(stage, inputs,
                              lambda tmp: np.save(tmp / "features.npy", compute()),
                              lambda folder: np.load(folder / "features.npy"))


@dataclass(frozen=True)
class FeatureSpec:
    """Which frozen network computes the features, and where it is cut.

    ``backbone`` is a registry name; ``weights`` ``"imagenet"``, ``"none"`` or a weights
    file; ``alpha`` the width multiplier (MobileNet family); ``input_size`` the model input
    side (images are resized to it); ``weights_dirs`` the folders searched for local
    ImageNet files; ``cut`` ``"pooled"`` or a backbone layer name. ``build`` gives a model
    from pixels to ``cut`` with these weights out of one already built (e.g. part of the
    classifier being trained), used instead of building the backbone again, and only when
    the features are not cached; it is not part of the key.
    """

    backbone: str
    weights: str = "imagenet"
    alpha: float = 1.0
    input_size: int = 224
    weights_dirs: tuple[Path, ...] = ()
    cut: str = POOLED
    build: Callable[[], keras.Model] | None = field(default=None, compare=False)

    def key(self, images: np.ndarray | ModeImages, cache: StageCache | None) -> dict:
        """Stage key of these features of ``images`` (a ``ModeImages`` by its own key);
        ``cache``, when given, remembers the weights file's hash."""
        _, origin = resolve_weights(self.weights, self.backbone, self.alpha, self.input_size,
                                    list(self.weights_dirs),
                                    hash_file if cache is None else cache.hash_file)
        images_key = images.key if isinstance(images, ModeImages) else hash_array(images)
        return {"images": images_key, "backbone": self.backbone, "weights": origin,
                "alpha": self.alpha if backbone_info(self.backbone).has_alpha else 1.0,
                "input_size": self.input_size, "cut": self.cut}

    def extractor(self) -> keras.Model:
        if self.build is not None:
            return self.build()
        return feature_extractor(self.backbone, self.weights, self.alpha, self.input_size,
                                 list(self.weights_dirs), self.cut)[0]


def frozen_features(images_uint8: np.ndarray | ModeImages, spec: FeatureSpec,
                    cache: StageCache | None = None) -> np.ndarray:
    """Frozen-backbone features of each image, cached by image content and ``spec``.

    Args:
        images_uint8: ``(N, S, S)`` uint8 grayscale images (input mode already applied), or
            a ``ModeImages`` that applies it as the rows are read.
        spec: the network and its cut.
        cache: stage cache; ``None`` computes without caching. Defaults to None.

    Returns:
        float32 ``(N, D)`` for ``"pooled"``, else ``(N, h, w, c)``.
    """
    return _cached(cache, "features", spec.key(images_uint8, cache),
                   lambda: extract(spec.extractor(), images_uint8, spec.input_size))


def view_features(images_uint8: np.ndarray | ModeImages, n_views: int, degrees: float,
                  seed: int, spec: FeatureSpec, cache: StageCache | None = None) -> np.ndarray:
    """Features of ``n_views`` fixed rotated copies of each image: ``(n_views, N, ...)``.

    View ``v`` is every image rotated by ``view_angles(n_views, N, degrees, seed)[v]``
    (``rotate_images``), made a chunk at a time while the backbone reads it; the other
    arguments are those of ``frozen_features``.
    """
    key = {**spec.key(images_uint8, cache), "n_views": n_views, "degrees": degrees, "seed": seed}

    def compute() -> np.ndarray:
        angles = view_angles(n_views, len(images_uint8), degrees, seed)
        model = spec.extractor()
        return np.stack([extract(model, _RotatedView(images_uint8, angles_of_view),
                                 spec.input_size) for angles_of_view in angles])

    return _cached(cache, "view_features", key, compute)
