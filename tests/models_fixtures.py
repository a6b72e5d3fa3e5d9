"""Small datasets for the models tests: a few tiny images whose class is visible."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.core.config import CLASSES
from audit.data.dataset import Dataset
from tests.conftest import MOBILENET_V2_035, WEIGHTS_DIR

__all__ = ["MOBILENET_025", "MOBILENET_V2_035", "WEIGHTS_DIR", "tiny_dataset"]

MOBILENET_025 = WEIGHTS_DIR / "mobilenet_2_5_224_tf_no_top.h5"


def tiny_dataset(n_per_class: int = 4, size: int = 32, seed: int = 0) -> Dataset:
    """``4 * n_per_class`` images; class k carries a bright square in quadrant k, plus noise.

    Masks cover the central half of each image.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    images = rng.integers(0, 60, size=(len(labels), size, size)).astype(np.uint8)
    half = size // 2
    for row, label in enumerate(labels):
        top, left = divmod(int(label), 2)
        images[row, top * half : (top + 1) * half, left * half : (left + 1) * half] += 150
    masks = np.zeros_like(images)
    masks[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    manifest = pd.DataFrame({
        "path": [f"img{i}.png" for i in range(len(labels))],
        "label": [CLASSES[k] for k in labels],
        "source": [f"site{k}" for k in labels],
        "patient_id": [f"p{i}" for i in range(len(labels))],
    })
    return Dataset(manifest=manifest, images=images, masks=masks,
                   has_mask=np.ones(len(labels), dtype=bool), mask_origin="manifest",
                   manifest_hash=f"tiny-{n_per_class}-{size}-{seed}")
