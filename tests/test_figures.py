"""reports.figures: every spec kind draws a PNG; bad specs become visible notes."""

from __future__ import annotations

import base64
import json
import os
import re

import numpy as np
import pytest

from reports.figures import (
    FigureUnavailable,
    RenderedFigure,
    bars_png,
    cam_panels,
    confusion_png,
    figure_data_uri,
    heatmap_png,
    hist_png,
    image_gallery_jpeg,
    lines_png,
    render_figure,
)
from tests.report_fixtures import write_gallery_npz

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SPECS = {
    "heatmap": {"kind": "heatmap", "title": "counts", "row_labels": ["covid", "normal"],
                "col_labels": ["a", "b", "c"], "values": [[1, 2, 3], [4, 5, 6]]},
    "confusion": {"kind": "confusion", "labels": ["covid", "normal"], "values": [[5, 1], [2, 7]]},
    "bars": {"kind": "bars", "title": "recall", "labels": ["a", "b"], "values": [0.5, None],
             "ci_low": [0.4, None], "ci_high": [0.6, None], "reference": 0.25},
    "lines": {"kind": "lines", "title": "curve", "x": [1, 2, 3], "series": {"s": [0.1, 0.2, 0.3]}},
    "hist": {"kind": "hist", "title": "h", "series": {"a": [0.1, 0.5, float("nan"), 0.7]},
             "reference": 0.5},
}


@pytest.mark.parametrize("draw, kind", [(heatmap_png, "heatmap"), (confusion_png, "confusion"),
                                        (bars_png, "bars"), (lines_png, "lines"),
                                        (hist_png, "hist")])
def test_each_kind_draws_a_png(draw, kind):
    png, width = draw(SPECS[kind])
    assert png.startswith(PNG_MAGIC) and width > 0


def test_cam_gallery_draws_one_jpeg_panel_per_image_with_and_without_masks(tmp_path):
    write_gallery_npz(tmp_path, "with.npz", n=3)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "without.npz", images=rng.integers(0, 255, (2, 32, 32), dtype=np.uint8),
             cams=rng.random((2, 4, 4)))
    for name, n in (("with.npz", 3), ("without.npz", 2)):
        panels, colorbar = cam_panels({"kind": "cam_gallery", "title": "g", "npz": name,
                                       "captions": ["covid -> normal: 40%"],
                                       "sources": ["hannover", "cohen"]}, tmp_path)
        assert len(panels) == n and colorbar.startswith("data:image/png;base64,")
        assert all(panel.data_uri.startswith("data:image/jpeg;base64,") for panel in panels)
        jpeg = base64.b64decode(panels[0].data_uri.split(",", 1)[1])
        assert jpeg.startswith(b"\xff\xd8") and len(jpeg) < 40_000
        assert [p.caption for p in panels] == ["covid -> normal: 40%"] + [""] * (n - 1)
        assert [p.source for p in panels[:2]] == ["hannover", "cohen"]
        assert all(panel.twin_uri is None for panel in panels)


def test_cam_gallery_shows_the_lung_masked_twin_where_the_npz_has_one(tmp_path):
    write_gallery_npz(tmp_path, "twin.npz", n=2, twin=True)
    panels, _ = cam_panels({"kind": "cam_gallery", "title": "g", "npz": "twin.npz"}, tmp_path)
    assert all(panel.twin_uri.startswith("data:image/jpeg;base64,") for panel in panels)
    assert panels[0].twin_uri != panels[0].data_uri


def test_bars_draw_the_threshold_only_on_a_metric_scale_chart(tmp_path):
    with_reference = render_figure(SPECS["bars"], tmp_path, threshold=0.45)
    plain = render_figure(SPECS["bars"], tmp_path)
    no_reference = render_figure({**SPECS["bars"], "reference": None}, tmp_path, threshold=0.45)
    assert with_reference.data_uri != plain.data_uri  # the threshold line was drawn
    assert no_reference.data_uri == render_figure({**SPECS["bars"], "reference": None},
                                                  tmp_path).data_uri
    # accuracies behind an accuracy drop: their chance line, but not the drop's threshold
    other_scale = {**SPECS["bars"], "metric_scale": False}
    assert render_figure(other_scale, tmp_path, threshold=0.45).data_uri == plain.data_uri


def test_a_reference_label_names_the_reference_line(tmp_path):
    plain = render_figure(SPECS["bars"], tmp_path).data_uri
    named = render_figure({**SPECS["bars"], "reference_label": "pooled skill"}, tmp_path)
    assert named.data_uri != plain


def test_enrichment_heatmap_is_centred_on_its_neutral_value():
    spec = {**SPECS["heatmap"], "values": [[0.5, 1.0, 2.0], [1.0, 1.0, 3.0]], "fmt": ".2f"}
    assert heatmap_png({**spec, "center": 1.0})[0] != heatmap_png(spec)[0]


def test_image_gallery_draws_images_in_columns_with_and_without_outlines(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32), dtype=np.uint8)
    masks = np.zeros((6, 32, 32), np.uint8)
    masks[:, 8:24, 8:24] = 1
    np.savez(tmp_path / "with.npz", images=images, masks=masks)
    np.savez(tmp_path / "without.npz", images=images)
    for name in ("with.npz", "without.npz"):
        jpeg, _ = image_gallery_jpeg({"kind": "image_gallery", "title": "g", "npz": name,
                                      "columns": 3, "captions": ["a", "b"]}, tmp_path)
        assert jpeg.startswith(b"\xff\xd8\xff")  # radiographs as a JPEG, not a PNG
    drawn = render_figure({"kind": "image_gallery", "title": "t", "npz": "nowhere.npz"},
                          tmp_path)
    assert drawn.data_uri is None and "'nowhere.npz' is missing" in drawn.note
    explained = render_figure({"kind": "image_gallery", "title": "g", "npz": "with.npz",
                               "caption": "How to read it."}, tmp_path)
    assert explained.data_uri.startswith("data:image/jpeg;base64,")
    assert explained.caption == "How to read it."
    assert render_figure({"kind": "image_gallery", "title": "g", "npz": "with.npz"},
                         tmp_path).caption == ""


def test_figure_data_uri_round_trips():
    uri = figure_data_uri(b"\x89PNGabc")
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == b"\x89PNGabc"


def test_render_figure_returns_data_uri(tmp_path):
    drawn = render_figure(SPECS["bars"], tmp_path)
    assert drawn.note is None and drawn.title == "recall"
    assert base64.b64decode(drawn.data_uri.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_dollar_signs_in_labels_are_drawn_literally(tmp_path):
    spec = {**SPECS["heatmap"], "title": "cost $x$ and $", "col_labels": ["$a", "b$", "$\\c$"]}
    assert render_figure(spec, tmp_path).data_uri is not None


@pytest.mark.parametrize("spec, note", [
    ({"kind": "pie", "title": "p"}, "Cannot draw figure of kind 'pie'"),
    ({"title": "no kind"}, "Cannot draw figure of kind None"),
    ({"kind": "heatmap", "title": "t", "row_labels": ["a"], "col_labels": ["b"],
      "values": [[1, 2]]}, r"malformed spec .*values shape \(1, 2\) does not match"),
    ({"kind": "bars", "title": "t", "values": [1]}, r"malformed spec \(KeyError\('labels'\)"),
])
def test_bad_specs_become_visible_notes(tmp_path, spec, note):
    drawn = render_figure(spec, tmp_path)
    assert isinstance(drawn, RenderedFigure) and drawn.data_uri is None
    assert drawn.note is not None
    assert re.search(note, drawn.note), drawn.note


def test_missing_corrupt_and_incomplete_npz_are_refused_with_the_reason(tmp_path):
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip file at all")
    np.savez(tmp_path / "no_cams.npz", images=np.zeros((2, 8, 8), np.uint8))
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 8, 8), np.uint8), cams=np.zeros((0, 2, 2)))
    for name, expected in [("corrupt.npz", "is unreadable"), ("no_cams.npz", "is unreadable"),
                           ("empty.npz", "holds no usable images"),
                           ("nowhere.npz", "'nowhere.npz' is missing"),
                           ("../outside.npz", "outside the run folder")]:
        with pytest.raises(FigureUnavailable, match=re.escape(expected)):
            cam_panels({"kind": "cam_gallery", "title": "t", "npz": name}, tmp_path)


def _counting(monkeypatch, name):
    """Replace ``reports.figures.<name>`` by a wrapper counting its calls."""
    from reports import figures

    calls, original = [], getattr(figures, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(figures, name, counted)
    return calls


def test_a_drawn_figure_is_reused_until_its_spec_or_artifact_changes(tmp_path, monkeypatch):
    from reports import figures

    drawn = []
    monkeypatch.setitem(figures._DRAWERS, "bars",
                        lambda spec, run_dir: drawn.append(spec) or bars_png(spec, run_dir))
    first = render_figure(SPECS["bars"], tmp_path)
    again = render_figure(SPECS["bars"], tmp_path)
    assert len(drawn) == 1 and again == first
    render_figure({**SPECS["bars"], "values": [0.6, None]}, tmp_path)
    assert len(drawn) == 2

    panels = _counting(monkeypatch, "_panel_jpeg")
    spec = {"kind": "cam_gallery", "title": "g", "npz": "g.npz"}
    write_gallery_npz(tmp_path, "g.npz", n=3)
    assert cam_panels(spec, tmp_path) == cam_panels(spec, tmp_path)
    assert len(panels) == 3  # drawn once
    write_gallery_npz(tmp_path, "g.npz", n=3, seed=1)  # same spec, other maps
    cam_panels(spec, tmp_path)
    assert len(panels) == 6


def test_the_figure_memo_keeps_only_what_the_last_report_used(tmp_path):
    import time

    from reports.figures import FIGURE_MEMO, prune_figure_memo

    render_figure(SPECS["bars"], tmp_path)
    render_figure(SPECS["hist"], tmp_path)
    memo = tmp_path / FIGURE_MEMO
    for entry in memo.iterdir():  # both drawn by an earlier report
        old = time.time() - 60
        os.utime(entry, (old, old))
    since = time.time()
    render_figure(SPECS["bars"], tmp_path)  # this report uses the bars again
    prune_figure_memo(tmp_path, since)
    left = list(memo.iterdir())
    assert len(left) == 1 and json.loads(left[0].read_text())["data_uri"] == \
        render_figure(SPECS["bars"], tmp_path).data_uri


def test_figures_are_drawn_where_the_memo_cannot_be_written_or_is_damaged(tmp_path):
    from reports.figures import FIGURE_MEMO

    (tmp_path / FIGURE_MEMO).write_text("a file where the memo folder would be")
    assert render_figure(SPECS["bars"], tmp_path).data_uri.startswith("data:image/png")
    other = tmp_path / "other"
    other.mkdir()
    first = render_figure(SPECS["bars"], other)
    for entry in (other / FIGURE_MEMO).iterdir():
        entry.write_text("{damaged")
    assert render_figure(SPECS["bars"], other) == first
