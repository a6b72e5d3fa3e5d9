"""Tiny lung phantoms for the U-Net tests: two dark ellipses (the lungs) on a bright body.

Kept here rather than using ``audit.data.phantoms`` so the segmenter's tests pin exactly the
images they reason about (two components, known area), and run at 64 px in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audit.data.dataset import Dataset

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOBILENET_V2_FILE = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def lung_phantoms(n: int = 24, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` grayscale phantoms ``(n, size, size)`` uint8 and their 0/1 lung masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = np.empty((n, size, size), dtype=np.uint8)
    masks = np.empty_like(images)
    for i in range(n):
        lungs = np.zeros((size, size), dtype=bool)
        for centre in (0.31, 0.69):
            cx, cy = centre + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.05, 0.05)
            lungs |= ((xx - cx) / 0.14) ** 2 + ((yy - cy) / 0.3) ** 2 < 1
        body = 170 + rng.uniform(-20, 20)
        noise = rng.normal(0, 12, (size, size))
        images[i] = np.clip(body - 90 * lungs + noise, 0, 255).astype(np.uint8)
        masks[i] = lungs
    return images, masks


def phantom_dataset(n: int = 24, size: int = 64, with_mask: np.ndarray | None = None) -> Dataset:
    """A ``Dataset`` of phantoms from two sources, two images per patient.

    Args:
        n: rows. Defaults to 24.
        size: image side. Defaults to 64.
        with_mask: bool per row, which rows carry a manifest mask. Defaults to None (all).
    """
    images, masks = lung_phantoms(n, size)
    has_mask = np.ones(n, dtype=bool) if with_mask is None else np.asarray(with_mask)
    manifest = pd.DataFrame({
        "path": [f"/data/img{i:03d}.png" for i in range(n)],
        "label": "normal",
        "source": np.where((np.arange(n) // 2) % 2 == 0, "site_a", "site_b"),
        "patient_id": [f"patient{i // 2}" for i in range(n)],
        "view": "PA",
        "mask_path": np.where(has_mask, "mask.png", ""),
    })
    return Dataset(manifest=manifest, images=images, masks=masks * has_mask[:, None, None],
                   has_mask=has_mask, mask_origin="manifest")
