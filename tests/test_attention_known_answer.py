"""Attention checks on trained networks with a known answer (slow; needs ../shared/weights).

Networks: frozen ImageNet MobileNetV2 0.35 at 224 px with a trained head
(``train_flat_mobilenet_v2``), on small synthetic phantom sets (``audit.synth``):

- planted marker: a clean set (no confounding, no site traits) with a square burned into
  the top-right corner of the COVID images only. The raw model's COVID Grad-CAMs go to
  that corner; its lung-masked twin cannot see the marker.
- control: the same clean set without the marker. Neither check may fire at the default
  policy's thresholds.
- shortcut only: confounding 1 with every site trait on and no disease signal, so every
  right answer is a shortcut. Measured over seeds 1-3 (``python -m
  benchmarks.attention_thresholds --kinds shortcut_only``): ``attention.border`` fires at
  seeds 2 and 3 (1.09 and 1.14, p < 0.001) and outside-lung mass is enriched there (1.04
  and 1.09) though under its gate of 1.1, which sits above what clean phantoms measure
  (up to 1.035). At seed 1 neither is enriched: that model's CAMs sit in the middle of the
  image, where the exposure of the mediastinum and body also tells the source. With the
  disease signal on (kind ``confounded``) border fired at seed 2 only (1.064, p = 0.01).
  Attention finds shortcuts that have a place (markers, borders); ``site.image`` and
  ``generalization.leave_one_source_out`` find the diffuse ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from audit.config import SiteTraits, SynthConfig
from audit.gate import load_policy
from audit.synth import plant_marker, synthetic_dataset
from probes.attention import BorderAttentionProbe, OutsideLungAttentionProbe
from probes.base import CheckResult
from tests.attention_fixtures import (
    MOBILENET_V2_035,
    half_split,
    synthetic_context,
    train_flat_mobilenet_v2,
)

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
    return {probe.check_id: probe.run(context)
            for probe in (BorderAttentionProbe(), OutsideLungAttentionProbe())}


def _fires(result: CheckResult) -> bool:
    """The gate's rule with the default policy (unadjusted p: Holm only makes p larger)."""
    policy = load_policy()
    threshold = policy.checks[result.check_id].threshold
    return result.metric > threshold and result.p_value < policy.alpha


def test_planted_marker_is_found_and_the_lung_masked_model_ignores_it(tmp_path):
    dataset = _clean_set()
    covid = dataset.labels == 0
    dataset = dataclasses.replace(dataset, images=plant_marker(dataset.images, covid,
                                                               corner="top_right",
                                                               size_fraction=0.12))
    border = _run(tmp_path, dataset)["attention.border"]
    assert border.details["worst_class"] == "covid"
    assert border.metric > 1.1 and border.p_value < 0.05
    zones = next(row for row in border.tables["zones_by_class"] if row["class"] == "covid")
    assert zones["top-right"] == max(zones[name] for name in zones if name != "class")
    twin = border.details["lung_masked_comparison"]  # on the COVID images
    assert twin["masked_enrichment"] < twin["raw_enrichment"] - 0.2
    assert twin["p_raw_greater"] < 0.05


def test_clean_control_fires_neither_check(tmp_path):
    results = _run(tmp_path, _clean_set())
    assert all(result.ran for result in results.values())
    assert not any(_fires(result) for result in results.values()), {
        check: (result.metric, result.p_value) for check, result in results.items()}
    assert np.isfinite([result.metric for result in results.values()]).all()


def test_shortcut_only_confounded_set_fires_the_border_check(tmp_path):
    seed = 3  # a seed whose model uses the placed traits (see the module docstring)
    dataset = synthetic_dataset(SynthConfig(n_per_class=10, image_size=128, confounding=1.0,
                                            signal_strength=0.0, seed=seed))
    results = _run(tmp_path, dataset, seed=seed)
    border, outside = results["attention.border"], results["attention.outside_lung"]
    assert _fires(border), (border.metric, border.p_value)
    assert border.ci[0] > 1.05  # measured 1.14 (95% CI 1.08-1.20)
    # Outside-lung mass is enriched too (measured 1.09, CI 1.06-1.12, p < 0.001), though
    # under its gate: clean phantoms already measure up to 1.035 there (README, Measured).
    assert outside.ci[0] > 1.0 and outside.p_value < 0.05
