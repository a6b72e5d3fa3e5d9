"""The swap checks on trained networks with a known answer (slow; needs ../shared/weights).

Frozen ImageNet MobileNetV2 0.35 at 128 px with a trained head (``train_flat_mobilenet_v2``)
on small synthetic phantoms (``audit.data.phantoms``):

- label-tied marker in one source: a clean set (no confounding, no site traits) with a
  bright square burned into the border band of 80% of the COVID images only (the planted
  confounder recipe of Sun, Koch and Baumgartner, MICCAI 2023). The border swap fires.
- the same set without the marker: neither swap check fires.
- shortcut only (confounding 1, no disease signal, placed site traits): every right
  answer is a shortcut, so the surround swap fires.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from audit.core.cache import StageCache
from audit.core.config import ProbesConfig, SiteTraits, SynthConfig
from audit.data.dataset import Splits
from audit.data.phantoms import plant_marker, synthetic_dataset
from audit.pipeline import image_prediction_service
from probes.checks import intervention_border_swap, intervention_surround_swap
from tests.attention_fixtures import MOBILENET_V2_035, half_split, train_flat_mobilenet_v2
from tests.probe_fixtures import fires, probe_context

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MOBILENET_V2_035.exists(), reason="needs ../shared/weights"),
]
SEED = 1
NO_TRAITS = SiteTraits(markers=False, borders=False, intensity=False)


def _results(tmp_path, dataset):
    train, test = half_split(dataset, SEED)
    model = train_flat_mobilenet_v2(dataset, train, "raw", input_size=128, seed=SEED)
    models = {model.key: model}
    context = probe_context(
        dataset, Splits(train=train, test=test, folds=((train, test),), seed=SEED),
        models=models, audited=model.key, params=ProbesConfig(seed=SEED), seed=SEED,
        predict_images=image_prediction_service(models, StageCache(tmp_path / "cache")))
    return {check.SPEC.id: check.run(context)
            for check in (intervention_surround_swap, intervention_border_swap)}


def _clean_set():
    return synthetic_dataset(SynthConfig(n_per_class=10, image_size=128, confounding=0.0,
                                         site_traits=NO_TRAITS, seed=SEED))


def test_a_label_tied_marker_fires_the_border_swap_and_its_absence_fires_nothing(tmp_path):
    clean = _clean_set()
    covid = np.flatnonzero(clean.labels == 0)
    marked = covid[np.random.default_rng(SEED).permutation(len(covid))[:int(0.8 * len(covid))]]
    planted = dataclasses.replace(clean, images=plant_marker(clean.images, marked,
                                                             corner="top_right",
                                                             size_fraction=0.06))
    border = _results(tmp_path / "planted", planted)["intervention.border_swap"]
    assert fires(border), (border.metric, border.p_value)
    unplanted = _results(tmp_path / "clean", clean)
    assert not any(fires(result) for result in unplanted.values()), {
        check: (result.metric, result.p_value) for check, result in unplanted.items()}


def test_shortcut_only_phantoms_fire_the_surround_swap(tmp_path):
    dataset = synthetic_dataset(SynthConfig(n_per_class=10, image_size=128, confounding=1.0,
                                            signal_strength=0.0, seed=SEED))
    surround = _results(tmp_path, dataset)["intervention.surround_swap"]
    assert fires(surround), (surround.metric, surround.p_value, surround.details)
    assert surround.details["across"]["share"] >= 0.8
