"""Where a Grad-CAM's mass lies: the numpy measurements the attention checks make.

Maps are *raw* (``models.gradcam``): the checks compare mass ratios, which min-max
standardisation would distort. ``mass_fraction`` is the share of positive mass in a region,
``measure`` adds a cell-shuffled random-CAM baseline and whether the peak is in the region
(maps upsampled to the image side by ``models.gradcam.upsample_cams``), and
``zone_enrichment`` and ``peak_zone`` read corners, edges and centre at the CAM's own
resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANDOM_CAM_DRAWS = 8  # cell shuffles averaged into the random-CAM baseline of ``measure``
MEASURE_CHUNK = 32  # images upsampled at a time (bounds memory at large image sizes)


def mass_fraction(cams: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per image, the fraction of positive CAM mass inside ``regions``.

    Args:
        cams: ``(n, S, S)`` maps (negative values are ignored).
        regions: ``(S, S)`` or ``(n, S, S)`` masks, nonzero inside the region.

    Returns:
        ``(n,)`` float64 fractions in 0..1; NaN for an image whose map has no positive mass.
    """
    positive = np.clip(np.asarray(cams, dtype=np.float64), 0.0, None)
    regions = np.asarray(regions) > 0
    if regions.shape[-2:] != positive.shape[-2:]:
        raise ValueError(
            f"regions shape {regions.shape} does not match the maps' {positive.shape[-2:]}"
        )
    total = positive.sum(axis=(1, 2))
    inside = (positive * regions).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full_like(total, np.nan), where=total > 0)


ZONES = ("top-left", "top", "top-right", "left", "centre", "right",
         "bottom-left", "bottom", "bottom-right")
"""The 3x3 zones of ``zone_enrichment``, row by row."""


def zone_band_cells(border_fraction: float, resolution: int) -> int:
    """Width in cells of ``zone_enrichment``'s border band on a ``resolution``-cell CAM:
    ``border_fraction`` of the side, at least one cell."""
    return max(1, round(border_fraction * resolution))


def cam_grid_fits(resolution: int, border_fraction: float) -> bool:
    """Whether a CAM of ``resolution`` cells a side has the attention checks' border band
    (at least one cell) and an interior besides it."""
    return resolution > 2 * zone_band_cells(border_fraction, resolution)


BORDER_ZONES = tuple(zone for zone in ZONES if zone != "centre")
"""The zones of ``ZONES`` on the image border, where no disease is seen."""


def _zone_blocks(h: int, w: int, width: int) -> list[tuple[slice, slice]]:
    """Row and column slices of the ``ZONES`` of an ``h`` x ``w`` map, in ``ZONES`` order."""
    if min(h, w) <= 2 * width:
        raise ValueError(f"zones: maps of {h}x{w} cells are too small for a {width}-cell "
                         f"band; need more than {2 * width} cells a side")
    bounds = [(slice(0, width), slice(width, side - width), slice(side - width, side))
              for side in (h, w)]
    return [(rows, cols) for rows in bounds[0] for cols in bounds[1]]


def zone_cell_shares(h: int, w: int, width: int = 1) -> np.ndarray:
    """``(9,)`` each zone's share of an ``h`` x ``w`` map's cells, in ``ZONES`` order."""
    grid = np.arange(h * w).reshape(h, w)
    return np.array([grid[rows, cols].size / (h * w) for rows, cols in _zone_blocks(h, w, width)])


def zone_enrichment(cams: np.ndarray, width: int = 1) -> np.ndarray:
    """Per image, each zone's share of positive CAM mass divided by its share of the cells.

    The map is cut into corners, edges and centre by a band of ``width`` cells along every
    side (corners are ``width`` x ``width``), at the CAM's own resolution, so "where" is
    read without interpolation. 1 means the zone got the attention its size would get,
    which is also what a map with its cells shuffled gets on average.

    Args:
        cams: ``(n, h, w)`` maps, ``h, w > 2 * width``.
        width: band width in cells. Defaults to 1.

    Returns:
        ``(n, 9)`` float64 in ``ZONES`` order; NaN rows for maps without positive mass.
    """
    positive = np.clip(np.asarray(cams, dtype=np.float64), 0.0, None)
    n, h, w = positive.shape
    blocks = _zone_blocks(h, w, width)
    total = positive.sum(axis=(1, 2))
    out = np.full((n, 9), np.nan)
    for zone, ((rows, cols), area) in enumerate(zip(blocks, zone_cell_shares(h, w, width),
                                                    strict=True)):
        np.divide(positive[:, rows, cols].sum(axis=(1, 2)) / area, total, out=out[:, zone],
                  where=total > 0)
    return out


def peak_zone(cams: np.ndarray, width: int = 1) -> np.ndarray:
    """Per image, the index in ``ZONES`` of the zone holding the map's hottest cell (the
    pointing game at the CAM's own resolution); -1 for maps without positive mass.

    Args:
        cams: ``(n, h, w)`` maps, ``h, w > 2 * width``.
        width: band width in cells. Defaults to 1.
    """
    cams = np.asarray(cams, dtype=np.float64)
    n, h, w = cams.shape
    zone_of_cell = np.empty((h, w), dtype=np.int64)
    for zone, (rows, cols) in enumerate(_zone_blocks(h, w, width)):
        zone_of_cell[rows, cols] = zone
    peaks = zone_of_cell.reshape(-1)[cams.reshape(n, -1).argmax(axis=1)]
    return np.where(cams.reshape(n, -1).max(axis=1) > 0, peaks, -1)


@dataclass(frozen=True)
class Measurement:
    """Per-image shares of one model's CAMs in the region (NaN: no positive mass)."""

    share: np.ndarray
    random_share: np.ndarray
    peak_in_region: np.ndarray


def measure(cams: np.ndarray, regions: np.ndarray, size: int, seed: int) -> Measurement:
    """Shares of positive CAM mass in ``regions`` at image side ``size``, with a random-CAM
    baseline and whether each map's peak lies in the region.

    The random CAM is each map with its cells shuffled (``RANDOM_CAM_DRAWS`` draws from
    ``seed``, averaged), measured the same way: same mass and values, random position.

    Args:
        cams: ``(n, h, w)`` raw maps.
        regions: ``(size, size)`` shared or ``(n, size, size)`` per-image region masks.
        size: image side the maps are upsampled to.
        seed: seed of the shuffles.
    """
    # Imported here: the pipeline checks the CAM grid (``cam_grid_fits``) before every run,
    # and an unchanged rerun should not pay for importing TensorFlow.
    from models.gradcam import upsample_cams

    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, len(cams), MEASURE_CHUNK):
        chunk = slice(start, start + MEASURE_CHUNK)
        region = regions if regions.ndim == 2 else regions[chunk]
        maps = upsample_cams(cams[chunk], size)
        peaks = maps.reshape(len(maps), -1).argmax(axis=1)
        flat_region = np.broadcast_to(region, maps.shape).reshape(len(maps), -1)
        random = [mass_fraction(upsample_cams(_shuffle_cells(cams[chunk], rng), size), region)
                  for _ in range(RANDOM_CAM_DRAWS)]
        parts.append((mass_fraction(maps, region), np.mean(random, axis=0),
                      flat_region[np.arange(len(maps)), peaks]))
    share, random_share, peak = (np.concatenate(column) for column in zip(*parts, strict=True))
    return Measurement(share=share, random_share=random_share, peak_in_region=peak)


def _shuffle_cells(cams: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each map's cells in a random order: same mass and values, random position."""
    flat = cams.reshape(len(cams), -1)
    return rng.permuted(flat, axis=1).reshape(cams.shape)
