"""The attention checks' engine: where in the image does the audited model find its evidence?

The checks themselves (spec and ``run``) are ``probes.checks.attention_border`` and
``probes.checks.attention_outside_lung``; both call ``run_attention``. The band's average
dilutes a marker that fills one corner: ``attention.localized`` (``probes.zone_attention``)
reads the border zone by zone, on the same CAMs (``explain_models``) and gallery
(``cam_gallery``).

Both checks take raw Grad-CAMs (``context.explanations``, computed by ``models.gradcam``;
never min-max standardised, which would distort mass ratios) of up to
``params.cam_max_images`` test images, for the predicted and for the true class, upsample
them bilinearly to the image side and measure the share of the positive CAM mass that
falls in a region where no disease can be seen (``probes.regions``):

- ``attention.border``: a band of ``params.border_fraction`` of the side along every edge,
  widened to at least one cell of the coarsest CAM (7x7 for MobileNetV2 at 224 px: a band
  thinner than a cell cannot be told apart from the cell next to it);
- ``attention.outside_lung``: everything outside the lung mask ("relevance mass accuracy"
  in Quantus' terms, turned around), plus the pointing game (is the CAM peak inside the
  lungs?).

Headline metric, larger = more shortcut: **enrichment** = the mean over images of
(region's share of CAM mass / region's share of image area): 1 when attention is spread
like the area, above 1 when it piles up in the region. It is reported per true class and
the headline is the **most enriched class** (at least ``MIN_CLASS_IMAGES`` usable images),
because a shortcut is usually tied to one class's source (a marker on the COVID images
only): averaged over all images, one class's shortcut is diluted by the others. The
all-images value is in ``details["all_images"]``.

The null for the p-value is a **random CAM**: the same image's map with its cells shuffled
(``RANDOM_CAM_DRAWS`` draws), upsampled and measured the same way. It keeps each map's
total mass, peakedness and the interpolation's edge effects, so only *where* the mass sits
differs; the bare area share would ignore those. p is a one-sided Wilcoxon signed-rank
test of the per-image region share vs its random-CAM share within the headline class,
Bonferroni-corrected for the number of classes tested. The lung-masked model of the
same backbone is compared on the headline class's images with a paired signed-rank test
(same images, so a paired test; Mann-Whitney would ignore the pairing).

Both checks share one CAM computation per model: the pipeline caches the service's
results, so the second check and reruns reuse it. The policy's thresholds come from the
measurements of ``benchmarks/attention_thresholds.py`` (Grad-CAM's coarse cells blur
attention: lung-focused models measure about 0.5-0.9, so thresholds sit just above 1 and
the p-value guards against false alarms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.explanations import CAM_TARGETS, Explanations
from models.inputs import border_band
from probes.base import CheckResult, CheckSpec, ProbeContext
from probes.regions import (
    RANDOM_CAM_DRAWS,
    Measurement,
    cam_grid_fits,
    measure,
)
from probes.stats import bootstrap_ci, wilcoxon_signed_rank, wilson_ci

GALLERY_PER_END = 4  # most focused and worst images in the gallery
MIN_CLASS_IMAGES = 5  # a class needs this many usable images to enter the headline


@dataclass(frozen=True)
class Regions:
    """The region whose CAM mass is measured, per selected row."""

    description: str  # completes "x% of the CAM mass lies ..."
    masks: np.ndarray  # (S, S) shared or (n, S, S) per image, True inside the region
    area: np.ndarray  # (n,) region's share of the image area
    usable: np.ndarray  # (n,) rows where the region is defined
    excluded: dict[str, int]  # reason -> rows not usable


def cam_rows(test_rows: np.ndarray, labels: np.ndarray, max_images: int, seed: int) -> np.ndarray:
    """Up to ``max_images`` of ``test_rows``, class proportions kept, deterministic by ``seed``.

    Rows are shuffled within each class and taken in order of their rank within the class
    divided by the class size, so every class contributes in proportion to its size.
    """
    test_rows = np.asarray(test_rows)
    if len(test_rows) <= max_images:
        return np.sort(test_rows)
    rng = np.random.default_rng(seed)
    row_labels = np.asarray(labels)[test_rows]
    quantile = np.empty(len(test_rows))
    for label in np.unique(row_labels):
        members = rng.permutation(np.flatnonzero(row_labels == label))
        quantile[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.sort(test_rows[np.argsort(quantile, kind="stable")[:max_images]])


def summarize(
    measurement: Measurement, regions: Regions, subset: np.ndarray, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Enrichment, its bootstrap CI, random-CAM enrichment and p over ``subset`` rows."""
    ok = subset & regions.usable & np.isfinite(measurement.share)
    n = int(ok.sum())
    if n == 0:
        return {"n": 0}
    ratio = measurement.share[ok] / regions.area[ok]
    ci = bootstrap_ci(np.mean, ratio, n_bootstrap=n_bootstrap, seed=seed) if n > 1 else (np.nan,) * 2
    return {
        "n": n,
        "area_share": float(regions.area[ok].mean()),
        "mass_share": float(measurement.share[ok].mean()),
        "enrichment": float(ratio.mean()),
        "ci_low": ci[0],
        "ci_high": ci[1],
        "random_enrichment": float((measurement.random_share[ok] / regions.area[ok]).mean()),
        "p_vs_random": wilcoxon_signed_rank(measurement.share[ok], measurement.random_share[ok])
        if n > 1 else np.nan,
        "peak_in_region": float(measurement.peak_in_region[ok].mean()),
    }


def border_regions(n: int, size: int, border_fraction: float, cam_resolution: int) -> Regions:
    """The border band, at least one CAM cell (``1 / cam_resolution`` of the side) wide."""
    fraction = max(border_fraction, 1.0 / cam_resolution)
    band = border_band(size, fraction)
    return Regions(
        description=f"in the {fraction:.0%} border band",
        masks=band,
        area=np.full(n, band.mean()),
        usable=np.ones(n, dtype=bool),
        excluded={},
    )


def outside_lung_regions(context: ProbeContext, rows: np.ndarray) -> Regions:
    """Everything outside each row's lung mask; rows without a real mask are not usable."""
    dataset = context.dataset
    masks = np.asarray(dataset.masks[rows]) > 0
    has_mask = np.ones(len(rows), bool) if dataset.has_mask is None else dataset.has_mask[rows]
    area = 1.0 - masks.mean(axis=(1, 2))
    degenerate = has_mask & ((area <= 0) | (area >= 1))
    return Regions(
        description="outside the lungs",
        masks=~masks,
        area=area,
        usable=has_mask & ~degenerate,
        excluded={"no lung mask": int((~has_mask).sum()),
                  "empty or full lung mask": int(degenerate.sum())},
    )


def explain_models(context: ProbeContext, spec: CheckSpec
                   ) -> tuple[np.ndarray, dict[str, Explanations]] | CheckResult:
    """The CAM rows (``cam_rows``) and every model's Grad-CAMs of them, the audited model
    first; or ``spec``'s ``not_run`` result when there is no Grad-CAM service or a model's
    grid is too coarse for a border band and an interior."""
    if context.explanations is None:
        return spec.not_run("no Grad-CAM service in the probe context (ProbeContext.explanations)")
    rows = cam_rows(context.splits.test, context.dataset.labels,
                    context.params.cam_max_images, context.seed)
    keys = [context.audited] + sorted(set(context.models) - {context.audited})
    cams = {key: context.explanations(key, rows) for key in keys}
    coarse = {key: c.resolution for key, c in cams.items()
              if not cam_grid_fits(c.resolution, context.params.border_fraction)}
    if coarse:
        # A run's own backbones are refused at start (audit.pipeline.check_cam_grid); an
        # external model's grid is known only once its CAMs exist.
        grids = ", ".join(f"{key} {side}x{side}" for key, side in coarse.items())
        return spec.not_run(
            f"Grad-CAM too coarse to tell a border band from an interior ({grids} cells at "
            f"{context.dataset.image_size} px; probes.border_fraction "
            f"{context.params.border_fraction:g}): audit the model at a larger input size")
    return rows, cams


def run_attention(
    context: ProbeContext,
    spec: CheckSpec,
    metric_name: str,
    regions_of: Callable[[ProbeContext, np.ndarray, int], Regions],
    extras_of: Callable[..., dict[str, dict[str, Any]]] | None = None,
) -> CheckResult:
    """The run both attention checks share; they differ in the region and the extras.

    Args:
        context: The probe context.
        spec: The check's spec (id, title and explanation of the result).
        metric_name: The result's metric name, e.g. ``"border enrichment"``.
        regions_of: ``(context, rows, cam_resolution) -> Regions``, the measured region.
        extras_of: ``(context, rows, cams, measurement, regions) -> {"details", "tables",
            "figures"}``, check-specific additions for the audited model. Defaults to none.
    """
    explained = explain_models(context, spec)
    if isinstance(explained, CheckResult):
        return explained
    rows, cams = explained
    keys = list(cams)
    regions = regions_of(context, rows, min(c.resolution for c in cams.values()))
    size = context.dataset.image_size
    measured = {(key, target): measure(cams[key].cams[target], regions.masks, size, context.seed)
                for key in keys for target in CAM_TARGETS}
    return _result(context, spec, metric_name, extras_of, rows, cams, regions, measured)


def _result(context, spec, metric_name, extras_of, rows, cams, regions, measured) -> CheckResult:
    audited = context.audited
    labels = context.dataset.labels[rows]
    everyone = np.ones(len(rows), dtype=bool)

    def stats(key, target, subset=everyone):
        return summarize(measured[key, target], regions, subset, context.params.n_bootstrap,
                         context.seed)

    by_model = [{"model": key, "input_mode": context.models[key].input_mode, "target": target,
                 "cam_resolution": f"{cams[key].resolution}x{cams[key].resolution}",
                 **stats(key, target)} for key, target in measured]
    by_class = [{"model": key, "target": target, "class": name,
                 **stats(key, target, labels == index)}
                for key, target in measured
                for index, name in enumerate(context.dataset.classes)]
    tested = [row for row in by_class if row["model"] == audited
              and row["target"] == "predicted" and row["n"] >= MIN_CLASS_IMAGES]
    if not tested:
        return CheckResult.not_run(
            spec.id, spec.title,
            f"no class has {MIN_CLASS_IMAGES} test images with a usable region and CAM mass "
            f"(excluded: {regions.excluded})")
    worst = max(tested, key=lambda row: row["enrichment"])
    p_value = min(1.0, worst["p_vs_random"] * len(tested))  # Bonferroni over the classes
    overall = by_model[0]  # audited model, predicted-class CAMs, all images
    no_mass = int((regions.usable & ~np.isfinite(measured[audited, "predicted"].share)).sum())
    details = {
        "model": audited,
        "worst_class": worst["class"],
        "classes_tested": len(tested),
        "p_uncorrected": worst["p_vs_random"],
        "all_images": {name: overall[name] for name in (
            "n", "enrichment", "ci_low", "ci_high", "random_enrichment", "p_vs_random",
            "area_share", "mass_share", "peak_in_region")},
        "n_images": len(rows),
        "cam_resolution": {key: cams[key].resolution for key in cams},
        "excluded_rows": {**regions.excluded, "no positive CAM mass": no_mass},
        "null": f"per-image cell-shuffled CAM ({RANDOM_CAM_DRAWS} draws), one-sided Wilcoxon "
                "signed-rank, Bonferroni over the classes tested",
        "lung_masked_comparison": _masked_comparison(
            context, measured, regions, labels == context.dataset.classes.index(worst["class"]),
            worst["class"]),
    }
    extras = (extras_of(context, rows, cams[audited], measured[audited, "predicted"], regions)
              if extras_of else {"details": {}, "tables": {}, "figures": {}})
    shown, twin = measured[audited, "predicted"], twin_key(context)
    gallery, gallery_arrays = cam_gallery(
        context, rows, cams[audited],
        np.where(regions.usable, shown.share / regions.area, np.nan),
        lambda index: f"{shown.share[index]:.0%} {regions.description}",
        f"Grad-CAM of {audited}: most focused (first) to worst (last)",
        cams.get(twin) if twin else None)
    return CheckResult(
        check_id=spec.id, title=spec.title, metric_name=metric_name,
        metric=worst["enrichment"], ci=(worst["ci_low"], worst["ci_high"]), p_value=p_value,
        summary=(f"{audited}, {worst['class']} images (the most enriched class): "
                 f"{worst['mass_share']:.0%} of the Grad-CAM mass lies {regions.description}, "
                 f"which covers {worst['area_share']:.0%} of the image: enrichment "
                 f"{worst['enrichment']:.2f} (95% CI {worst['ci_low']:.2f}-"
                 f"{worst['ci_high']:.2f}; random CAM {worst['random_enrichment']:.2f}; "
                 f"{worst['n']} images; all classes {overall['enrichment']:.2f})."),
        explanation=spec.explanation,
        details={**details, **extras["details"]},
        tables={"by_model": by_model, "by_class": by_class, **extras["tables"]},
        figures={"enrichment_by_model": _bars(by_model, metric_name),
                 **gallery, **extras["figures"]},
        artifacts=gallery_arrays,
        notes=[f"Grad-CAM at {cams[audited].resolution}x{cams[audited].resolution} cells, "
               f"raw maps upsampled bilinearly to {context.dataset.image_size} px."],
    )


def _masked_comparison(context: ProbeContext, measured, regions: Regions, subset: np.ndarray,
                       class_name: str) -> dict[str, Any] | None:
    """Paired test, on the ``subset`` rows (the headline class's images), that the raw model's
    enrichment exceeds its lung-masked twin's."""
    twin = twin_key(context)
    if twin is None:
        return None
    raw, masked = measured[context.audited, "predicted"], measured[twin, "predicted"]
    ok = subset & regions.usable & np.isfinite(raw.share) & np.isfinite(masked.share)
    if ok.sum() < 2:
        return {"model": twin, "class": class_name, "n": int(ok.sum())}
    raw_ratio, masked_ratio = raw.share[ok] / regions.area[ok], masked.share[ok] / regions.area[ok]
    return {"model": twin, "class": class_name, "n": int(ok.sum()),
            "raw_enrichment": float(raw_ratio.mean()),
            "masked_enrichment": float(masked_ratio.mean()),
            "p_raw_greater": wilcoxon_signed_rank(raw_ratio, masked_ratio)}


def twin_key(context: ProbeContext) -> str | None:
    """The audited model's lung-masked twin (same backbone) in ``context.models``, if any."""
    twin = f"{context.models[context.audited].backbone}/lung_masked"
    return twin if twin != context.audited and twin in context.models else None


def _bars(by_model: list[dict[str, Any]], metric_name: str) -> dict[str, Any]:
    rows = [row for row in by_model if row["target"] == "predicted" and row["n"] > 0]
    return {"kind": "bars", "title": f"{metric_name} per model (predicted-class CAMs)",
            "labels": [row["model"] for row in rows],
            "values": [row["enrichment"] for row in rows],
            "ci_low": [row["ci_low"] for row in rows], "ci_high": [row["ci_high"] for row in rows],
            "reference": 1.0, "ylabel": "enrichment (1 = spread like the area)"}


def cam_gallery(context: ProbeContext, rows: np.ndarray, cams: Explanations,
                scores: np.ndarray, describe: Callable[[int], str], title: str,
                twin: Explanations | None = None,
                ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """The ``GALLERY_PER_END`` lowest- and highest-scoring images of the audited model, in
    ascending ``scores`` (NaN: not shown): the ``"gallery"`` figure spec and the artifact of
    the same name it draws (both empty when no score is finite). ``describe(i)`` ends the
    caption of row ``i``. With the lung-masked ``twin``'s maps of the same rows, the
    artifact also holds them (``twin_cams``), for a side-by-side view. Defaults to None."""
    ok = np.flatnonzero(np.isfinite(scores))
    if len(ok) == 0:
        return {}, {}
    order = ok[np.argsort(scores[ok], kind="stable")]
    chosen = np.unique(np.concatenate([order[:GALLERY_PER_END], order[-GALLERY_PER_END:]]))
    chosen = chosen[np.argsort(scores[chosen], kind="stable")]
    dataset, classes = context.dataset, context.dataset.classes
    arrays = {"images": np.asarray(dataset.images[rows[chosen]]),
              "cams": cams.cams["predicted"][chosen]}
    if dataset.masks is not None:
        arrays["masks"] = np.asarray(dataset.masks[rows[chosen]])
        if twin is not None:
            arrays["twin_cams"] = twin.cams["predicted"][chosen]
    labels = dataset.labels[rows[chosen]]
    captions = [f"{classes[label]} -> {classes[pred]}: {describe(index)}"
                for label, pred, index in zip(labels, cams.predicted_class[chosen], chosen,
                                              strict=True)]
    spec = {"kind": "cam_gallery", "artifact": "gallery", "title": title, "captions": captions,
            "sources": [str(s) for s in dataset.sources[rows[chosen]]]}
    return {"gallery": spec}, {"gallery": arrays}


def border_band_regions(context: ProbeContext, rows: np.ndarray, resolution: int) -> Regions:
    """The border band of ``params.border_fraction``, at least one CAM cell wide."""
    return border_regions(len(rows), context.dataset.image_size,
                          context.params.border_fraction, resolution)


def pointing_game(context: ProbeContext, rows: np.ndarray, cams: Explanations,
                  measurement: Measurement, regions: Regions) -> dict[str, dict[str, Any]]:
    """How often the audited model's CAM peak lies inside the lungs (the pointing game)."""
    ok = regions.usable & np.isfinite(measurement.share)
    hits, n = int((~measurement.peak_in_region[ok]).sum()), int(ok.sum())
    pointing = {"hits": hits, "n": n, "hit_rate": hits / n if n else np.nan,
                "ci": wilson_ci(hits, n)}
    return {"details": {"pointing_game": pointing}, "tables": {}, "figures": {}}
