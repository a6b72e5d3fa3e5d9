"""``attention.localized``'s engine: is one class's Grad-CAM piled up on one spot of the border?

``attention.border`` averages the whole border band, so a marker that fills one corner
cell of a 7x7 map is diluted by the other 23 band cells (on the demo: the planted "R" is
hot in half the gallery, the band reads about 1). This check reads the border cell by cell
of a **class x zone** table: the map is cut at its own resolution (no interpolation) into
four corners, four edges and the centre (``probes.regions.ZONES``; the band is
``probes.border_fraction`` of the side, at least one cell), and per image each zone's
**enrichment** is its share of the positive CAM mass over its share of the cells.

- Headline, larger = more shortcut: the largest mean enrichment over the cells (class with
  at least ``MIN_CLASS_IMAGES`` usable images) x (the eight border zones; the centre, where
  the lungs are, is not a shortcut), with a bootstrap CI over that class's images.
- p: per cell, does this class's attention go to the zone more than the other classes'
  does? A one-sided Mann-Whitney U test (scipy) of the class's per-image enrichment of
  the zone against the other classes' images; Holm over all cells tested (statsmodels),
  and the headline cell's Holm-adjusted p is the check's. A marker tied to a class's
  source is found so, while attention every class gives the zone (the body outline along
  an edge, which Grad-CAM lights on clean controls) is not; ranks make one image with a
  hot corner unable to fire the check alone, however large its enrichment. (A signed-rank
  test of the class's enrichment against 1, a random CAM's mean, was tried first: on the
  demo it gave the planted "R" (opacity, top-right, 2.26) Holm p 0.036 over the cells,
  0.18 after the gate's Holm over the checks, and a clean control's left edge 0.004.)
  The threshold, not p, keeps class-specific signs near the border from firing: a clean
  phantom's basal effusion next to a lower corner measures up to 1.91 with p below 1e-6.
- The pointing game per cell: how many of the class's maps have their hottest cell in the
  zone (Wilson CI), against the zone's share of the cells, where a random map's peak
  lands. It is reported, not tested: an exact binomial test of it was tried as the p-value
  and missed a marker that straddles the band's inner edge (enrichment 6.6 in the corner,
  every peak in the cell beside it, which belongs to the centre).
- Per class, when lung masks exist: the share of CAM peaks outside the lungs (upsampled
  maps, as ``attention.outside_lung`` measures them), with its Wilson CI.
- The lung-masked twin of the same backbone, when present, is measured on the headline
  cell's images (paired signed-rank test): it cannot see a marker outside the lungs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu
from statsmodels.stats.multitest import multipletests

from models.explanations import Explanations
from probes.attention import (
    MIN_CLASS_IMAGES,
    cam_gallery,
    explain_models,
    outside_lung_regions,
    twin_key,
)
from probes.base import CheckResult, CheckSpec, ProbeContext
from probes.regions import (
    BORDER_ZONES,
    ZONES,
    measure,
    peak_zone,
    zone_band_cells,
    zone_cell_shares,
    zone_enrichment,
)
from probes.stats import bootstrap_ci, wilcoxon_signed_rank, wilson_ci


def run_localized(context: ProbeContext, spec: CheckSpec) -> CheckResult:
    """The most enriched class x border-zone cell of the audited model's Grad-CAMs."""
    explained = explain_models(context, spec)
    if isinstance(explained, CheckResult):
        return explained
    rows, cams = explained
    audited = cams[context.audited]
    width = zone_band_cells(context.params.border_fraction, audited.resolution)
    zones = zone_enrichment(audited.cams["predicted"], width)
    peaks = peak_zone(audited.cams["predicted"], width)
    labels = context.dataset.labels[rows]
    cells = _cells(context, zones, peaks, labels, audited.resolution, width)
    if not cells:
        return spec.not_run(f"no class has {MIN_CLASS_IMAGES} test images whose Grad-CAM has "
                            "positive mass")
    adjusted = multipletests([cell["p"] for cell in cells], method="holm")[1]
    for cell, p_holm in zip(cells, adjusted, strict=True):
        cell["p_holm"] = float(p_holm)
    worst = max(cells, key=lambda cell: cell["enrichment"])
    zone = ZONES.index(worst["zone"])
    members = (labels == context.dataset.classes.index(worst["class"])) & np.isfinite(zones[:, 0])
    ci = bootstrap_ci(np.mean, zones[members, zone], n_bootstrap=context.params.n_bootstrap,
                      seed=context.seed)
    outside = _peaks_outside_lungs(context, rows, audited, labels)
    details = {
        "model": context.audited, "worst_class": worst["class"], "worst_zone": worst["zone"],
        "cells_tested": len(cells), "p_uncorrected": worst["p"], "zone_band_cells": width,
        "cam_resolution": audited.resolution, "n_images": len(rows),
        "pointing_in_zone": {name: worst[name] for name in (
            "peak_hits", "n", "peak_rate", "peak_ci_low", "peak_ci_high", "cell_share")},
        "peaks_outside_lungs": next((row for row in outside if row["class"] == worst["class"]),
                                    None),  # the headline class's; every class's in tables
        "null": "the class's per-image zone enrichment vs the other classes' images, "
                "one-sided Mann-Whitney U, Holm over the class x border-zone cells tested",
        "lung_masked_comparison": _masked_comparison(context, cams, zones[:, zone], members,
                                                     width, worst),
    }
    gallery, arrays = cam_gallery(
        context, rows, audited, np.where(members, zones[:, zone], np.nan),
        lambda index: f"{worst['zone']} enrichment {zones[index, zone]:.1f}",
        f"Grad-CAM of {context.audited}, {worst['class']} images: least (first) to most "
        f"(last) {worst['zone']} enrichment", cams.get(twin_key(context)))
    return spec.result(
        metric_name="largest zone enrichment", metric=worst["enrichment"], ci=ci,
        p_value=worst["p_holm"], summary=_summary(context.audited, worst, ci, len(cells)),
        details=details,
        tables={"zones_by_class": _zone_table(context, zones, labels), "cells": cells,
                **({"peaks_outside_lungs": outside} if outside else {})},
        figures={"zones_by_class": _heatmap(context, zones, labels, width), **gallery},
        artifacts=arrays,
        notes=[f"Grad-CAM at {audited.resolution}x{audited.resolution} cells, zones read at "
               f"that resolution with a {width}-cell band."],
    )


def _cells(context: ProbeContext, zones: np.ndarray, peaks: np.ndarray, labels: np.ndarray,
           resolution: int, width: int) -> list[dict[str, Any]]:
    """One row per (class with enough usable images) x border zone: enrichment, pointing
    game (peaks in the zone, Wilson CI), the other classes' enrichment and the uncorrected
    p that the class's is larger."""
    shares = zone_cell_shares(resolution, resolution, width)
    cells = []
    finite = np.isfinite(zones[:, 0])
    for index, name in enumerate(context.dataset.classes):
        usable, rest = finite & (labels == index), finite & (labels != index)
        n = int(usable.sum())
        if n < MIN_CLASS_IMAGES or not rest.any():
            continue
        for zone_name in BORDER_ZONES:
            zone = ZONES.index(zone_name)
            hits = int((peaks[usable] == zone).sum())
            ci_low, ci_high = wilson_ci(hits, n)
            cells.append({
                "class": name, "zone": zone_name, "n": n,
                "enrichment": float(zones[usable, zone].mean()),
                "cell_share": float(shares[zone]), "peak_hits": hits, "peak_rate": hits / n,
                "peak_ci_low": ci_low, "peak_ci_high": ci_high,
                "rest_enrichment": float(zones[rest, zone].mean()),
                "p": _greater_than_rest(zones[usable, zone], zones[rest, zone]),
            })
    return cells


def _greater_than_rest(values: np.ndarray, rest: np.ndarray) -> float:
    """One-sided Mann-Whitney U p that ``values`` tend to exceed ``rest`` (1.0 when every
    value is the same)."""
    if np.ptp(np.concatenate([values, rest])) == 0:
        return 1.0
    return float(mannwhitneyu(values, rest, alternative="greater").pvalue)


def _peaks_outside_lungs(context: ProbeContext, rows: np.ndarray, cams: Explanations,
                         labels: np.ndarray) -> list[dict[str, Any]]:
    """Per class, how many CAM peaks lie outside the lungs (Wilson CI); empty without masks."""
    dataset = context.dataset
    if dataset.masks is None:
        return []
    regions = outside_lung_regions(context, rows)
    measured = measure(cams.cams["predicted"], regions.masks, dataset.image_size, context.seed)
    ok = regions.usable & np.isfinite(measured.share)
    table = []
    for index, name in enumerate(dataset.classes):
        members = ok & (labels == index)
        hits, n = int(measured.peak_in_region[members].sum()), int(members.sum())
        if n:
            ci_low, ci_high = wilson_ci(hits, n)
            table.append({"class": name, "n": n, "peaks_outside": hits, "rate": hits / n,
                          "ci_low": ci_low, "ci_high": ci_high,
                          "outside_area_share": float(regions.area[members].mean())})
    return table


def _masked_comparison(context: ProbeContext, cams: dict[str, Explanations], raw: np.ndarray,
                       members: np.ndarray, width: int, worst: dict[str, Any]
                       ) -> dict[str, Any] | None:
    """The lung-masked twin's enrichment of the headline cell (``raw``: the audited model's,
    per image) on the same images, and the paired test that the raw model's is larger."""
    twin = twin_key(context)
    if twin is None:
        return None
    zone = ZONES.index(worst["zone"])
    masked = zone_enrichment(cams[twin].cams["predicted"], width)[:, zone]
    ok = members & np.isfinite(raw) & np.isfinite(masked)
    comparison = {"model": twin, "class": worst["class"], "zone": worst["zone"],
                  "n": int(ok.sum())}
    if ok.sum() < 2:
        return comparison
    return {**comparison, "raw_enrichment": float(raw[ok].mean()),
            "masked_enrichment": float(masked[ok].mean()),
            "p_raw_greater": wilcoxon_signed_rank(raw[ok], masked[ok])}


def _zone_table(context: ProbeContext, zones: np.ndarray, labels: np.ndarray
                ) -> list[dict[str, Any]]:
    """Per class with any usable image, the mean enrichment of every zone (centre included)."""
    return [{"class": name, **dict(zip(ZONES, np.nanmean(zones[members], axis=0).tolist(),
                                       strict=True))}
            for name, members in _classes_with_maps(context, zones, labels)]


def _heatmap(context: ProbeContext, zones: np.ndarray, labels: np.ndarray, width: int
             ) -> dict[str, Any]:
    present = _classes_with_maps(context, zones, labels)
    return {"kind": "heatmap", "title": f"Grad-CAM enrichment by zone ({width}-cell band)",
            "row_labels": [name for name, _ in present], "col_labels": list(ZONES),
            "values": [np.nanmean(zones[members], axis=0).tolist() for _, members in present],
            "fmt": ".2f", "center": 1.0, "colorbar_label": "enrichment (1 = spread like the area)"}


def _classes_with_maps(context: ProbeContext, zones: np.ndarray, labels: np.ndarray
                       ) -> list[tuple[str, np.ndarray]]:
    """(class, its rows) for every class with at least one map with positive mass."""
    present = []
    for index, name in enumerate(context.dataset.classes):
        members = labels == index
        if np.isfinite(zones[members, 0]).any():
            present.append((name, members))
    return present


def _summary(model: str, worst: dict[str, Any], ci: tuple[float, float], n_cells: int) -> str:
    return (f"{model}, {worst['class']} images, {worst['zone']} zone ({worst['cell_share']:.0%} "
            f"of the map): enrichment {worst['enrichment']:.2f} (95% CI {ci[0]:.2f}-{ci[1]:.2f}; "
            f"{worst['n']} images); the Grad-CAM peak lies there on {worst['peak_hits']} of "
            f"{worst['n']} ({worst['peak_rate']:.0%}, 95% CI {worst['peak_ci_low']:.0%}-"
            f"{worst['peak_ci_high']:.0%}; a random map's peak would land there on "
            f"{worst['cell_share']:.0%}); the other classes' images {worst['rest_enrichment']:.2f}; "
            f"the most enriched of {n_cells} class x border-zone cells (Mann-Whitney U vs the "
            f"other classes, Holm p {worst['p_holm']:.2g}).")
