"""Grad-CAM (``models.gradcam``): equal to tf-keras-vis on saved-and-reloaded models; the
mass-ratio helpers (``probes.regions``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models.gradcam import GradCam, explain_rows, reference_gradcam, upsample_cams
from probes.regions import ZONES, mass_fraction, zone_enrichment
from tests.attention_fixtures import (
    MOBILENET_V2_035,
    brightness_trained,
    flat_mobilenet_v2,
    lung_phantoms,
    tiny_cnn,
)


def _reloaded(model: keras.Model, tmp_path) -> keras.Model:
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.models.load_model(path)


def _assert_same_maps(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    assert reference.max() > 0  # a map of zeros would make the comparison vacuous
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * reference.max())


def test_explain_equals_tf_keras_vis_on_reloaded_cnn(tmp_path):
    model = _reloaded(tiny_cnn(size=32), tmp_path)
    x = np.random.default_rng(0).uniform(0, 255, (10, 32, 32, 3)).astype(np.float32)
    true = np.arange(10) % 4
    gradcam = GradCam(model, "last_relu", batch_size=4)  # several batches, one ragged
    explained = gradcam.explain(x, true)
    assert gradcam.resolution == (16, 16) and explained.resolution == 16
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    np.testing.assert_array_equal(explained.predicted_class, predicted)
    assert (predicted != true).any() and (predicted == true).any()  # both cases exercised
    _assert_same_maps(explained.cams["predicted"],
                      reference_gradcam(model, "last_relu", x, predicted))
    _assert_same_maps(explained.cams["true"], reference_gradcam(model, "last_relu", x, true))
    assert explained.cams["true"].min() >= 0


@pytest.mark.skipif(not MOBILENET_V2_035.exists(), reason="needs ../shared/weights")
def test_explain_equals_tf_keras_vis_on_reloaded_mobilenet_v2(tmp_path):
    model = _reloaded(flat_mobilenet_v2(size=96), tmp_path)
    x = np.random.default_rng(1).uniform(0, 255, (6, 96, 96, 3)).astype(np.float32)
    classes = np.array([0, 1, 2, 3, 0, 1])
    ours = GradCam(model, "out_relu").explain(x, classes).cams["true"]
    assert ours.shape == (6, 3, 3)
    _assert_same_maps(ours, reference_gradcam(model, "out_relu", x, classes))


def test_gradcam_depends_on_the_class():
    model = tiny_cnn(size=32)
    x = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    gradcam = GradCam(model, "last_relu")
    assert not np.allclose(gradcam.explain(x, np.zeros(3, int)).cams["true"],
                           gradcam.explain(x, np.ones(3, int)).cams["true"])


def test_explain_rows_shows_the_model_its_input_mode_and_explains_the_true_labels():
    dataset = lung_phantoms(n=8, bright="border")  # a bright frame around dark lungs
    rows = np.array([4, 1, 6])  # covid, opacity, other
    raw = explain_rows(brightness_trained("raw"), dataset, rows)
    masked = explain_rows(brightness_trained("lung_masked"), dataset, rows)
    # The brightness model predicts class 0 and its class-0 map is the image's brightness:
    # the frame's corner cell is bright in the raw image and blanked in the lung-masked one.
    assert (raw.predicted_class == 0).all()
    assert (raw.cams["predicted"][:, 0, 0] > 0).all()
    assert (masked.cams["predicted"][:, 0, 0] == 0).all()
    # Only the covid row's true class is class 0; the other classes' maps have no mass.
    np.testing.assert_array_equal(raw.cams["true"][0], raw.cams["predicted"][0])
    assert (raw.cams["true"][1:] == 0).all()


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [
        ((2, 16, 16, 3), [0, 1], r"input must have shape \(n, 32, 32, 3\); got \(2, 16, 16, 3\)"),
        ((2, 32, 32, 3), [0], r"true_class must have one class per image, shape \(2,\); got \(1,\)"),
        ((2, 32, 32, 3), [0, 4], r"true_class must lie in 0..3; got values 0..4"),
    ],
)
def test_gradcam_rejects_bad_input(shape, classes, message):
    gradcam = GradCam(tiny_cnn(size=32), "last_relu")
    with pytest.raises(ValueError, match=message):
        gradcam.explain(np.zeros(shape, np.float32), np.array(classes))


def test_gradcam_rejects_unknown_or_flat_layer():
    model = tiny_cnn(size=32)
    with pytest.raises(ValueError, match=r"has no layer 'conv9'; its last layers are"):
        GradCam(model, "conv9")
    gap = model.layers[-4].name
    with pytest.raises(ValueError, match=rf"layer '{gap}' must output \(batch, h, w, channels\)"):
        GradCam(model, gap)


def test_upsample_keeps_constant_maps_and_non_negativity():
    cams = np.stack([np.full((4, 4), 2.0), np.eye(4)]).astype(np.float32)
    up = upsample_cams(cams, 16)
    assert up.shape == (2, 16, 16)
    np.testing.assert_allclose(up[0], 2.0, rtol=1e-6)
    assert up.min() >= 0 and up[1].max() > 0.5


def test_mass_fraction_counts_positive_mass_in_region():
    cams = np.zeros((3, 4, 4))
    cams[0, 0, 0] = 3.0  # all mass in the corner
    cams[0, 2, 2] = -5.0  # negative values are not mass
    cams[1] = 1.0  # uniform: fraction = region area
    region = np.zeros((4, 4), bool)
    region[0, :] = True
    fractions = mass_fraction(cams, region)
    np.testing.assert_allclose(fractions[:2], [1.0, 0.25])
    assert np.isnan(fractions[2])  # no positive mass: undefined, not 0
    per_image = np.stack([region, ~region, region])
    np.testing.assert_allclose(mass_fraction(cams, per_image)[:2], [1.0, 0.75])


def test_mass_fraction_rejects_mismatched_regions():
    with pytest.raises(ValueError, match=r"regions shape \(3, 3\) does not match"):
        mass_fraction(np.ones((2, 4, 4)), np.ones((3, 3)))


def test_zone_enrichment_locates_a_corner_and_is_one_when_uniform():
    cams = np.zeros((3, 7, 7))
    cams[0, 0, 6] = 1.0  # all mass in the top-right corner cell
    cams[1] = 1.0
    zones = zone_enrichment(cams)
    assert zones[0, ZONES.index("top-right")] == pytest.approx(49.0)
    assert np.nansum(zones[0]) == pytest.approx(49.0)
    np.testing.assert_allclose(zones[1], 1.0)
    assert np.isnan(zones[2]).all()
    assert zone_enrichment(cams, width=2)[0, ZONES.index("top-right")] == pytest.approx(49 / 4)


def test_zone_enrichment_rejects_a_band_wider_than_the_map():
    with pytest.raises(ValueError, match=r"maps of 3x3 cells are too small for a 2-cell band"):
        zone_enrichment(np.ones((1, 3, 3)), width=2)
