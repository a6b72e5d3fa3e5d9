"""Pixel-level helpers shared by the image decoders: limits, range scaling, raster decoding.

Dimensions are checked from the header before any pixel is decoded, so a small file that
claims to be 100000x100000 (a decompression bomb) is rejected without allocating memory.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 16384
"""Largest accepted width or height, in pixels."""
MAX_PIXELS = 8192 * 8192
"""Largest accepted width x height (below Pillow's own decompression-bomb warning)."""
MIN_SIDE = 32
"""Smallest accepted width or height: anything smaller is not a radiograph."""

_HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image; the message is the short reason."""


def check_dimensions(width: int, height: int) -> None:
    """Reject zero-size, tiny and absurdly large images before decoding them.

    Raises:
        ImageDecodeError: with the dimensions and the violated limit.
    """
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"zero-size image ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"image dimensions {width}x{height} exceed the limit "
            f"({MAX_SIDE} px per side, {MAX_PIXELS} pixels)"
        )
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageDecodeError(f"image dimensions {width}x{height} below the minimum of {MIN_SIDE} px")


def scale_to_uint8(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linearly map ``[low, high]`` to ``[0, 255]`` (clipping outside), as uint8.

    Args:
        values: any numeric array.
        low: value mapped to 0. Defaults to None (the array's minimum).
        high: value mapped to 255. Defaults to None (the array's maximum).

    Returns:
        uint8 array of the same shape; all zeros when the range is empty (flat image).
    """
    values = np.asarray(values, dtype=np.float64)
    low = float(values.min()) if low is None else float(low)
    high = float(values.max()) if high is None else float(high)
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _open_raster(path: str | Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image") from None
    except Image.DecompressionBombError as error:  # Pillow refused before we saw the size
        claimed = re.search(r"\d+", str(error))
        pixels = f"{claimed.group()} pixels" if claimed else "too many pixels"
        raise ImageDecodeError(
            f"image dimensions exceed the limit ({pixels} > {MAX_PIXELS})") from None
    except Exception as error:  # a corrupt header can fail anywhere inside a format plugin
        raise ImageDecodeError(f"corrupt image header ({type(error).__name__}: {error})") from None


def _to_grayscale(image: Image.Image) -> np.ndarray:
    if image.mode in _HIGH_DEPTH_MODES:  # 16-bit / float: scale by the real range, never clip
        return scale_to_uint8(np.asarray(image))
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("P", "PA"):  # palettes may carry transparency: resolve it first
        image = image.convert("RGBA")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def decode_raster(path: str | Path) -> np.ndarray:
    """Decode a PNG/JPEG/BMP/TIFF/... file with Pillow to 2-D uint8 grayscale.

    Colour and alpha are dropped (luminance), 16-bit images are scaled by their real
    range, EXIF orientation is applied, and only the first frame of multi-frame files
    is read.

    Raises:
        ImageDecodeError: "not an image", "truncated image", bad dimensions, corrupt data.
    """
    with _open_raster(path) as image:
        check_dimensions(*image.size)
        try:
            image.load()
            return _to_grayscale(ImageOps.exif_transpose(image))
        except Exception as error:  # decoders raise many exception types on corrupt data
            if "truncat" in str(error).lower():
                raise ImageDecodeError("truncated image") from None
            raise ImageDecodeError(f"corrupt image ({error})") from None
