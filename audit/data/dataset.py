"""The uniform dataset object every later step reads (models, probes, reports).

A ``Dataset`` is the validated manifest plus its decoded images (and lung masks where
known), all rows aligned by position ``0..N-1``. Images are grayscale ``uint8`` arrays of
shape ``(N, S, S)``, usually memory-mapped from the image store so large sets do not sit
in RAM. Rows that failed validation are not in it: they are kept, with their reasons, in
``quarantined`` so nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd

from audit.core.cache import hash_array
from audit.core.config import CLASSES


@dataclass(frozen=True)
class Dataset:
    manifest: pd.DataFrame
    """Valid rows, index 0..N-1. Columns: ``path`` (absolute), ``label`` (one of the four
    classes), ``source``, ``patient_id`` (never empty: falls back to the path), ``view``,
    ``mask_path`` (may be empty), plus whatever else the manifest carried."""
    images: np.ndarray
    """``(N, S, S)`` uint8 grayscale, row-aligned with ``manifest``."""
    masks: np.ndarray | None = None
    """``(N, S, S)`` uint8 lung masks (0/1) or None; rows without a mask are all zero."""
    has_mask: np.ndarray | None = None
    """``(N,)`` bool: which rows have a real mask."""
    mask_origin: str = "none"
    """Where the masks came from: ``"manifest"``, ``"unet"``, ``"pretrained"``, the kinds
    joined by ``+`` when rows differ (``"manifest+pretrained"``), or ``"none"``."""
    classes: tuple[str, ...] = CLASSES
    quarantined: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))
    """Rows excluded from the run, with a ``reason`` column."""
    manifest_hash: str = ""
    """Hash of the manifest content and image bytes: the data's identity in stage keys."""

    def __post_init__(self) -> None:
        n = len(self.manifest)
        if self.images.shape[0] != n:
            raise ValueError(f"images has {self.images.shape[0]} rows but the manifest has {n}")
        if self.masks is not None and self.masks.shape != self.images.shape:
            raise ValueError(f"masks shape {self.masks.shape} differs from images {self.images.shape}")

    def __len__(self) -> int:
        return len(self.manifest)

    @cached_property
    def data_key(self) -> str:
        """The data's identity in stage keys: ``manifest_hash``, or the pixels' hash for a
        dataset built in memory. Computed once per object (20,000 images take seconds)."""
        return self.manifest_hash or hash_array(self.images)

    @cached_property
    def masks_key(self) -> str | None:
        """Hash of the lung masks (None without masks), computed once per object."""
        return hash_array(self.masks) if self.masks is not None else None

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def labels(self) -> np.ndarray:
        """Integer class index per row, in ``classes`` order."""
        lookup = {name: i for i, name in enumerate(self.classes)}
        return self.manifest["label"].map(lookup).to_numpy(dtype=np.int64)

    @property
    def label_names(self) -> np.ndarray:
        """Class name per row (strings, as in ``classes``)."""
        return self.manifest["label"].astype(str).to_numpy()

    @property
    def sources(self) -> np.ndarray:
        return self.manifest["source"].astype(str).to_numpy()

    @property
    def groups(self) -> np.ndarray:
        """Patient ids, for patient-grouped splits."""
        return self.manifest["patient_id"].astype(str).to_numpy()

    def with_masks(self, masks: np.ndarray, has_mask: np.ndarray, origin: str) -> Dataset:
        return replace(self, masks=masks, has_mask=has_mask, mask_origin=origin)


@dataclass(frozen=True)
class Splits:
    """Patient-grouped, label-stratified splits, as row positions into a ``Dataset``."""

    train: np.ndarray  # development rows (everything not in test)
    test: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]  # (train, val) positions within the dataset
    seed: int

    @property
    def val(self) -> np.ndarray:
        """The first fold's validation rows: the hold-out used when not cross-validating."""
        return self.folds[0][1]

    @property
    def fit(self) -> np.ndarray:
        """The first fold's training rows."""
        return self.folds[0][0]
