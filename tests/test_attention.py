"""Attention checks on fixed models with a known answer (fast), plus their helpers.

``brightness_model``'s Grad-CAM for its predicted class is the image's brightness, so a
bright frame is a planted border/outside-lung shortcut and bright lungs are a clean,
lung-focused model. Known-answer tests with trained networks are in
``tests/test_attention_known_answer.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from audit.core.cache import StageCache
from probes.attention import border_regions, cam_rows, summarize
from probes.base import CheckResult, Status
from probes.checks import attention_border, attention_localized, attention_outside_lung
from probes.regions import ZONES, Measurement, measure, peak_zone
from tests.attention_fixtures import brightness_trained, lung_phantoms, synthetic_context
from tests.probe_fixtures import fires

CHECKS = (attention_border, attention_outside_lung, attention_localized)


def _run_all(tmp_path, bright: str, with_twin: bool = True, dataset=None
             ) -> dict[str, CheckResult]:
    dataset = dataset or lung_phantoms(n=48, bright=bright)
    models = [brightness_trained("raw")] + ([brightness_trained("lung_masked")] if with_twin else [])
    context = synthetic_context(tmp_path, dataset, models, np.arange(len(dataset)),
                                n_bootstrap=200)
    return {check.SPEC.id: check.run(context) for check in CHECKS}


def _corner_marker(dataset, rows, size: int = 8, value: int = 255):
    """``dataset`` with a bright ``size`` px square in the top-right corner of ``rows``
    (one 8 px cell of ``brightness_model``'s 8x8 map at 64 px)."""
    from dataclasses import replace

    images = dataset.images.copy()
    images[rows, :size, -size:] = value
    return replace(dataset, images=images)


def test_planted_border_attention_is_measured_as_enriched(tmp_path):
    results = _run_all(tmp_path, bright="border")
    border, outside = results["attention.border"], results["attention.outside_lung"]
    assert border.status == Status.MEASURED and border.metric > 1.5
    assert border.ci[0] > 1.5 and border.p_value < 0.01
    assert border.details["all_images"]["random_enrichment"] == pytest.approx(1.0, abs=0.15)
    assert border.details["classes_tested"] == 4  # p is Bonferroni-corrected over them
    assert border.p_value == pytest.approx(min(1.0, 4 * border.details["p_uncorrected"]))
    assert outside.metric > 1.1 and outside.p_value < 0.01
    assert outside.details["pointing_game"]["hit_rate"] == 0.0  # peaks on the frame
    covid_zones = results["attention.localized"].tables["zones_by_class"][0]
    assert covid_zones["class"] == "covid" and covid_zones["centre"] < 0.5
    assert min(covid_zones[zone] for zone in ("top-left", "top", "right")) > 1.5
    twin = border.details["lung_masked_comparison"]
    assert twin["model"] == "bright/lung_masked" and twin["class"] == border.details["worst_class"]
    assert twin["p_raw_greater"] < 0.01
    stored = border.artifacts["gallery"]  # the twin's maps of the gallery's images, for display
    assert stored["twin_cams"].shape == stored["cams"].shape
    assert not np.array_equal(stored["twin_cams"], stored["cams"])


def test_lung_focused_attention_is_not_enriched(tmp_path):
    results = _run_all(tmp_path, bright="lungs")
    border, outside = results["attention.border"], results["attention.outside_lung"]
    localized = results["attention.localized"]
    assert border.metric < 0.8 and border.p_value > 0.5
    assert localized.tables["zones_by_class"][0]["centre"] > 1.3
    assert outside.metric < 0.8 and outside.p_value > 0.5
    assert outside.details["pointing_game"]["hit_rate"] == 1.0
    assert not any(fires(result) for result in results.values())
    assert localized.metric < 1.0 and localized.p_value == 1.0
    assert {row["rate"] for row in localized.tables["peaks_outside_lungs"]} == {0.0}


def test_result_reports_tables_exclusions_and_gallery(tmp_path):
    border = _run_all(tmp_path, bright="border", with_twin=False)["attention.border"]
    assert border.details["cam_resolution"] == {"bright/raw": 8}
    assert border.details["lung_masked_comparison"] is None
    assert border.details["excluded_rows"] == {"no positive CAM mass": 0}
    targets = {(row["model"], row["target"]) for row in border.tables["by_model"]}
    assert targets == {("bright/raw", "predicted"), ("bright/raw", "true")}
    true_row = next(row for row in border.tables["by_model"] if row["target"] == "true")
    assert true_row["n"] == 12  # only class-0 rows: the other classes' CAMs have no mass
    assert {row["class"] for row in border.tables["by_class"]} == {
        "covid", "opacity", "other", "normal"}
    gallery = border.figures["gallery"]
    assert gallery["kind"] == "cam_gallery" and gallery["artifact"] == "gallery"
    stored = border.artifacts["gallery"]
    assert stored["images"].shape[1:] == (64, 64) and stored["cams"].shape[1:] == (8, 8)
    assert stored["masks"].shape == stored["images"].shape
    assert len(gallery["captions"]) == len(stored["images"]) == len(gallery["sources"])
    assert "twin_cams" not in stored  # no lung-masked twin in this run
    assert not list(tmp_path.rglob("*gallery*"))  # the probe wrote nothing itself
    CheckResult.from_dict(border.to_dict())  # JSON-able round trip


def test_both_probes_share_one_cam_stage_per_model(tmp_path):
    dataset = lung_phantoms(n=8, bright="border")
    cache = StageCache(tmp_path / "cache")
    context = synthetic_context(tmp_path, dataset, [brightness_trained("raw")], np.arange(8),
                                cache=cache)
    attention_border.run(context)
    attention_outside_lung.run(context)
    actions = [(event.stage, event.action) for event in cache.events]
    assert actions == [("gradcam", "computed"), ("gradcam", "reused")]
    rerun_cache = StageCache(tmp_path / "cache")
    rerun = synthetic_context(tmp_path, dataset, [brightness_trained("raw")], np.arange(8),
                              cache=rerun_cache)
    attention_border.run(rerun)
    assert [event.action for event in rerun_cache.events] == ["reused"]


def test_outside_lung_not_run_without_masks(tmp_path):
    from dataclasses import replace

    dataset = replace(lung_phantoms(n=8), masks=None, has_mask=None)
    cache = StageCache(tmp_path / "cache")
    context = synthetic_context(tmp_path, dataset, [brightness_trained("raw")], np.arange(8),
                                cache=cache)
    result = attention_outside_lung.run(context)
    assert result.status == Status.NOT_RUN and "no lung masks" in result.reason
    assert cache.events == []  # nothing computed for a check that cannot run


def test_rows_without_mask_are_excluded_and_counted(tmp_path):
    from dataclasses import replace

    dataset = lung_phantoms(n=24, bright="border")
    has_mask = np.ones(24, bool)
    has_mask[:4] = False  # one image of each class
    dataset = replace(dataset, has_mask=has_mask)
    context = synthetic_context(tmp_path, dataset, [brightness_trained("raw")], np.arange(24))
    result = attention_outside_lung.run(context)
    assert result.details["excluded_rows"]["no lung mask"] == 4
    assert result.tables["by_model"][0]["n"] == 20


def test_not_run_when_no_class_has_enough_images(tmp_path):
    dataset = lung_phantoms(n=8, bright="border")  # two images per class
    context = synthetic_context(tmp_path, dataset, [brightness_trained("raw")], np.arange(8))
    result = attention_border.run(context)
    assert result.status == Status.NOT_RUN
    assert result.reason.startswith("no class has 5 test images with a usable region")


def test_cam_rows_keeps_class_proportions_and_is_deterministic():
    labels = np.repeat([0, 1, 2, 3], [40, 20, 20, 20])
    test = np.arange(100)
    chosen = cam_rows(test, labels, max_images=50, seed=3)
    assert len(chosen) == 50 and len(np.unique(chosen)) == 50
    assert np.bincount(labels[chosen]).tolist() == [20, 10, 10, 10]
    assert np.array_equal(chosen, cam_rows(test, labels, max_images=50, seed=3))
    assert not np.array_equal(chosen, cam_rows(test, labels, max_images=50, seed=4))
    assert np.array_equal(cam_rows(test[:30], labels, max_images=50, seed=0), test[:30])


def test_border_band_is_at_least_one_cam_cell_wide():
    assert border_regions(2, 224, 0.10, cam_resolution=7).description == "in the 14% border band"
    wide = border_regions(2, 224, 0.10, cam_resolution=7)
    assert wide.area[0] == pytest.approx(1 - (160 / 224) ** 2)
    fine = border_regions(2, 200, 0.10, cam_resolution=20)
    assert fine.area[0] == pytest.approx(1 - (160 / 200) ** 2)


def test_uniform_maps_measure_enrichment_one_and_match_the_random_baseline():
    regions = border_regions(3, 56, 0.10, cam_resolution=7)
    measurement = measure(np.ones((3, 7, 7), np.float32), regions.masks, 56, seed=0)
    np.testing.assert_allclose(measurement.share, regions.area, rtol=1e-5)
    np.testing.assert_allclose(measurement.random_share, regions.area, rtol=1e-5)
    stats = summarize(measurement, regions, np.ones(3, bool), n_bootstrap=50, seed=0)
    assert stats["enrichment"] == pytest.approx(1.0, abs=1e-5)
    assert stats["p_vs_random"] == 1.0


def test_summarize_of_an_empty_subset_reports_zero_rows():
    regions = border_regions(2, 56, 0.10, cam_resolution=7)
    empty = Measurement(share=np.full(2, np.nan), random_share=np.full(2, np.nan),
                        peak_in_region=np.zeros(2, bool))
    assert summarize(empty, regions, np.ones(2, bool), n_bootstrap=10, seed=0) == {"n": 0}


def test_not_run_without_a_grad_cam_service(tmp_path):
    from dataclasses import replace

    context = synthetic_context(tmp_path, lung_phantoms(n=8), [brightness_trained("raw")],
                                np.arange(8))
    for check in CHECKS:
        result = check.run(replace(context, explanations=None))
        assert result.status == Status.NOT_RUN
        assert result.reason == "no Grad-CAM service in the probe context (ProbeContext.explanations)"


def test_not_run_when_a_models_grad_cam_is_too_coarse_for_a_border_band(tmp_path):
    """An external model's grid is known only from its CAMs: 2 x 2 cells hold no border
    band besides an interior, so both checks say so instead of crashing."""
    from dataclasses import replace

    from tests.attention_fixtures import brightness_model

    coarse = replace(brightness_trained("raw"), load_keras=lambda: brightness_model(64, cells=2))
    context = synthetic_context(tmp_path, lung_phantoms(n=16), [coarse], np.arange(16))
    for check in CHECKS:
        result = check.run(context)
        assert result.status == Status.NOT_RUN, result.reason
        assert "bright/raw 2x2 cells at 64 px" in result.reason
        assert "audit the model at a larger input size" in result.reason


def test_a_marker_in_one_corner_of_one_class_fires_localized_but_not_the_band(tmp_path):
    """The demo's case: lung-focused maps plus a bright corner cell on 18 of the 24 COVID
    images. The band's average hides it; the class x zone cell does not."""
    dataset = lung_phantoms(n=96, bright="lungs")
    covid = np.flatnonzero(dataset.labels == 0)
    results = _run_all(tmp_path, bright="lungs", dataset=_corner_marker(dataset, covid[:18]))
    localized, border = results["attention.localized"], results["attention.border"]
    assert not fires(border), (border.metric, border.p_value)
    assert fires(localized), (localized.metric, localized.p_value)
    assert (localized.details["worst_class"], localized.details["worst_zone"]) == (
        "covid", "top-right")
    assert localized.details["cells_tested"] == 4 * 8  # classes x border zones, Holm over them
    assert localized.ci[0] > 1.5
    worst = next(cell for cell in localized.tables["cells"]
                 if (cell["class"], cell["zone"]) == ("covid", "top-right"))
    assert worst["rest_enrichment"] < 1.0 and worst["p_holm"] == localized.p_value < 0.01
    pointing = localized.details["pointing_in_zone"]
    assert (pointing["peak_hits"], pointing["n"]) == (18, 24)
    assert pointing["cell_share"] == pytest.approx(1 / 64)
    assert pointing["peak_ci_low"] < 0.75 < pointing["peak_ci_high"]
    outside = localized.details["peaks_outside_lungs"]  # the marked COVID images' peaks
    assert (outside["class"], outside["peaks_outside"], outside["n"]) == ("covid", 18, 24)
    twin = localized.details["lung_masked_comparison"]
    assert twin["masked_enrichment"] < 1.0 < twin["raw_enrichment"] and twin["p_raw_greater"] < 0.01
    gallery = localized.figures["gallery"]
    assert all(caption.startswith("covid") for caption in gallery["captions"])
    assert localized.artifacts["gallery"]["cams"].shape[1:] == (8, 8)


def test_one_image_with_a_hot_corner_does_not_fire_localized(tmp_path):
    """Ranks, not the mean, decide p: one image whose whole map sits in the corner lifts
    the class's mean above the threshold but cannot fire the check alone."""
    from tests.probe_fixtures import default_threshold

    dataset = lung_phantoms(n=48, bright="lungs")
    covid = np.flatnonzero(dataset.labels == 0)
    dataset.images[covid[0]] = 0  # only the corner marker is bright: enrichment 64
    localized = _run_all(tmp_path, bright="lungs", with_twin=False,
                         dataset=_corner_marker(dataset, covid[:1]))["attention.localized"]
    assert (localized.details["worst_class"], localized.details["worst_zone"]) == (
        "covid", "top-right")
    assert localized.metric > default_threshold("attention.localized")
    assert localized.details["pointing_in_zone"]["peak_hits"] == 1
    assert localized.p_value > 0.05 and not fires(localized)


def test_a_corner_every_class_looks_at_is_not_a_label_shortcut(tmp_path):
    """p asks whether one class looks at the zone more than the others: a corner all
    classes attend alike (the body outline, say) is enriched but does not fire."""
    from tests.probe_fixtures import default_threshold

    dataset = lung_phantoms(n=48, bright="lungs")
    localized = _run_all(tmp_path, bright="lungs", with_twin=False,
                         dataset=_corner_marker(dataset, np.arange(48)))["attention.localized"]
    assert localized.details["worst_zone"] == "top-right"
    assert localized.metric > default_threshold("attention.localized")
    assert localized.p_value > 0.5 and not fires(localized)


def test_diffuse_attention_does_not_fire_localized(tmp_path):
    from dataclasses import replace

    dataset = lung_phantoms(n=48, bright="lungs")
    noise = np.random.default_rng(0).integers(100, 140, dataset.images.shape).astype(np.uint8)
    localized = _run_all(tmp_path, bright="lungs", with_twin=False,
                         dataset=replace(dataset, images=noise))["attention.localized"]
    assert localized.metric == pytest.approx(1.0, abs=0.1)
    assert not fires(localized)


def test_localized_runs_without_masks_and_reports_no_outside_lung_peaks(tmp_path):
    from dataclasses import replace

    dataset = replace(lung_phantoms(n=48, bright="border"), masks=None, has_mask=None)
    localized = _run_all(tmp_path, bright="border", with_twin=False,
                         dataset=dataset)["attention.localized"]
    assert localized.ran and localized.details["peaks_outside_lungs"] is None
    assert "peaks_outside_lungs" not in localized.tables


def test_peak_zone_names_the_zone_of_the_hottest_cell():
    cams = np.zeros((3, 7, 7))
    cams[0, 0, 6] = 1.0
    cams[1, 3, 3] = 1.0
    assert peak_zone(cams).tolist() == [ZONES.index("top-right"), ZONES.index("centre"), -1]
    cams[0, 1, 5] = 2.0  # inside a 2-cell band's top-right corner, not a 1-cell band's
    assert peak_zone(cams[:1], width=1).tolist() == [ZONES.index("centre")]
    assert peak_zone(cams[:1], width=2).tolist() == [ZONES.index("top-right")]
