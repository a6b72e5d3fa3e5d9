"""Input modes: the same images shown to a model with parts of them removed.

- ``raw``: the radiograph as it is.
- ``lung_masked``: everything outside the lung mask set to background (0).
- ``lungs_removed``: the lungs blacked out, everything else kept (Maguolo & Nanni 2021).
- ``border_only``: only a band of ``border_fraction`` of the side kept on every edge.

All modes take and return ``uint8`` arrays ``(N, S, S)``; masks are ``(N, S, S)`` with
nonzero inside the lungs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, get_args

import numpy as np

from audit.core.cache import stable_hash
from audit.core.config import InputMode

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

INPUT_MODES: tuple[str, ...] = get_args(InputMode)  # the config's modes, in its order
MASKED_MODES = ("lung_masked", "lungs_removed")
BACKGROUND = 0
_CHUNK_ROWS = 256


def border_band(size: int, border_fraction: float) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the band of ``border_fraction`` of the side on each edge."""
    width = max(1, int(round(size * border_fraction)))
    band = np.ones((size, size), dtype=bool)
    band[width : size - width, width : size - width] = False
    return band


def apply_input_mode(
    images: np.ndarray,
    mode: str,
    masks: np.ndarray | None = None,
    border_fraction: float = 0.10,
) -> np.ndarray:
    """Return a copy of ``images`` with the input mode applied (``raw`` returns the input)."""
    _check_input_mode(mode, has_masks=masks is not None)
    images = np.asarray(images)
    if mode == "raw":
        return images
    if mode == "border_only":
        band = border_band(images.shape[-1], border_fraction)
        return _blank_outside(images, lambda rows: band)
    masks = np.asarray(masks)
    if masks.shape != images.shape:
        raise ValueError(f"masks shape {masks.shape} differs from images shape {images.shape}")
    lungs = mode == "lung_masked"
    return _blank_outside(images, lambda rows: (masks[rows] > 0) == lungs)


def _check_input_mode(mode: str, has_masks: bool) -> None:
    """``ValueError`` for an unknown mode, or for a masked mode without lung masks."""
    if mode not in INPUT_MODES:
        raise ValueError(f"Unknown input mode {mode!r}; expected one of {', '.join(INPUT_MODES)}")
    if mode in MASKED_MODES and not has_masks:
        raise ValueError(f"Input mode {mode!r} needs lung masks, but none are available")


def _blank_outside(images: np.ndarray, keep: Callable[[slice], np.ndarray]) -> np.ndarray:
    """A copy of ``images`` with background wherever ``keep(rows)`` is False.

    Works ``_CHUNK_ROWS`` images at a time, so besides the one output array only a chunk's
    temporaries are in memory (a whole-array ``np.where`` over 20,000 memory-mapped
    images at 224 px held 3 GB of temporaries).
    """
    out = np.empty(images.shape, dtype=images.dtype)
    step = _CHUNK_ROWS if images.ndim == 3 else max(len(images), 1)  # one 2-D image: whole
    for start in range(0, len(images), step):
        rows = slice(start, start + step)
        out[rows] = np.where(keep(rows), images[rows], BACKGROUND)
    return out


class ModeImages:
    """A dataset's images as an input mode shows them, made a slice or a row list at a time.

    Indexing returns ``apply_input_mode`` of the indexed rows, so a reader going through
    the rows in chunks never holds the whole masked copy (1 GB for 20,000 images at 224
    px). ``key`` identifies the content for stage keys without reading any pixel.
    """

    def __init__(self, dataset: Dataset, mode: str, border_fraction: float = 0.10):
        _check_input_mode(mode, has_masks=dataset.masks is not None)
        self.dataset, self.mode, self.border_fraction = dataset, mode, border_fraction

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.images.shape)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        masks = self.dataset.masks[rows] if self.mode in MASKED_MODES else None
        return apply_input_mode(self.dataset.images[rows], self.mode, masks, self.border_fraction)

    @property
    def key(self) -> str:
        return stable_hash({
            "data": self.dataset.data_key, "mode": self.mode,
            "masks": self.dataset.masks_key if self.mode in MASKED_MODES else None,
            "border_fraction": self.border_fraction if self.mode == "border_only" else None})
