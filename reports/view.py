"""Turns an ``AuditResult`` into what the HTML template shows: formatted text and drawn figures.

Reports never compute statistics: every number comes from the result as the probes and the
models layer wrote it. This module only picks, formats and lays out; missing pieces become
"not available" rather than errors, because a reviewer must get a report even from a
partial run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.core.result import AuditResult
from probes.base import CheckResult, CheckSpec, Status
from probes.registry import specs
from reports.cards import Card, check_card, metric_text, reconciling_notes
from reports.figures import (
    FigureUnavailable,
    GalleryPanel,
    RenderedFigure,
    cam_panels,
    render_figure,
)
from reports.models_view import ModelView, bars_spec, model_overview_figures, model_views


@dataclass(frozen=True)
class CheckView:
    """One check as the template shows it."""

    check: CheckResult
    status: str
    anchor: str
    question: str  # the spec's reviewer question ("" for a check no longer registered)
    metric_meaning: str  # the spec's metric meaning (likewise)
    metric: str
    card: Card
    figures: list[RenderedFigure] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)


@dataclass(frozen=True)
class Gallery:
    """One Grad-CAM gallery of a check: its panels, or why they cannot be shown."""

    title: str
    panels: list[GalleryPanel]
    colorbar: str | None  # data URI of the shared colour bar
    note: str | None = None


@dataclass(frozen=True)
class ReportView:
    """Everything the template needs, already formatted."""

    result: AuditResult
    verdict: str
    blocking: list[CheckView]
    """The checks the gate marked blocking; ``result.absent_required`` names the missing ones."""
    checks: list[CheckView]
    data_figures: list[RenderedFigure]
    models: list[ModelView]
    model_figures: list[RenderedFigure]
    data_extra: dict[str, Any]
    segmentation_figures: list[RenderedFigure]
    status_counts: dict[str, int]
    """Status -> number of checks, in ``Status`` order, only statuses that occur."""
    reconciling: list[str]
    """Notes for checks that seem to disagree (``reports.cards.reconciling_notes``)."""


def build_view(result: AuditResult, run_dir: Path) -> ReportView:
    """Format ``result`` for the template, drawing every figure.

    Args:
        result: The finished (ideally gate-judged) audit.
        run_dir: The run folder; figure specs' npz paths are relative to it.
    """
    known = {spec.id: spec for spec in specs()}
    alpha = result.policy.get("alpha")
    probes_config = (result.provenance.get("config") or {}).get("probes") or {}
    checks = [_check_view(check, known.get(check.check_id), run_dir, alpha,
                          probes_config.get("n_permutations")) for check in result.checks]
    return ReportView(
        result=result,
        verdict=result.verdict,
        blocking=[view for view in checks if view.check.blocking],
        checks=checks,
        data_figures=_data_figures(result.data, run_dir, checks),
        models=model_views(result.models, run_dir, classes=result.data.get("classes")),
        model_figures=model_overview_figures(result.models, run_dir),
        data_extra={k: v for k, v in result.data.items() if k not in _DATA_SHOWN_ABOVE},
        segmentation_figures=_segmentation_figures(result.segmentation, run_dir),
        status_counts={str(status): count for status in Status
                       if (count := sum(view.check.status == status for view in checks))},
        reconciling=reconciling_notes(result.checks),
    )


def check_anchor(check_id: str) -> str:
    """The HTML id of a check's section, e.g. ``check-data-confounding``."""
    return "check-" + "".join(c if c.isalnum() else "-" for c in check_id)


def _check_view(check: CheckResult, spec: CheckSpec | None, run_dir: Path,
                alpha: float | None, n_permutations: int | None) -> CheckView:
    figures, galleries = [], []
    for figure in check.figures.values():
        if figure.get("kind") == "cam_gallery":
            galleries.append(_gallery(figure, run_dir))
        else:  # a metric-scale chart shows the gate's threshold next to its chance line
            figures.append(render_figure(figure, run_dir, threshold=check.threshold))
    return CheckView(
        check=check,
        status=str(check.status),
        anchor=check_anchor(check.check_id),
        question=spec.question if spec else "",
        metric_meaning=spec.metric if spec else "",
        metric=metric_text(check),
        card=check_card(check, spec, alpha, n_permutations),
        figures=figures,
        galleries=galleries,
    )


def _gallery(spec: dict[str, Any], run_dir: Path) -> Gallery:
    title = str(spec.get("title", ""))
    try:
        panels, colorbar = cam_panels(spec, run_dir)
    except FigureUnavailable as missing:
        return Gallery(title, [], None, note=str(missing))
    return Gallery(title, panels, colorbar)


_DATA_SHOWN_ABOVE = {"label_source_counts", "quarantined"}


def _data_figures(data: dict[str, Any], run_dir: Path,
                  checks: list[CheckView]) -> list[RenderedFigure]:
    counts = data.get("label_source_counts")
    confounding = [view for view in checks if view.check.check_id == "data.confounding"
                   and view.figures]
    if not isinstance(counts, dict) or not counts or confounding:
        return []  # the confounding check's card draws the same matrix
    labels = list(counts)
    sources = sorted({source for row in counts.values() for source in row})
    spec = {"kind": "heatmap", "title": "Images per label and source", "fmt": "d",
            "row_labels": labels, "col_labels": sources, "ylabel": "label", "xlabel": "source",
            "values": [[counts[label].get(source, 0) for source in sources] for label in labels]}
    return [render_figure(spec, run_dir)]


def _segmentation_figures(segmentation: dict[str, Any] | None,
                          run_dir: Path) -> list[RenderedFigure]:
    """Dice per source with CIs, from ``segmentation["quality"]["per_source"]`` (as the
    U-Net writes it: ``{source: {"n", "dice", "iou"}}``)."""
    quality = (segmentation or {}).get("quality")
    per_source = quality.get("per_source") if isinstance(quality, dict) else None
    if not isinstance(per_source, dict):
        return []
    dice = {f"{source}\n(n={row.get('n', '?')})": row.get("dice")
            for source, row in per_source.items() if isinstance(row, dict)}
    spec = bars_spec("Lung mask Dice per source (the segmenter's held-out images)", dice, ylabel="Dice")
    return [render_figure(spec, run_dir)] if spec else []
