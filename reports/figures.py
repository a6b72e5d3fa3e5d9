"""Figure specs (plain data, see ``probes.base``) drawn as PNG bytes with matplotlib.

One function per spec kind, each ``(spec, run_dir) -> bytes``. Figures are built with the
object-oriented ``matplotlib.figure.Figure`` API, which needs no pyplot state and no
backend switch. ``render_figure`` is the entry point the HTML writer uses: it never
raises for a bad spec; it returns a ``RenderedFigure`` whose ``note`` says, visibly in the
report, why a figure could not be drawn.

Besides the probe kinds (heatmap, bars, lines, hist, cam_gallery, image_gallery) this module draws
``{"kind": "confusion", "title", "labels", "values": [[...]]}``: a confusion matrix, rows
true class and columns predicted class (the model-performance section uses it).
"""

from __future__ import annotations

import base64
import io
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from skimage.measure import find_contours

from audit.core.progress import log

_DPI = 110
_GALLERY_COLUMNS = 4
_GALLERY_MAX_PANELS = 12
_CAPTION_WIDTH = 34  # characters per caption line under a 2.6-inch panel
_CAM_ALPHA = 0.45
_BAR_COLOR = "#3b6ea8"
_REFERENCE_COLOR = "#c0392b"


class FigureUnavailable(Exception):
    """A figure spec cannot be drawn; the message is shown in the report in its place."""


@dataclass(frozen=True)
class RenderedFigure:
    """A drawn figure (``data_uri``) or the reason it could not be drawn (``note``)."""

    title: str
    data_uri: str | None = None
    note: str | None = None


def figure_data_uri(png: bytes) -> str:
    """Encode PNG bytes as a ``data:`` URI, so the HTML report needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_figure(spec: dict[str, Any], run_dir: Path) -> RenderedFigure:
    """Draw one figure spec; a spec that cannot be drawn becomes a visible note.

    Args:
        spec: A figure spec (``kind`` plus the kind's keys, see the module docstring).
        run_dir: The run folder that ``cam_gallery`` npz paths are relative to.

    Returns:
        The figure as a data URI, or a note saying why it is missing.
    """
    title = str(spec.get("title", ""))
    kind = spec.get("kind")
    draw = _DRAWERS.get(kind) if isinstance(kind, str) else None
    if draw is None:
        return RenderedFigure(title, note=f"Cannot draw figure of kind {kind!r}.")
    try:
        return RenderedFigure(title, data_uri=figure_data_uri(draw(spec, run_dir)))
    except FigureUnavailable as missing:
        return RenderedFigure(title, note=str(missing))
    except (KeyError, ValueError, TypeError, IndexError) as bad_spec:
        # A malformed spec is a bug upstream, but the reviewer must still get the report.
        log.warning("figure %r (%s) could not be drawn: %r", title, kind, bad_spec)
        return RenderedFigure(title, note=f"Cannot draw {kind} figure: malformed spec ({bad_spec!r}).")


def heatmap_png(spec: dict[str, Any], run_dir: Path | None = None) -> bytes:
    """Annotated matrix: ``row_labels``, ``col_labels``, ``values``, ``fmt`` (default ``"d"``)."""
    return _matrix_png(spec.get("title", ""), spec["values"], spec["row_labels"], spec["col_labels"],
                       fmt=spec.get("fmt", "d"), axis_labels=(spec.get("ylabel", ""),
                                                              spec.get("xlabel", "")))


def confusion_png(spec: dict[str, Any], run_dir: Path | None = None) -> bytes:
    """Confusion matrix: ``labels`` and ``values`` (rows true, columns predicted counts)."""
    labels = spec["labels"]
    return _matrix_png(spec.get("title", "Confusion matrix"), spec["values"], labels, labels,
                       fmt="d", axis_labels=("True class", "Predicted class"))


def bars_png(spec: dict[str, Any], run_dir: Path | None = None) -> bytes:
    """Bars with optional CIs (``ci_low``/``ci_high``) and a dashed ``reference`` line."""
    labels = [_plain(label) for label in spec["labels"]]
    values = _floats(spec["values"])
    figure, ax = _figure(width=max(4.5, 0.9 * len(labels) + 2), height=3.4)
    positions = np.arange(len(labels))
    ax.bar(positions, np.nan_to_num(values), color=_BAR_COLOR, yerr=_error_bars(spec, values),
           capsize=4, ecolor="#222222")
    reference = spec.get("reference")
    if reference is not None:
        ax.axhline(float(reference), color=_REFERENCE_COLOR, linestyle="--", linewidth=1.2,
                   label=f"reference {float(reference):.3g}")
        ax.legend(loc="best", fontsize=8)
    ax.set_xticks(positions, labels, rotation=30 if len(labels) > 4 else 0, ha="right"
                  if len(labels) > 4 else "center")
    ax.set_ylabel(_plain(spec.get("ylabel", "")))
    return _finish(figure, ax, spec.get("title", ""))


def lines_png(spec: dict[str, Any], run_dir: Path | None = None) -> bytes:
    """One line per entry of ``series`` over ``x``."""
    figure, ax = _figure(width=5.5, height=3.4)
    for name, values in spec["series"].items():
        ax.plot(spec["x"], _floats(values), marker="o", label=_plain(name))
    if all(isinstance(x, int) for x in spec["x"]):  # epochs, sizes: no 1.25 ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_plain(spec.get("xlabel", "")))
    ax.set_ylabel(_plain(spec.get("ylabel", "")))
    ax.legend(loc="best", fontsize=8)
    return _finish(figure, ax, spec.get("title", ""))


def hist_png(spec: dict[str, Any], run_dir: Path | None = None) -> bytes:
    """Overlaid histograms of each entry of ``series``, with an optional ``reference`` line."""
    figure, ax = _figure(width=5.5, height=3.4)
    for name, values in spec["series"].items():
        finite = _floats(values)
        ax.hist(finite[np.isfinite(finite)], bins=20, alpha=0.55, label=_plain(name))
    reference = spec.get("reference")
    if reference is not None:
        ax.axvline(float(reference), color=_REFERENCE_COLOR, linestyle="--", linewidth=1.2)
    ax.set_xlabel(_plain(spec.get("xlabel", "")))
    ax.set_ylabel("images")
    ax.legend(loc="best", fontsize=8)
    return _finish(figure, ax, spec.get("title", ""))


def cam_gallery_png(spec: dict[str, Any], run_dir: Path) -> bytes:
    """Grad-CAM overlays (jet over gray) with the lung outline, read from ``spec["npz"]``.

    The npz (relative to ``run_dir``) holds ``images`` (n,S,S) uint8, ``cams`` (n,h,w) and
    optionally ``masks`` (n,S,S). Each map is scaled to its own maximum for display only.
    At most 12 panels are drawn.

    Raises:
        FigureUnavailable: The npz is missing, outside the run folder, corrupt or empty.
    """
    images, cams, masks = _load_gallery(run_dir, str(spec["npz"]))
    captions = list(spec.get("captions", []))
    count = min(len(images), _GALLERY_MAX_PANELS)
    columns = min(count, _GALLERY_COLUMNS)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.6 * columns, 2.9 * rows), dpi=_DPI)
    for index in range(count):
        ax = figure.add_subplot(rows, columns, index + 1)
        mask = masks[index] if masks is not None else None
        _draw_overlay(ax, images[index], cams[index], mask)
        if index < len(captions):
            ax.set_title(textwrap.fill(_plain(captions[index]), _CAPTION_WIDTH), fontsize=8)
    figure.suptitle(_plain(spec.get("title", "")), fontsize=11)
    return _png(figure)


def image_gallery_png(spec: dict[str, Any], run_dir: Path) -> bytes:
    """Plain images in rows of ``spec["columns"]`` (default 4), each with the outline of its
    mask if given, read from ``spec["npz"]``: ``images`` (n,S,S) uint8 and optionally
    ``masks`` (n,S,S). At most 12 panels are drawn.

    Raises:
        FigureUnavailable: The npz is missing, outside the run folder, corrupt or empty.
    """
    images, _, masks = _load_gallery(run_dir, str(spec["npz"]), with_cams=False)
    captions = list(spec.get("captions", []))
    count = min(len(images), _GALLERY_MAX_PANELS)
    columns = min(count, int(spec.get("columns", _GALLERY_COLUMNS)))
    rows = -(-count // columns)
    figure = Figure(figsize=(2.6 * columns, 2.9 * rows), dpi=_DPI)
    for index in range(count):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.imshow(images[index], cmap="gray", vmin=0, vmax=255)
        if masks is not None and masks[index].any():
            for contour in find_contours(masks[index].astype(float), 0.5):
                ax.plot(contour[:, 1], contour[:, 0], color="#f1c40f", linewidth=1.0)
        ax.axis("off")
        if index < len(captions):
            ax.set_title(textwrap.fill(_plain(captions[index]), _CAPTION_WIDTH), fontsize=8)
    figure.suptitle(_plain(spec.get("title", "")), fontsize=11)
    return _png(figure)


_DRAWERS: dict[str, Callable[[dict[str, Any], Path], bytes]] = {
    "heatmap": heatmap_png,
    "confusion": confusion_png,
    "bars": bars_png,
    "lines": lines_png,
    "hist": hist_png,
    "cam_gallery": cam_gallery_png,
    "image_gallery": image_gallery_png,
}


def _matrix_png(title: str, values: Any, row_labels: Any, col_labels: Any, *, fmt: str,
                axis_labels: tuple[str, str]) -> bytes:
    matrix = np.asarray(values, dtype=float)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values shape {matrix.shape} does not match "
                         f"{len(row_labels)} row and {len(col_labels)} column labels")
    figure, ax = _figure(width=max(4.0, 0.9 * len(col_labels) + 2.5),
                         height=max(3.0, 0.55 * len(row_labels) + 1.8))
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = np.nanmax(matrix) / 2 if matrix.size and np.isfinite(matrix).any() else 0
    for (row, col), value in np.ndenumerate(matrix):
        text = "–" if not np.isfinite(value) else format(int(value) if fmt == "d" else value, fmt)
        ax.text(col, row, text, ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    ax.set_xticks(range(len(col_labels)), [_plain(c) for c in col_labels], rotation=30,
                  ha="right")
    ax.set_yticks(range(len(row_labels)), [_plain(r) for r in row_labels])
    ax.set_ylabel(_plain(axis_labels[0]))
    ax.set_xlabel(_plain(axis_labels[1]))
    return _finish(figure, ax, title)


def _load_gallery(run_dir: Path, relative: str, with_cams: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A gallery's ``images``, ``cams`` (None when not ``with_cams``) and optional
    ``masks`` from the npz ``relative`` to ``run_dir``."""
    root = Path(run_dir).resolve()
    path = (root / relative).resolve()
    what = "Grad-CAM examples" if with_cams else "Gallery images"
    if not path.is_relative_to(root):
        raise FigureUnavailable(f"{what} {relative!r} lie outside the run folder.")
    if not path.is_file():
        raise FigureUnavailable(f"{what} file {relative!r} is missing.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            images = archive["images"]
            cams = archive["cams"] if with_cams else None
            masks = archive["masks"] if "masks" in archive.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise FigureUnavailable(f"{what} file {relative!r} is unreadable "
                                f"({type(error).__name__}: {error}).") from None
    if images.ndim != 3 or len(images) == 0 or (with_cams and len(cams) != len(images)):
        shapes = f"images {images.shape}" + (f", cams {cams.shape}" if with_cams else "")
        raise FigureUnavailable(f"{what} file {relative!r} holds no usable images "
                                f"({shapes}).")
    return images, cams, masks


def _draw_overlay(ax: Any, image: np.ndarray, cam: np.ndarray, mask: np.ndarray | None) -> None:
    size = image.shape[0]
    extent = (-0.5, size - 0.5, size - 0.5, -0.5)  # stretch the coarse map over the image
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    peak = float(np.nanmax(cam)) if np.isfinite(cam).any() else 0.0
    ax.imshow(cam, cmap="jet", alpha=_CAM_ALPHA, vmin=0, vmax=peak if peak > 0 else 1,
              extent=extent, interpolation="bilinear")
    if mask is not None and mask.any():
        for contour in find_contours(mask.astype(float), 0.5):
            ax.plot(contour[:, 1], contour[:, 0], color="white", linewidth=1.0)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.axis("off")


def _error_bars(spec: dict[str, Any], values: np.ndarray) -> np.ndarray | None:
    if spec.get("ci_low") is None or spec.get("ci_high") is None:
        return None
    low, high = _floats(spec["ci_low"]), _floats(spec["ci_high"])
    # matplotlib wants distances from the bar top; a missing CI draws no bar.
    return np.nan_to_num(np.vstack([values - low, high - values]).clip(min=0))


def _floats(values: Any) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _plain(text: Any) -> str:
    """Text drawn literally: a ``$`` would otherwise start matplotlib's math mode."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    figure = Figure(figsize=(width, height), dpi=_DPI)
    return figure, figure.add_subplot()


def _finish(figure: Figure, ax: Any, title: str) -> bytes:
    ax.set_title(_plain(title), fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
