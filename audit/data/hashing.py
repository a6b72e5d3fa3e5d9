"""Exact and perceptual image hashes, for duplicate and leakage checks.

``content_hash`` finds byte-identical files; ``dhash`` (difference hash) finds the same
picture re-encoded, resized or slightly re-exposed: it compares neighbouring cells of a
tiny grayscale thumbnail, so it survives re-encoding and resizing.

Chest radiographs all look alike at 8x9 cells: on the real set (1,417 images, 4 sources)
the default 64-bit dhash puts 4,452 pairs of *different* patients within 2 bits. At
``hash_size=16`` (256 bits) the closest different-patient pair is 17 bits apart, while a
JPEG re-encode (quality 60) plus a 0.8x resize of the same image moves 4 bits (median,
max 12). Duplicate checks on radiographs therefore use ``NEAR_DUPLICATE_HASH_SIZE`` and
``NEAR_DUPLICATE_DISTANCE`` below.

A hash match is only a candidate: images of similar anatomy can fall within the distance
(distinct synthetic phantoms come as close as 9 bits). ``confirmed_near_duplicates``
proposes candidates by hash and confirms each by the correlation of the two images'
thumbnails, which separates copies from look-alikes cleanly (see
``NEAR_DUPLICATE_MIN_CORRELATION``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from audit.core.cache import hash_file

NEAR_DUPLICATE_HASH_SIZE = 16
"""dhash size for radiographs (256 bits): see the module docstring for why not 8."""
NEAR_DUPLICATE_DISTANCE = 10
"""Largest Hamming distance (of 256 bits) counted as a near-duplicate radiograph."""
NEAR_DUPLICATE_MIN_CORRELATION = 0.99
"""Thumbnail correlation at or above which a hash candidate is a near-duplicate. Measured
(64 x 64 thumbnails): a JPEG re-encode at quality 60 plus a 0.8x resize of 80 real
radiographs correlates with its original at 0.9988 or more; distinct synthetic phantoms
within 16 bits of each other correlate at 0.964 at most."""
_THUMBNAIL_SIDE = 64
_WORD = 64
_CHUNK_CELLS = 1 << 22  # bound on block x N x words distances computed at once


def content_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex, 32 characters)."""
    return hash_file(path, length=32)


def _area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Downscale by averaging the pixels of each output cell (numpy only)."""
    rows = np.arange(height) * image.shape[0] // height
    cols = np.arange(width) * image.shape[1] // width
    sums = np.add.reduceat(np.add.reduceat(image.astype(np.float64), rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.append(rows, image.shape[0])), np.diff(np.append(cols, image.shape[1])))
    return sums / counts


def dhash(image: np.ndarray, hash_size: int = 8) -> int:
    """Difference hash of a 2-D grayscale image: ``hash_size**2`` bits as an int.

    Each bit says whether a cell of a ``hash_size x (hash_size + 1)`` thumbnail is
    brighter than its right-hand neighbour.

    Args:
        image: 2-D array, at least ``hash_size + 1`` pixels on each side.
        hash_size: thumbnail rows. Defaults to 8 (a 64-bit hash).

    Raises:
        ValueError: the image is not 2-D or smaller than the thumbnail.
    """
    if image.ndim != 2 or min(image.shape) < hash_size + 1:
        raise ValueError(f"dhash needs a 2-D image of at least {hash_size + 1} px per side, "
                         f"got shape {image.shape}")
    thumb = _area_resize(image, hash_size, hash_size + 1)
    bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def _unit_thumbnail(image: np.ndarray) -> np.ndarray:
    """The image's 64 x 64 area-averaged thumbnail, centred and scaled to unit norm: the dot
    product of two is the Pearson correlation of the thumbnails (images may differ in size)."""
    thumb = _area_resize(np.asarray(image), _THUMBNAIL_SIDE, _THUMBNAIL_SIDE).ravel()
    thumb = thumb - thumb.mean()
    return thumb / (np.linalg.norm(thumb) or 1.0)


def confirmed_near_duplicates(
    hashes: np.ndarray,
    image_at: Callable[[int], np.ndarray],
    max_distance: int = NEAR_DUPLICATE_DISTANCE,
    wanted: Callable[[int, int], bool] | None = None,
) -> list[tuple[int, int, int, float]]:
    """Pairs of images that are the same picture: hash candidates confirmed by thumbnails.

    Args:
        hashes: packed hashes as ``near_duplicate_pairs`` takes them, one row per image.
        image_at: the 2-D image of row ``i`` of ``hashes``; called at most once per row, and
            only for rows in a wanted candidate pair (decoding is the expensive part).
        max_distance: largest Hamming distance of a candidate. Defaults to
            ``NEAR_DUPLICATE_DISTANCE``.
        wanted: keeps only the candidate pairs ``(i, j)`` it returns true for, before any
            image is read. Defaults to every pair.

    Returns:
        ``(i, j, distance, correlation)`` with ``i < j`` and correlation at or above
        ``NEAR_DUPLICATE_MIN_CORRELATION``, sorted by ``i`` then ``j``.
    """
    thumbnails: dict[int, np.ndarray] = {}

    def thumbnail(row: int) -> np.ndarray:
        if row not in thumbnails:
            thumbnails[row] = _unit_thumbnail(image_at(row))
        return thumbnails[row]

    confirmed = []
    for i, j, distance in near_duplicate_pairs(hashes, max_distance):
        if wanted is None or wanted(i, j):
            correlation = float(thumbnail(i) @ thumbnail(j))
            if correlation >= NEAR_DUPLICATE_MIN_CORRELATION:
                confirmed.append((i, j, distance, correlation))
    return confirmed


def pack_hashes(hashes: list[int], hash_size: int = 8) -> np.ndarray:
    """Pack ``dhash`` ints into a ``(N, words)`` uint64 array for ``near_duplicate_pairs``."""
    n_words = -(-hash_size * hash_size // _WORD)
    mask = (1 << _WORD) - 1
    return np.array([[(value >> (_WORD * k)) & mask for k in range(n_words)] for value in hashes],
                    dtype=np.uint64).reshape(len(hashes), n_words)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int = 4) -> list[tuple[int, int, int]]:
    """All pairs of hashes within ``max_distance`` differing bits.

    Args:
        hashes: ``(N,)`` 64-bit hashes, or ``(N, words)`` from ``pack_hashes`` for
            longer ones; converted to uint64.
        max_distance: largest Hamming distance reported. Defaults to 4 (for 64 bits).

    Returns:
        ``(i, j, distance)`` with ``i < j``, sorted by ``i`` then ``j``.
    """
    values = np.asarray(hashes, dtype=np.uint64)
    if values.ndim == 1:
        values = values[:, None]
    block_rows = max(1, _CHUNK_CELLS // max(1, values.size))
    pairs = []
    for start in range(0, len(values), block_rows):
        block = values[start:start + block_rows]
        distances = np.bitwise_count(block[:, None, :] ^ values[None, :, :]).sum(axis=-1)
        for i, j in zip(*np.nonzero(distances <= max_distance), strict=True):
            if start + i < j:
                pairs.append((int(start + i), int(j), int(distances[i, j])))
    return pairs
