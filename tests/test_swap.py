"""The swap checks with known answers: fixed Keras models that read a known region.

Each model's COVID logit is a weighted mean brightness of fixed regions of a 32 px image
(a ``Dense`` layer on the flattened pixels, weights set by hand); the other classes' logits
are 0. The phantoms have two rectangular lungs at the same place in every image; their
lung brightness is a per-image "disease" level, their surround brightness the source's
(A bright, B dark), so the surround names the site. Composites are predicted through the
pipeline's cached ``predict_images`` service.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest

from audit.core.cache import StageCache
from audit.core.config import CLASSES, ProbesConfig
from audit.data.dataset import Dataset, Splits
from audit.pipeline import image_prediction_service
from models.inputs import border_band
from models.trained import TrainedModel
from probes.base import Status
from probes.checks import intervention_border_swap, intervention_surround_swap
from probes.swap import composites, draw_pairs
from tests.probe_fixtures import fires, probe_context

SIZE = 32
N = 64
MID = 125.0


def _lungs() -> np.ndarray:
    lungs = np.zeros((SIZE, SIZE), bool)
    lungs[8:24, 6:14] = lungs[8:24, 18:26] = True
    return lungs


def _phantoms(marker_on_covid: bool = False) -> Dataset:
    """Sources A (surround 150) and B (surround 100); lung level 125 + 50 u, u in [-1, 1]
    spread evenly per source; label covid when u > 0. ``marker_on_covid`` burns a bright
    square into the border band of 80% of the COVID images."""
    rng = np.random.default_rng(0)
    lungs = _lungs()
    source = np.where(np.arange(N) % 2 == 0, "A", "B")
    u = np.empty(N)
    u[source == "A"] = u[source == "B"] = np.linspace(-0.95, 0.95, N // 2)
    surround = np.where(source == "A", 150.0, 100.0)
    images = surround[:, None, None] + rng.normal(0, 3, (N, SIZE, SIZE))
    images = np.where(lungs, (MID + 50 * u)[:, None, None] + rng.normal(0, 3, (N, SIZE, SIZE)),
                      images)
    label = np.where(u > 0, "covid", "normal")
    if marker_on_covid:
        marked = np.flatnonzero(label == "covid")[::5]  # every fifth COVID image unmarked
        marked = np.setdiff1d(np.flatnonzero(label == "covid"), marked)
        images[marked, 0:3, 0:3] = 255.0
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    manifest = pd.DataFrame({"path": [f"img{i}.png" for i in range(N)], "label": label,
                             "source": source, "patient_id": [f"p{i}" for i in range(N)],
                             "view": "PA", "mask_path": ""})
    masks = np.broadcast_to(lungs, (N, SIZE, SIZE)).astype(np.uint8)
    return Dataset(manifest=manifest, images=images, masks=masks, has_mask=np.ones(N, bool),
                   mask_origin="manifest", manifest_hash=f"swap-phantoms-{marker_on_covid}")


def _region_model(weights: dict[str, float], key: str, offset: float = 0.0) -> TrainedModel:
    """COVID logit = ``offset`` + sum over regions of weight x (region's mean pixel - MID) / 25."""
    regions = {"lungs": _lungs(), "surround": ~_lungs(),
               "corner": np.zeros((SIZE, SIZE), bool)}
    regions["corner"][0:3, 0:3] = True
    kernel = np.zeros((SIZE * SIZE * 3, len(CLASSES)), np.float32)
    bias = np.zeros(len(CLASSES), np.float32)
    bias[0] = offset
    for name, weight in weights.items():
        region = np.repeat(regions[name][..., None], 3, axis=-1).reshape(-1)
        kernel[region, 0] += weight / (25 * region.sum())
        bias[0] -= weight * MID / 25
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten(name="flat")(inputs)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("predictions").set_weights([kernel, bias])
    return TrainedModel(key=f"{key}/raw", backbone=key, input_mode="raw", load_keras=lambda: model,
                        classes=CLASSES, last_conv_layer="flat", embedding_layer="flat",
                        input_size=SIZE)


def _context(tmp_path, dataset, model, seed=0, **params):
    rows = np.arange(N)
    splits = Splits(train=rows[:0], test=rows, folds=(), seed=seed)
    models = {model.key: model}
    return probe_context(dataset, splits, models=models, audited=model.key,
                         params=ProbesConfig(seed=seed, **params), seed=seed,
                         predict_images=image_prediction_service(
                             models, StageCache(tmp_path / "cache")))


# A site reader that also reads the lungs: within a source the lungs decide, across
# sources the site shifts the boundary (logit = 0.8 site + 1.0 disease).
SITE_AND_LUNGS = {"surround": 0.8 * 2, "lungs": 1.0}
LUNGS_ONLY = {"lungs": 1.0}
SURROUND_ONLY = {"surround": 1.0}


def test_a_model_reading_the_site_in_the_surround_scores_near_one(tmp_path):
    result = intervention_surround_swap.run(
        _context(tmp_path, _phantoms(), _region_model(SITE_AND_LUNGS, "site")))
    assert result.details["baseline"] == "same-source pairs"
    assert result.details["within"]["share"] == 0.0  # same site: the lungs decide
    assert result.details["across"]["share"] > 0.8
    assert result.metric > 0.8 and result.ci[0] > 0.5 and result.p_value < 1e-6
    assert fires(result)
    pairs = result.tables["by_source_pair"]
    assert {(row["lung_source"], row["surround_source"]) for row in pairs} == {
        ("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")}


def test_a_model_reading_only_the_lungs_scores_near_zero(tmp_path):
    result = intervention_surround_swap.run(
        _context(tmp_path, _phantoms(), _region_model(LUNGS_ONLY, "lungs")))
    assert result.details["across"]["share"] < 0.05
    assert abs(result.metric) < 0.1
    assert not fires(result)


def test_a_pure_surround_reader_falls_back_to_a_coin_flip(tmp_path):
    """Calls alike within each source: no same-source pair, so across vs one half."""
    result = intervention_surround_swap.run(
        _context(tmp_path, _phantoms(), _region_model(SURROUND_ONLY, "surround")))
    assert result.details["within"]["pairs"] == 0
    assert result.details["baseline"].startswith("a coin flip")
    assert result.metric == pytest.approx(1.0) and result.p_value < 1e-6
    assert any("compared with one half" in note for note in result.notes)
    assert fires(result)


def test_the_gallery_shows_both_donors_and_the_composite(tmp_path):
    result = intervention_surround_swap.run(
        _context(tmp_path, _phantoms(), _region_model(SITE_AND_LUNGS, "site")))
    arrays = result.artifacts["composites"]
    assert arrays["images"].shape[1:] == (SIZE, SIZE) and len(arrays["images"]) % 3 == 0
    assert len(result.figures["composites"]["captions"]) == len(arrays["images"])
    assert result.figures["composites"]["artifact"] == "composites"
    # the caption says how to read the panels' own captions, in this check's words
    caption = result.figures["composites"]["caption"]
    assert "gives the lungs" in caption and "follows the surround or the lungs" in caption
    # a table row counts pairs (the report labels it so), not images
    assert all({"pairs", "share"} <= set(row) and "n" not in row
               for rows in result.tables.values() for row in rows)


def test_border_swap_fires_on_a_label_tied_marker_and_not_for_a_lung_reader(tmp_path):
    marked = _phantoms(marker_on_covid=True)
    # Marked corners read 5.2, unmarked ones 1 (A) or -1 (B): only a marker calls COVID.
    corner_reader = _region_model({"corner": 1.0, "lungs": 0.2}, "corner", offset=-3.0)
    result = intervention_border_swap.run(_context(tmp_path, marked, corner_reader))
    assert result.metric > 0.7 and result.p_value < 1e-6
    assert fires(result)
    lungs = intervention_border_swap.run(_context(tmp_path, marked,
                                                  _region_model(LUNGS_ONLY, "lungs")))
    assert lungs.metric < 0.05
    assert not fires(lungs)


def test_border_swap_judges_each_band_source_with_enough_pairs_on_its_own():
    # Source a's bands steer half of their 30 composites, b's 3 of 30, c's 5 of 5: pooled,
    # 23 of 65 (0.35) understates a's marker; c has too few pairs to be judged alone.
    follows = np.r_[np.arange(30) < 15, np.arange(30) < 3, np.ones(5, bool)]
    bands = np.repeat(["a", "b", "c"], [30, 30, 5])
    rows = intervention_border_swap._by_band_source(follows, bands)
    assert [(row["band_source"], row["pairs"], row["share"]) for row in rows] == [
        ("all sources", 65, 23 / 65), ("a", 30, 0.5), ("b", 30, 0.1)]
    assert all(row["p_holm"] >= row["p"] for row in rows) and rows[1]["p_holm"] < 1e-3
    few = intervention_border_swap._by_band_source(follows[-10:], bands[-10:])
    assert [(row["band_source"], row["pairs"]) for row in few] == [("all sources", 10)]
    one = intervention_border_swap._by_band_source(follows[:30], bands[:30])
    assert [(row["band_source"], row["p_holm"]) for row in one] == [("a", one[0]["p"])]


def test_surround_swap_needs_masks(tmp_path):
    dataset = dataclasses.replace(_phantoms(), masks=None, has_mask=None)
    result = intervention_surround_swap.run(
        _context(tmp_path, dataset, _region_model(LUNGS_ONLY, "lungs")))
    assert result.status == Status.NOT_RUN and "lung masks" in result.reason


def test_pairs_are_deterministic_by_seed(tmp_path):
    dataset, model = _phantoms(), _region_model(SITE_AND_LUNGS, "site")
    first, again, other = (intervention_surround_swap.run(_context(tmp_path, dataset, model,
                                                                   seed=seed, swap_pairs=20))
                           for seed in (3, 3, 4))
    assert first.tables == again.tables and first.metric == again.metric
    assert first.details["across"]["pairs"] == 10
    np.testing.assert_array_equal(first.artifacts["composites"]["images"],
                                  again.artifacts["composites"]["images"])
    assert not np.array_equal(first.artifacts["composites"]["images"],
                              other.artifacts["composites"]["images"])


def test_draw_pairs_keeps_the_relation_and_differing_calls():
    rng = np.random.default_rng(0)
    called = np.array([True, False, True, False, True, False])
    sources = np.array(["A", "A", "B", "B", "C", "C"])
    for relation, same in (("within", True), ("across", False)):
        base, donor = draw_pairs(called, sources, relation, 10, rng)
        assert len(base) == 6 and len(set(base)) == 6
        assert (called[base] != called[donor]).all()
        assert ((sources[base] == sources[donor]) == same).all()


def test_composites_take_the_region_from_the_donor_with_a_soft_edge():
    base = np.zeros((1, SIZE, SIZE), np.uint8)
    donor = np.full((1, SIZE, SIZE), 200, np.uint8)
    band = border_band(SIZE, 0.25)
    out = composites(base, donor, band)[0]
    assert out[0, 0] == 200 and out[SIZE // 2, SIZE // 2] == 0
    edge = out[SIZE // 2, SIZE // 4 - 1: SIZE // 4 + 1]  # across the band's inner edge
    assert 0 < edge.min() and edge.max() < 200


def test_composite_predictions_are_a_cached_stage_per_model_and_pixels(tmp_path):
    dataset, model = _phantoms(), _region_model(LUNGS_ONLY, "lungs")
    cache = StageCache(tmp_path / "cache")
    predict = image_prediction_service({model.key: model}, cache)
    images = dataset.images[:5]
    first = predict(model.key, images, None)
    again = predict(model.key, images.copy(), None)
    other = predict(model.key, images[::-1].copy(), None)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(other, first[::-1], rtol=1e-6)
    actions = [event.action for event in cache.events if event.stage == "image_predictions"]
    assert actions == ["computed", "reused", "computed"]
    np.testing.assert_allclose(first, model.predict_proba(dataset, np.arange(5)), rtol=1e-6)
