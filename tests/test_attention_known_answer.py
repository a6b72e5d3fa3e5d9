"""Attention checks on trained networks with a known answer (slow; needs ../shared/weights).

Networks: frozen ImageNet MobileNetV2 0.35 at 224 px with a trained head
(``train_flat_mobilenet_v2``), on small synthetic phantom sets (``audit.data.phantoms``):

- planted marker: a clean set (no confounding, no site traits) with a square burned into
  the top-right corner of the COVID images only. The raw model's COVID Grad-CAMs go to
  that corner; its lung-masked twin cannot see the marker.
- control: the same clean set without the marker. Neither check may fire at the default
  policy's thresholds.
- shortcut only: confounding 1, no disease signal, so every right answer is a shortcut,
  with the sources told apart by placed traits only (markers and borders). Measured over
  seeds 1-5 (``python -m benchmarks.attention_thresholds --kinds shortcut_only
  --placed-only --seeds 1 2 3 4 5``): ``attention.border`` fires at every seed (1.13,
  1.19, 1.13, 1.12, 1.16; p < 1e-4) and ``attention.outside_lung`` at four (1.12, 1.13,
  1.06, 1.11, 1.13). With the sources' outside-lung exposure profile on as well
  (``--kinds shortcut_only`` without ``--placed-only``), border fired at seeds 2 and 3
  only: the seed-1 model reads the exposure of the mediastinum, in the middle of the
  image, which 7x7 Grad-CAM cells cannot tell from the lungs beside it. Attention finds
  shortcuts that have a place (markers, borders); ``site.image`` and
  ``generalization.leave_one_source_out`` find the diffuse ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from audit.core.config import SiteTraits, SynthConfig
from audit.data.phantoms import plant_marker, synthetic_dataset
from probes.base import CheckResult
from probes.checks import attention_border, attention_localized, attention_outside_lung
from tests.attention_fixtures import (
    MOBILENET_V2_035,
    half_split,
    synthetic_context,
    train_flat_mobilenet_v2,
)
from tests.probe_fixtures import fires

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MOBILENET_V2_035.exists(), reason="needs ../shared/weights"),
]
SEED = 1  # one of the seeds measured for the report; the margins below hold for it
NO_TRAITS = SiteTraits(markers=False, borders=False, intensity=False)


def _clean_set(seed: int = SEED):
    config = SynthConfig(n_per_class=10, image_size=128, confounding=0.0,
                         site_traits=NO_TRAITS, seed=seed)
    return synthetic_dataset(config)


def _run(tmp_path, dataset, seed: int = SEED) -> dict[str, CheckResult]:
    train, test = half_split(dataset, seed)
    models = [train_flat_mobilenet_v2(dataset, train, mode, seed=seed)
              for mode in ("raw", "lung_masked")]
    context = synthetic_context(tmp_path, dataset, models, test, seed=seed, n_bootstrap=200)
    return {check.SPEC.id: check.run(context)
            for check in (attention_border, attention_outside_lung, attention_localized)}


def test_planted_marker_is_found_and_the_lung_masked_model_ignores_it(tmp_path):
    dataset = _clean_set()
    covid = dataset.labels == 0
    dataset = dataclasses.replace(dataset, images=plant_marker(dataset.images, covid,
                                                               corner="top_right",
                                                               size_fraction=0.12))
    results = _run(tmp_path, dataset)
    border, localized = results["attention.border"], results["attention.localized"]
    assert border.details["worst_class"] == "covid"
    assert border.metric > 1.1 and border.p_value < 0.05
    assert fires(localized), (localized.metric, localized.p_value)
    assert (localized.details["worst_class"], localized.details["worst_zone"]) == (
        "covid", "top-right")
    twin = border.details["lung_masked_comparison"]  # on the COVID images
    assert twin["masked_enrichment"] < twin["raw_enrichment"] - 0.2
    assert twin["p_raw_greater"] < 0.05


def test_clean_control_fires_neither_check(tmp_path):
    results = _run(tmp_path, _clean_set())
    assert all(result.ran for result in results.values())
    assert not any(fires(result) for result in results.values()), {
        check: (result.metric, result.p_value) for check, result in results.items()}
    assert np.isfinite([result.metric for result in results.values()]).all()


def test_shortcut_only_placed_traits_fire_both_checks(tmp_path):
    dataset = synthetic_dataset(SynthConfig(n_per_class=10, image_size=128, confounding=1.0,
                                            signal_strength=0.0, site_traits=SiteTraits(
                                                intensity=False), seed=SEED))
    results = _run(tmp_path, dataset)
    border, outside = results["attention.border"], results["attention.outside_lung"]
    assert fires(border), (border.metric, border.p_value)
    assert border.ci[0] > 1.05  # measured 1.13
    # measured 1.12 (gate 1.1: fires, but by a margin too thin to assert on another machine)
    assert outside.ci[0] > 1.05 and outside.p_value < 0.05, (outside.metric, outside.ci)
    twin = border.details["lung_masked_comparison"]
    assert twin["masked_enrichment"] < twin["raw_enrichment"] - 0.1 and twin["p_raw_greater"] < 0.05
