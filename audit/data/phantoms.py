"""Synthetic chest-radiograph phantoms with a known answer (``cxr-audit data synth``).

Each phantom has a body outline, two lung fields, mediastinum, spine, heart, ribs, hilar
vessels and noise, plus its exact lung mask. The design makes the answer to every shortcut
probe known by construction:

- **Class signal lives only inside the lung mask.** covid: bilateral, peripheral,
  lower-zone patchy ground-glass haze; opacity: one focal consolidation; other: a
  unilateral basal effusion with a meniscus; normal: clear lungs. So a lung-masked image
  carries all the disease signal.
- **Site traits live only outside the lung mask.** Per source: a burned-in marker glyph in
  a source-specific corner (``markers``), collimation frame or letterbox bars
  (``borders``), and an exposure/contrast/noise profile (``intensity``). So a lung-masked
  image carries no site information, and with all traits off nothing outside the lungs
  tells the sources apart.
- **Anatomy is drawn from one distribution** for every source and class, so the mask
  silhouettes carry neither source nor label. Patients differ in position, tilt, size and
  exposure, so no two phantoms are near-duplicates for ``audit.data.hashing`` (closest
  pairs measured 13-19 of 256 dhash bits apart; the near-duplicate limit is 10).

Counts. Source ``j`` is named ``site_<letter>``; label ``i`` (``CLASSES`` order) has its
*home* source ``i mod n_sources``. Every class has ``n_per_class * n_sources`` images. At
confounding ``c`` a share ``1/k + c (1 - 1/k)`` of a class (``k = n_sources``) comes from
its home source, rounded half up; the rest is spread evenly over the other sources in
source order, any remainder going to the first ones after the home source. ``c = 0`` gives
``n_per_class`` images in every cell (a clean control); ``c = 1`` puts each class in its
home source only (with 4 sources: one source per label, as in pooled COVID sets).

Every image is its own synthetic patient (``patient_id`` ``synth-<row>``), view ``PA``.
Rows are ordered by label, then source. Output is deterministic given the config: anatomy,
class signal and site traits use separate random streams, so turning the signal or a trait
off changes nothing else in an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.special import expit as _sigmoid

from audit.core.cache import stable_hash
from audit.core.config import CLASSES, SiteTraits, SynthConfig
from audit.core.io import write_csv
from audit.data.dataset import Dataset

CORNERS = ("top_left", "top_right", "bottom_right", "bottom_left")
_CHUNK_PIXELS = 64 * 224 * 224  # pixels rendered at once: bounds memory (random-stream layout)
_ANATOMY, _SIGNAL, _SITE = 0, 1, 2  # random stream ids
_MARKER_MARGIN = 0.05  # markers sit this fraction of the side in from the corner (off the lungs)
_GLYPHS = (  # burned-in marker shapes, 5 x 4 cells: an "L", an "R", a line of text, a box
    ("X...", "X...", "X...", "X...", "XXXX"),
    ("XXX.", "X..X", "XXX.", "X.X.", "X..X"),
    ("XXXX", "....", "XX.X", "....", "X.XX"),
    ("XXXX", "X..X", "X..X", "X..X", "XXXX"),
)
# Outside-lung acquisition profile per source: (gamma, gain, offset, noise sd, border style,
# border width as a fraction of the side, border gray level). Levels stay off 0 so that
# flat clipped black does not make different patients look alike to a perceptual hash.
_SITE_PROFILES = (
    (0.80, 1.00, 0.0, 2.0, "letterbox", 0.06, 12),
    (1.20, 0.90, 12.0, 8.0, "frame", 0.04, 170),
    (0.95, 1.10, 4.0, 4.0, "pillarbox", 0.07, 20),
    (1.40, 0.85, 20.0, 11.0, "frame", 0.025, 110),
    (0.70, 1.05, 5.0, 6.0, "frame", 0.05, 230),
    (1.10, 0.80, 25.0, 3.0, "letterbox", 0.09, 40),
    (1.30, 1.15, 2.0, 9.0, "pillarbox", 0.04, 200),
    (0.90, 0.95, 8.0, 13.0, "frame", 0.07, 60),
)
# Peak intensity (0..255 units) each disease adds at signal_strength 1, calibrated so that a
# frozen ImageNet MobileNetV2 + logistic regression on lung-masked 224 px phantoms (60 per
# class, confounding 0) reaches a 4-class balanced accuracy of about 0.8: learnable, not trivial.
_SIGNAL_AMPLITUDE = {"covid": 56.0, "opacity": 84.0, "other": 77.0}


@dataclass(frozen=True)
class Phantoms:
    """Rendered phantoms, row-aligned: what ``make_phantoms`` returns."""

    images: np.ndarray
    """``(N, S, S)`` uint8 radiographs."""
    masks: np.ndarray
    """``(N, S, S)`` uint8 exact lung masks, 0/1."""
    manifest: pd.DataFrame
    """Columns ``path``, ``mask_path`` (``images/<source>/<row>.png``, ``masks/...``,
    relative to an output folder), ``label``, ``source``, ``patient_id``, ``view``."""


def source_names(n_sources: int) -> list[str]:
    """``["site_a", "site_b", ...]``: the synthetic source names."""
    return [f"site_{chr(ord('a') + j)}" for j in range(n_sources)]


def label_source_counts(config: SynthConfig) -> np.ndarray:
    """``(len(CLASSES), n_sources)`` image counts, as the module docstring defines them."""
    k, n = config.n_sources, config.n_per_class
    total = n * k
    counts = np.zeros((len(CLASSES), k), dtype=np.int64)
    for label in range(len(CLASSES)):
        home = label % k
        home_share = 1 / k + config.confounding * (1 - 1 / k)
        counts[label, home] = int(np.floor(total * home_share + 0.5))  # round half up
        others = [(home + step) % k for step in range(1, k)]
        share, remainder = divmod(total - counts[label, home], max(len(others), 1))
        for rank, source in enumerate(others):
            counts[label, source] = share + (rank < remainder)
    return counts


def make_phantoms(config: SynthConfig) -> Phantoms:
    """Render the phantoms ``config`` describes, in memory."""
    counts = label_source_counts(config)
    labels = np.repeat(np.repeat(np.arange(len(CLASSES)), config.n_sources), counts.ravel())
    sources = np.repeat(np.tile(np.arange(config.n_sources), len(CLASSES)), counts.ravel())
    size = config.image_size
    images = np.empty((len(labels), size, size), dtype=np.uint8)
    masks = np.empty_like(images)
    chunk = max(1, _CHUNK_PIXELS // size**2)
    for start in range(0, len(labels), chunk):
        rows = slice(start, start + chunk)
        images[rows], masks[rows] = _render_chunk(config, start, labels[rows], sources[rows])
    return Phantoms(images=images, masks=masks, manifest=_manifest(labels, sources, config))


def synthetic_dataset(config: SynthConfig, image_size: int | None = None) -> Dataset:
    """An in-memory ``Dataset`` of phantoms, with their exact masks.

    Args:
        config: the generator settings.
        image_size: render at this size instead of ``config.image_size``. Defaults to None.
    """
    if image_size is not None and image_size != config.image_size:
        config = SynthConfig.model_validate({**config.model_dump(), "image_size": image_size})
    phantoms = make_phantoms(config)
    return Dataset(
        manifest=phantoms.manifest,
        images=phantoms.images,
        masks=phantoms.masks,
        has_mask=np.ones(len(phantoms.manifest), dtype=bool),
        mask_origin="manifest",
        manifest_hash=stable_hash(config),
    )


def generate_phantoms(config: SynthConfig, out_dir: Path) -> Path:
    """Write phantoms as PNGs (masks 0/255) plus ``manifest.csv`` under ``out_dir``.

    Paths in the manifest are relative to ``out_dir``. Existing files of the same names are
    overwritten; nothing is written outside ``out_dir``. Returns the manifest's path.
    """
    out_dir = Path(out_dir)
    phantoms = make_phantoms(config)
    for column, arrays, scale in (("path", phantoms.images, 1), ("mask_path", phantoms.masks, 255)):
        for relative, array in zip(phantoms.manifest[column], arrays, strict=True):
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array * np.uint8(scale)).save(target)
    manifest_path = out_dir / "manifest.csv"
    write_csv(phantoms.manifest, manifest_path)
    return manifest_path


def plant_marker(
    images: np.ndarray,
    rows: np.ndarray,
    corner: str = "top_right",
    size_fraction: float = 0.08,
    value: int = 255,
) -> np.ndarray:
    """A copy of ``images`` with a filled square burned into one corner of ``rows``.

    The square sits ``_MARKER_MARGIN`` of the side in from the corner, clear of the
    phantoms' lungs, like the site markers.

    Args:
        images: ``(N, S, S)`` uint8 images; not modified.
        rows: positions (or a boolean mask) of the images that get the marker.
        corner: one of ``top_left``, ``top_right``, ``bottom_right``, ``bottom_left``.
            Defaults to ``"top_right"``.
        size_fraction: side of the square as a fraction of the image side. Defaults to 0.08.
        value: gray level of the square. Defaults to 255.
    """
    if corner not in CORNERS:
        raise ValueError(
            f"plant_marker: corner must be one of {', '.join(CORNERS)}; got {corner!r}")
    if not 0 < size_fraction < 0.5 - _MARKER_MARGIN:
        raise ValueError(f"plant_marker: size_fraction must be in (0, {0.5 - _MARKER_MARGIN}); "
                         f"got {size_fraction}")
    marked = np.array(images, copy=True)
    side = max(1, int(round(size_fraction * marked.shape[-1])))
    ys, xs = _corner_box(marked.shape[-1], corner, side, side)
    block = marked[rows]
    block[:, ys, xs] = value
    marked[rows] = block
    return marked


def _manifest(labels: np.ndarray, sources: np.ndarray, config: SynthConfig) -> pd.DataFrame:
    names = np.asarray(source_names(config.n_sources))[sources]
    rows = [f"{row:05d}" for row in range(len(labels))]
    return pd.DataFrame({
        "path": [f"images/{src}/{row}.png" for src, row in zip(names, rows, strict=True)],
        "mask_path": [f"masks/{src}/{row}.png" for src, row in zip(names, rows, strict=True)],
        "label": np.asarray(CLASSES)[labels],
        "source": names,
        "patient_id": [f"synth-{row}" for row in rows],
        "view": "PA",
    })


def _uniform(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """One value per image, shaped ``(n, 1, 1)`` to broadcast over pixels."""
    return rng.uniform(low, high, (n, 1, 1)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """Patchy texture in 0..1: a ``cells x cells`` random field smoothly upsampled to ``size``."""
    coarse = rng.standard_normal((n, cells, cells)).astype(np.float32)
    # Gaussian-kernel interpolation weights (size x cells), one matrix product per axis.
    position = (np.arange(size, dtype=np.float32) + 0.5) * cells / size - 0.5
    weights = np.exp(-((position[:, None] - np.arange(cells)) ** 2) / (2 * 0.6**2))
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    field = np.einsum("ic,ncd,jd->nij", weights, coarse, weights, optimize=True)
    return _sigmoid(3.0 * field)


@dataclass(frozen=True)
class _Anatomy:
    image: np.ndarray  # (n, S, S) float gray levels
    mask: np.ndarray  # (n, S, S) bool lungs
    u: np.ndarray  # (2, n, S, S) per lung: horizontal lung coordinate, + = lateral, edge ~ 1
    v: np.ndarray  # (2, n, S, S) per lung: vertical lung coordinate, -1 apex .. +1 base


def _render_chunk(config: SynthConfig, start: int, labels: np.ndarray, sources: np.ndarray):
    def stream(stream_id: int) -> np.random.Generator:
        return np.random.default_rng([config.seed, stream_id, start])

    anatomy = _anatomy(stream(_ANATOMY), len(labels), config.image_size)
    signal = _class_signal(stream(_SIGNAL), labels, anatomy) * config.signal_strength
    image = anatomy.image + np.where(anatomy.mask, signal, 0.0)
    image = _site_traits(stream(_SITE), image, anatomy.mask, sources, config.site_traits)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), anatomy.mask.astype(np.uint8)


def _anatomy(rng: np.random.Generator, n: int, size: int) -> _Anatomy:
    """Body, lungs, mediastinum, heart, ribs, vessels and noise; one distribution for all."""
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    # Patient positioning: every body shifted, tilted and scaled a little, so no two alike.
    x, y = x - 0.5 - _uniform(rng, n, -0.04, 0.04), y - 0.5 - _uniform(rng, n, -0.04, 0.04)
    tilt, scale = np.deg2rad(_uniform(rng, n, -4, 4)), _uniform(rng, n, 0.94, 1.06)
    cos, sin = np.cos(tilt) / scale, np.sin(tilt) / scale
    x, y = cos * x - sin * y + 0.5, sin * x + cos * y + 0.5
    body_r = ((x - _uniform(rng, n, 0.48, 0.52)) / _uniform(rng, n, 0.40, 0.46)) ** 2 + (
        (y - 0.62) / _uniform(rng, n, 0.58, 0.64)) ** 2
    body = _sigmoid((1 - body_r) * 12)
    center_y, half_height = _uniform(rng, n, 0.45, 0.49), _uniform(rng, n, 0.29, 0.33)
    offset, half_width = _uniform(rng, n, 0.19, 0.21), _uniform(rng, n, 0.14, 0.165)
    heart_r = ((x - 0.5 - _uniform(rng, n, 0.03, 0.06)) / _uniform(rng, n, 0.14, 0.17)) ** 2 + (
        (y - center_y - _uniform(rng, n, 0.19, 0.23)) / _uniform(rng, n, 0.10, 0.13)) ** 2
    u, v, lung_r = [], [], []
    for side in (-1.0, 1.0):
        side_width = half_width * _uniform(rng, n, 0.95, 1.05)
        u.append((x - 0.5 - side * offset) / side_width * side)
        v.append((y - center_y) / half_height)
        taper = 0.7 + 0.2 * (np.clip(v[-1], -1, 1) + 1)  # narrow apex, wide base
        lung_r.append((u[-1] / taper) ** 2 + v[-1] ** 2)
    mask = (np.minimum(*lung_r) <= 1) & (heart_r > 1)
    heart = _sigmoid((1 - heart_r) * 6)
    lungs = _sigmoid((1 - np.minimum(*lung_r)) * 14) * (1 - heart)
    midline = np.abs(x - 0.5)
    image = 8 + body * _uniform(rng, n, 100, 125)
    spine = 25 * _sigmoid((0.025 - midline) * 150)
    image = image + body * (70 * _sigmoid((0.07 - midline) * 80) + spine)
    image = image + 40 * heart
    image = image * (1 - _uniform(rng, n, 0.55, 0.65) * lungs)
    hilum = np.exp(-((midline - 0.11) ** 2 / 0.003 + (y - center_y) ** 2 / 0.02))
    image = image + lungs * (25 * hilum + 8 * (_smooth_noise(rng, n, size, 12) - 0.5))
    image = image + body * _ribs(rng, n, x, y)
    image = image * (0.7 + 0.6 * _smooth_noise(rng, n, size, 6))  # uneven exposure
    image = image + 3 * rng.standard_normal((n, size, size), dtype=np.float32)
    return _Anatomy(image=image, mask=mask, u=np.stack(u), v=np.stack(v))


def _ribs(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Posterior ribs: thin bright bands arching down laterally, over the thorax only."""
    spacing, phase = _uniform(rng, n, 0.065, 0.08), _uniform(rng, n, 0, 1)
    arch = (y - 1.8 * (x - 0.5) ** 2) / spacing + phase
    bands = np.clip(np.cos(2 * np.pi * arch) - 0.35, 0, None) / 0.65
    thorax = _sigmoid((y - 0.12) * 40) * _sigmoid((0.85 - y) * 40)
    thorax = thorax * _sigmoid((0.44 - np.abs(x - 0.5)) * 60)
    return _uniform(rng, n, 22, 32) * bands * thorax


def _class_signal(rng: np.random.Generator, labels: np.ndarray, anatomy: _Anatomy) -> np.ndarray:
    """Disease intensity added per pixel (the caller keeps only the inside of the lungs)."""
    n, size = len(labels), anatomy.image.shape[-1]
    rows = np.arange(n)
    # Every image draws the same parameters whatever its label, so the stream stays aligned.
    texture = _smooth_noise(rng, n, size, 8)
    blob_side, blob_radius = rng.integers(0, 2, n), rng.uniform(0.22, 0.35, n)
    blob_u, blob_v = rng.uniform(-0.4, 0.5, n), rng.uniform(-0.5, 0.6, n)
    effusion_side, effusion_level = rng.integers(0, 2, n), rng.uniform(0.35, 0.6, n)
    signal = np.zeros((n, size, size), dtype=np.float32)
    for name in _SIGNAL_AMPLITUDE:
        picked = rows[labels == CLASSES.index(name)]
        if name == "covid":  # both lungs, lateral third, lower zone, patchy
            u, v = anatomy.u[:, picked], anatomy.v[:, picked]
            zone = (_sigmoid((v - 0.05) * 5) * _sigmoid((u - 0.2) * 6)).sum(axis=0)
            pattern = zone * (0.3 + 0.7 * texture[picked])
        elif name == "opacity":  # one dense blob at a random place in one lung
            side = blob_side[picked]
            u, v = anatomy.u[side, picked], anatomy.v[side, picked]
            distance = (u - blob_u[picked, None, None]) ** 2 + (v - blob_v[picked, None, None]) ** 2
            pattern = np.exp(-distance / (2 * blob_radius[picked, None, None] ** 2))
            pattern = pattern * (0.7 + 0.3 * texture[picked])
        else:  # other: a basal effusion in one lung, its meniscus rising laterally
            side = effusion_side[picked]
            u, v = anatomy.u[side, picked], anatomy.v[side, picked]
            pattern = _sigmoid((v - effusion_level[picked, None, None] + 0.35 * u) * 12)
        signal[picked] = _SIGNAL_AMPLITUDE[name] * pattern
    return signal


def _site_traits(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    sources: np.ndarray,
    traits: SiteTraits,
) -> np.ndarray:
    """Apply each source's acquisition traits to the pixels outside the lungs."""
    n, size = len(sources), image.shape[-1]
    profiles = np.array([_site_profile(j)[:4] for j in sources], dtype=np.float32)
    gamma, gain, offset, noise_sd = (profiles[:, i, None, None] for i in range(4))
    noise = rng.standard_normal((n, size, size), dtype=np.float32)  # drawn even when unused
    jitter = rng.integers(-2, 3, (n, 2))
    outside = image
    if traits.intensity:
        outside = 255 * gain * (np.clip(image, 0, 255) / 255) ** gamma + offset + noise_sd * noise
    if traits.borders:
        outside = _paint_borders(outside, sources, noise)
    if traits.markers:
        outside = _paint_markers(outside, sources, jitter)
    return np.where(mask, image, outside)


def _site_profile(source: int) -> tuple:
    return _SITE_PROFILES[source % len(_SITE_PROFILES)]


def _paint_borders(image: np.ndarray, sources: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Each source's bars or frame, with a little noise as on a real detector."""
    size = image.shape[-1]
    bars = np.zeros(image.shape, dtype=bool)
    levels = np.zeros((len(sources), 1, 1), dtype=np.float32)
    for j in np.unique(sources):
        _, _, _, _, style, fraction, level = _site_profile(j)
        width = max(1, int(round(fraction * size)))
        rows = sources == j
        if style in ("letterbox", "frame"):
            bars[rows, :width, :] = bars[rows, size - width :, :] = True
        if style in ("pillarbox", "frame"):
            bars[rows, :, :width] = bars[rows, :, size - width :] = True
        levels[rows] = level
    return np.where(bars, levels + 3 * noise, image)


def _paint_markers(image: np.ndarray, sources: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Burn each source's glyph into its corner (shifted per image by a few pixels)."""
    image, size = image.copy(), image.shape[-1]
    cell = max(1, int(round(0.014 * size)))
    for row, j in enumerate(sources):
        glyph = np.array([[c == "X" for c in line] for line in _GLYPHS[j % len(_GLYPHS)]])
        glyph = np.kron(glyph, np.ones((cell, cell), dtype=bool))
        corner = CORNERS[(j + j // len(CORNERS)) % len(CORNERS)]
        ys, xs = _corner_box(size, corner, *glyph.shape)
        ys = slice(ys.start + jitter[row, 0], ys.stop + jitter[row, 0])
        xs = slice(xs.start + jitter[row, 1], xs.stop + jitter[row, 1])
        image[row, ys, xs] = np.where(glyph, 245.0, image[row, ys, xs])
    return image


def _corner_box(size: int, corner: str, height: int, width: int) -> tuple[slice, slice]:
    """Row and column slices of a ``height x width`` box ``_MARKER_MARGIN`` in from ``corner``."""
    margin = int(round(_MARKER_MARGIN * size))
    top = margin if corner.startswith("top") else size - margin - height
    left = margin if corner.endswith("left") else size - margin - width
    return slice(top, top + height), slice(left, left + width)
