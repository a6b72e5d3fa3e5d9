"""Figure specs (plain data, see ``probes.base``) drawn with matplotlib.

One function per chart kind, each ``(spec, run_dir) -> (image bytes, width in inches)``: a PNG,
or a JPEG for an image gallery (radiographs).
Figures are built with the object-oriented ``matplotlib.figure.Figure`` API, which needs no
pyplot state and no backend switch. ``render_figure`` is the entry point the HTML writer
uses: it never raises for a bad spec; it returns a ``RenderedFigure`` whose ``note`` says,
visibly in the report, why a figure could not be drawn.

Besides the probe kinds (heatmap, bars, lines, hist, image_gallery; cam_gallery through
``cam_panels``) it draws ``{"kind": "confusion", "title", "labels", "values": [[...]]}``: a confusion
matrix, rows true class and columns predicted class (the model-performance section uses it).

Charts are drawn at 96 dpi and shown at their natural size (about 500 px, two per row;
the same size on paper): 9-10 pt text, legends beside the
axes (never over the data), a bar chart with many or long labels drawn horizontally. A
heatmap spec with ``"center"`` (an enrichment's 1.0) uses a diverging colormap centred
there. ``cam_panels`` draws a gallery as separate JPEG panels for the page to lay out.
"""

from __future__ import annotations

import base64
import io
import json
import os
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from skimage.measure import find_contours

from audit.core.cache import hash_file, stable_hash
from audit.core.io import atomic_write
from audit.core.progress import log

_DPI = 96  # shown at its natural size: 1 inch = 96 CSS px, 9 pt text = 12 px
_GALLERY_MAX_PANELS = 12
_CAM_ALPHA = 0.45
_BAR_COLOR = "#3b6ea8"
_REFERENCE_COLOR = "#555555"
_THRESHOLD_COLOR = "#c0392b"
_WIDE_INCHES = 6.5  # a figure wider than this gets the page's full width
_PANEL_PIXELS = 320  # a gallery panel's side: sharp when enlarged, ~15 KB as JPEG
_JPEG_QUALITY = 72  # radiographs and heat maps: no visible loss, the demo report under 1.5 MB
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_COLOURS = 128  # charts are flat colours: a palette PNG is a third of the size
_GALLERY_COLUMNS = 4
_CAPTION_WIDTH = 30  # characters per caption line under a 2.4-inch panel
_MARKERS = ("o", "s", "^", "D", "v", "P")
_LINESTYLES = ("-", "--", "-.", ":")


FIGURE_MEMO = ".figures"
"""Folder of the run folder holding each drawn figure by a hash of its spec, of the artifact
it reads and of this module's code: an unchanged report is not drawn again (matplotlib
takes seconds). ``prune_figure_memo`` drops what a report did not use."""


class FigureUnavailable(Exception):
    """A figure spec cannot be drawn; the message is shown in the report in its place."""


@dataclass(frozen=True)
class RenderedFigure:
    """A drawn figure (``data_uri``) or the reason it could not be drawn (``note``)."""

    title: str
    data_uri: str | None = None
    note: str | None = None
    wide: bool = False  # drawn wider than a half-page column: shown at full width
    caption: str = ""  # the spec's "caption": how to read the figure


@dataclass(frozen=True)
class GalleryPanel:
    """One Grad-CAM panel: the overlay, its caption and source, and the lung-masked twin's
    overlay of the same image when the gallery holds one."""

    data_uri: str
    caption: str
    source: str
    twin_uri: str | None = None


def figure_data_uri(image: bytes) -> str:
    """Encode PNG or JPEG bytes as a ``data:`` URI, so the HTML report needs no other file."""
    mime = "image/jpeg" if image.startswith(_JPEG_MAGIC) else "image/png"
    return f"data:{mime};base64," + base64.b64encode(image).decode("ascii")


def render_figure(spec: dict[str, Any], run_dir: Path,
                  threshold: float | None = None) -> RenderedFigure:
    """Draw one figure spec; a spec that cannot be drawn becomes a visible note.

    Args:
        spec: A figure spec (``kind`` plus the kind's keys, see the module docstring).
        run_dir: The run folder that ``cam_gallery`` npz paths are relative to.
        threshold: The gate's threshold of the check the figure belongs to, drawn on a bar
            chart whose spec has a ``reference`` (its chance or uniform value, so its bars
            are on the metric's scale) unless the spec says ``"metric_scale": False``.
            Defaults to None (no threshold line).

    Returns:
        The figure as a data URI, or a note saying why it is missing.
    """
    title = str(spec.get("title", ""))
    kind = spec.get("kind")
    draw = _DRAWERS.get(kind) if isinstance(kind, str) else None
    if draw is None:
        return RenderedFigure(title, note=f"Cannot draw figure of kind {kind!r}.")
    if (threshold is not None and kind == "bars" and spec.get("reference") is not None
            and spec.get("metric_scale", True)):
        spec = {**spec, "threshold": threshold}
    def drawn() -> dict[str, Any]:
        image, width = draw(spec, run_dir)
        return {"data_uri": figure_data_uri(image), "width": width}

    try:
        figure = _memoised(spec, run_dir, drawn)
        return RenderedFigure(title, data_uri=figure["data_uri"],
                              wide=figure["width"] > _WIDE_INCHES,
                              caption=str(spec.get("caption") or ""))
    except FigureUnavailable as missing:
        return RenderedFigure(title, note=str(missing))
    except (KeyError, ValueError, TypeError, IndexError) as bad_spec:
        # A malformed spec is a bug upstream, but the reviewer must still get the report.
        log.warning("figure %r (%s) could not be drawn: %r", title, kind, bad_spec)
        return RenderedFigure(title, note=f"Cannot draw {kind} figure: malformed spec ({bad_spec!r}).")


def heatmap_png(spec: dict[str, Any], run_dir: Path | None = None) -> tuple[bytes, float]:
    """Annotated matrix: ``row_labels``, ``col_labels``, ``values``, ``fmt`` (default ``"d"``),
    optional ``center`` (a diverging colormap centred on it) and ``colorbar_label``."""
    return _matrix_png(spec.get("title", ""), spec["values"], spec["row_labels"], spec["col_labels"],
                       fmt=spec.get("fmt", "d"), axis_labels=(spec.get("ylabel", ""),
                                                              spec.get("xlabel", "")),
                       center=spec.get("center"), colorbar_label=spec.get("colorbar_label", ""))


def confusion_png(spec: dict[str, Any], run_dir: Path | None = None) -> tuple[bytes, float]:
    """Confusion matrix: ``labels`` and ``values`` (rows true, columns predicted counts)."""
    labels = spec["labels"]
    return _matrix_png(spec.get("title", "Confusion matrix"), spec["values"], labels, labels,
                       fmt="d", axis_labels=("True class", "Predicted class"),
                       colorbar_label="images")


def bars_png(spec: dict[str, Any], run_dir: Path | None = None) -> tuple[bytes, float]:
    """Bars with optional CIs (``ci_low``/``ci_high``), each bar's value written at its end,
    a dashed ``reference`` line (chance or uniform) and a ``threshold`` line. Many or long
    labels turn the chart horizontal, so they stay readable."""
    labels = [_plain(label) for label in spec["labels"]]
    values = _floats(spec["values"])
    horizontal = len(labels) > 5 or max((len(label) for label in labels), default=0) > 14
    errors = _error_bars(spec, values)
    positions = np.arange(len(labels))
    if horizontal:
        figure, ax = _figure(width=4.6, height=max(2.2, 0.34 * len(labels) + 1.1))
        ax.barh(positions, np.nan_to_num(values), color=_BAR_COLOR, xerr=errors, capsize=3,
                ecolor="#222222")
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()  # first label on top, as it reads
        ax.set_xlabel(_plain(spec.get("ylabel", "")), fontsize=10)
    else:
        figure, ax = _figure(width=max(4.2, 0.8 * len(labels) + 2), height=3.0)
        ax.bar(positions, np.nan_to_num(values), color=_BAR_COLOR, yerr=errors, capsize=4,
               ecolor="#222222")
        ax.set_xticks(positions, labels)
        ax.set_ylabel(_plain(spec.get("ylabel", "")), fontsize=10)
    tops = _floats(spec["ci_high"]) if spec.get("ci_high") is not None else values
    for position, value, top in zip(positions, values, np.fmax(tops, values), strict=True):
        if np.isfinite(value):  # written past the error bar, not over it
            xy = (top, position) if horizontal else (position, top)
            ax.annotate(f"{value:.2f}", xy, xytext=(4, 0) if horizontal else (0, 3),
                        textcoords="offset points", fontsize=8, color="#222222",
                        ha="left" if horizontal else "center",
                        va="center" if horizontal else "bottom")
    _reference_lines(spec, ax, vertical=horizontal)
    return _finish(figure, ax, spec.get("title", ""))


def lines_png(spec: dict[str, Any], run_dir: Path | None = None) -> tuple[bytes, float]:
    """One line per entry of ``series`` over ``x``; series are nudged sideways and drawn
    with their own marker and dash, so equal values (two seeds) stay visible."""
    figure, ax = _figure(width=5.2, height=3.2)
    x = np.asarray(spec["x"], dtype=float)
    series = spec["series"]
    nudge = 0.012 * (np.ptp(x) if len(x) > 1 else 1.0)
    for index, (name, values) in enumerate(series.items()):
        offset = (index - (len(series) - 1) / 2) * nudge
        ax.plot(x + offset, _floats(values), marker=_MARKERS[index % len(_MARKERS)],
                linestyle=_LINESTYLES[index % len(_LINESTYLES)], markersize=6,
                markerfacecolor="none" if index % 2 else None, label=_plain(name))
    if all(isinstance(value, int) for value in spec["x"]):  # epochs, sizes: no 1.25 ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_plain(spec.get("xlabel", "")), fontsize=10)
    ax.set_ylabel(_plain(spec.get("ylabel", "")), fontsize=10)
    _legend_beside(ax)
    return _finish(figure, ax, spec.get("title", ""))


def hist_png(spec: dict[str, Any], run_dir: Path | None = None) -> tuple[bytes, float]:
    """Overlaid histograms of each entry of ``series``, with an optional ``reference`` line."""
    figure, ax = _figure(width=5.2, height=3.2)
    for name, values in spec["series"].items():
        finite = _floats(values)
        ax.hist(finite[np.isfinite(finite)], bins=20, alpha=0.55, label=_plain(name))
    _reference_lines(spec, ax, vertical=True)
    ax.set_xlabel(_plain(spec.get("xlabel", "")), fontsize=10)
    ax.set_ylabel("images", fontsize=10)
    _legend_beside(ax)
    return _finish(figure, ax, spec.get("title", ""))


def _reference_lines(spec: dict[str, Any], ax: Any, vertical: bool) -> None:
    """The spec's ``reference`` (chance / uniform, or its ``reference_label``) and
    ``threshold`` lines, each labelled."""
    reference, threshold = spec.get("reference"), spec.get("threshold")
    line = ax.axvline if vertical else ax.axhline
    if reference is not None:
        line(float(reference), color=_REFERENCE_COLOR, linestyle="--", linewidth=1.2,
             label=f"{spec.get('reference_label') or 'chance / uniform'} "
                   f"({float(reference):.3g})")
    if threshold is not None:
        line(float(threshold), color=_THRESHOLD_COLOR, linestyle=":", linewidth=1.6,
             label=f"gate threshold ({float(threshold):.3g})")
    if reference is not None or threshold is not None:
        _legend_beside(ax)


def _legend_beside(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def cam_panels(spec: dict[str, Any], run_dir: Path) -> tuple[list[GalleryPanel], str]:
    """A ``cam_gallery`` spec as separate JPEG panels, plus the shared colour bar (PNG URI).

    The npz (``spec["npz"]``, relative to ``run_dir``) holds ``images`` (n,S,S) uint8,
    ``cams`` (n,h,w), optionally ``masks`` (n,S,S) and ``twin_cams`` (n,h,w): the
    lung-masked twin model's maps of the same images, drawn over the lungs-only image.
    Each map is scaled to its own maximum for display only. The spec's ``captions`` and
    ``sources`` (one per image, optional) label the panels. At most 12 panels.

    Raises:
        FigureUnavailable: The npz is missing, outside the run folder, corrupt or empty.
    """
    def drawn() -> dict[str, Any]:
        arrays = _load_gallery(run_dir, str(spec["npz"]))
        images, cams, masks, twins = (arrays["images"], arrays["cams"], arrays.get("masks"),
                                      arrays.get("twin_cams"))
        captions, sources = list(spec.get("captions", [])), list(spec.get("sources", []))
        panels = []
        for index in range(min(len(images), _GALLERY_MAX_PANELS)):
            mask = masks[index] if masks is not None else None
            twin = None
            if twins is not None and mask is not None:
                twin = _panel_jpeg(np.where(mask > 0, images[index], 0), twins[index], mask)
            panels.append(GalleryPanel(
                data_uri=_panel_jpeg(images[index], cams[index], mask),
                caption=str(captions[index]) if index < len(captions) else "",
                source=str(sources[index]) if index < len(sources) else "",
                twin_uri=twin))
        return {"panels": [asdict(panel) for panel in panels],
                "colorbar": figure_data_uri(_colorbar_png())}

    gallery = _memoised(spec, run_dir, drawn)
    return [GalleryPanel(**panel) for panel in gallery["panels"]], gallery["colorbar"]


def _memoised(spec: dict[str, Any], run_dir: Path,
              draw: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``draw()`` (a figure as JSON-able data), or what it gave for the same spec, artifact
    and code before, from ``FIGURE_MEMO``. A run folder that cannot be written to (a
    reviewer's read-only copy) draws every time; a damaged entry is drawn again."""
    artifact = Path(run_dir) / str(spec["npz"]) if "npz" in spec else None
    key = stable_hash({"spec": spec, "code": hash_file(__file__),
                       "matplotlib": matplotlib.__version__,
                       "artifact": hash_file(artifact) if artifact and artifact.is_file() else None})
    entry = Path(run_dir) / FIGURE_MEMO / f"{key}.json"
    try:
        figure = json.loads(entry.read_text())
        os.utime(entry)  # used by this report: kept by prune_figure_memo
        return figure
    except (OSError, ValueError):
        pass
    figure = draw()
    try:
        entry.parent.mkdir(exist_ok=True)
        with atomic_write(entry) as handle:
            json.dump(figure, handle)
    except OSError as unwritable:
        log.debug("figure memo %s not written: %s", entry, unwritable)
    return figure


def prune_figure_memo(run_dir: Path, since: float) -> None:
    """Remove the ``FIGURE_MEMO`` entries of ``run_dir`` not used since ``since`` (a
    ``time.time()``): figures of earlier versions of the report. A second of slack, as
    file times come from a coarser clock than ``time.time()``."""
    for entry in (Path(run_dir) / FIGURE_MEMO).glob("*.json"):
        try:
            if entry.stat().st_mtime < since - 1.0:
                entry.unlink()
        except OSError:
            continue  # removed by another writer, or read-only: the memo is only a cache


def _panel_jpeg(image: np.ndarray, cam: np.ndarray, mask: np.ndarray | None) -> str:
    inches = _PANEL_PIXELS / 100
    figure = Figure(figsize=(inches, inches), dpi=100)
    ax = figure.add_axes((0, 0, 1, 1))
    _draw_overlay(ax, image, cam, mask)
    return figure_data_uri(_jpeg(figure))


def _colorbar_png() -> bytes:
    figure = Figure(figsize=(3.4, 0.75), dpi=_DPI)
    ax = figure.add_axes((0.05, 0.55, 0.9, 0.3))
    figure.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=colormaps["jet"]), cax=ax,
                    orientation="horizontal")
    ax.set_xticks([0, 1], ["0", "map's maximum"])
    ax.tick_params(labelsize=8)
    ax.set_title("Grad-CAM (each map scaled to its own maximum)", fontsize=8)
    return _png(figure)


def image_gallery_jpeg(spec: dict[str, Any], run_dir: Path) -> tuple[bytes, float]:
    """Plain images in rows of ``spec["columns"]`` (default 4), each with the outline of its
    mask if given, read from ``spec["npz"]``: ``images`` (n,S,S) uint8 and optionally
    ``masks`` (n,S,S). At most 12 panels are drawn, as a JPEG: radiographs are photographic,
    a PNG of them is four times the size.

    Raises:
        FigureUnavailable: The npz is missing, outside the run folder, corrupt or empty.
    """
    arrays = _load_gallery(run_dir, str(spec["npz"]), with_cams=False)
    images, masks = arrays["images"], arrays.get("masks")
    captions = list(spec.get("captions", []))
    count = min(len(images), _GALLERY_MAX_PANELS)
    columns = min(count, int(spec.get("columns", _GALLERY_COLUMNS)))
    rows = -(-count // columns)
    figure = Figure(figsize=(2.4 * columns, 2.7 * rows), dpi=_DPI)
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
    return _jpeg(figure, tight=True), float(figure.get_figwidth())


_DRAWERS: dict[str, Callable[[dict[str, Any], Path], bytes]] = {
    "heatmap": heatmap_png,
    "confusion": confusion_png,
    "bars": bars_png,
    "lines": lines_png,
    "hist": hist_png,
    "image_gallery": image_gallery_jpeg,
}


def _matrix_png(title: str, values: Any, row_labels: Any, col_labels: Any, *, fmt: str,
                axis_labels: tuple[str, str], center: float | None = None,
                colorbar_label: str = "") -> tuple[bytes, float]:
    matrix = np.asarray(values, dtype=float)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values shape {matrix.shape} does not match "
                         f"{len(row_labels)} row and {len(col_labels)} column labels")
    figure, ax = _figure(width=max(4.2, 0.75 * len(col_labels) + 2.6),
                         height=max(2.8, 0.45 * len(row_labels) + 1.4))
    norm, cmap = _matrix_colours(matrix, center)
    image = ax.imshow(matrix, cmap=cmap, norm=norm, aspect="auto")
    bar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.ax.tick_params(labelsize=8)
    if colorbar_label or center is not None:
        bar.set_label(_plain(colorbar_label or f"{center:g} = neutral"), fontsize=9)
    for (row, col), value in np.ndenumerate(matrix):
        text = "–" if not np.isfinite(value) else format(int(value) if fmt == "d" else value, fmt)
        # dark cells (far from the neutral middle of the colormap) get white text
        shade = norm(value) if np.isfinite(value) else 0.0
        dark = abs(shade - 0.5) > 0.3 if center is not None else shade > 0.5
        ax.text(col, row, text, ha="center", va="center", fontsize=9,
                color="white" if dark else "black")
    ax.set_xticks(range(len(col_labels)), [_plain(c) for c in col_labels], rotation=30,
                  ha="right")
    ax.set_yticks(range(len(row_labels)), [_plain(r) for r in row_labels])
    ax.set_ylabel(_plain(axis_labels[0]), fontsize=10)
    ax.set_xlabel(_plain(axis_labels[1]), fontsize=10)
    return _finish(figure, ax, title)


def _matrix_colours(matrix: np.ndarray, center: float | None) -> tuple[Normalize, str]:
    """Sequential blues from 0 for counts; red-blue centred on ``center`` for a ratio."""
    finite = matrix[np.isfinite(matrix)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if center is None:
        return Normalize(vmin=min(low, 0.0), vmax=high if high > min(low, 0.0) else 1.0), "Blues"
    spread = max(abs(high - center), abs(center - low), 1e-6)
    return TwoSlopeNorm(vcenter=center, vmin=min(low, center - spread * 0.1),
                        vmax=max(high, center + spread * 0.1)), "RdBu_r"


def _load_gallery(run_dir: Path, relative: str, with_cams: bool = True) -> dict[str, np.ndarray]:
    """A gallery npz's arrays (``images``, and ``cams`` when ``with_cams``), read from the
    file ``relative`` to ``run_dir``."""
    root = Path(run_dir).resolve()
    path = (root / relative).resolve()
    what = "Grad-CAM examples" if with_cams else "Gallery images"
    if not path.is_relative_to(root):
        raise FigureUnavailable(f"{what} {relative!r} lie outside the run folder.")
    if not path.is_file():
        raise FigureUnavailable(f"{what} file {relative!r} is missing.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        images, cams = arrays["images"], arrays["cams"] if with_cams else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise FigureUnavailable(f"{what} file {relative!r} is unreadable "
                                f"({type(error).__name__}: {error}).") from None
    if images.ndim != 3 or len(images) == 0 or (with_cams and len(cams) != len(images)):
        shapes = f"images {images.shape}" + (f", cams {cams.shape}" if with_cams else "")
        raise FigureUnavailable(f"{what} file {relative!r} holds no usable images ({shapes}).")
    return arrays


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


def _finish(figure: Figure, ax: Any, title: str) -> tuple[bytes, float]:
    """The chart as PNG bytes and its width in inches."""
    ax.set_title(textwrap.fill(_plain(title), 60), fontsize=11)
    ax.tick_params(labelsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(figure), float(figure.get_figwidth())


def _jpeg(figure: Figure, tight: bool = False) -> bytes:
    """The figure as a JPEG; ``tight`` crops it to what is drawn (a panel fills its own)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="jpeg", bbox_inches="tight" if tight else None,
                   pil_kwargs={"quality": _JPEG_QUALITY, "optimize": True})
    return buffer.getvalue()


def _png(figure: Figure) -> bytes:
    """The figure as a palette PNG (charts have few colours; anti-aliasing survives)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(_PNG_COLOURS, method=Image.Quantize.MEDIANCUT).save(buffer, format="png",
                                                                         optimize=True)
    return buffer.getvalue()
