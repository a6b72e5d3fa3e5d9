"""ablation.class_size: size scaling, a planted size-dependent model, and clean phantoms."""

import numpy as np
import pytest

from probes.ablation import glm_change, planned_sizes
from probes.base import Status
from probes.checks import ablation_class_size
from tests.probe_fixtures import fires, judged_status, make_context, synth_data


def test_planned_sizes_used_as_given_when_the_data_has_them():
    plans, notes = planned_sizes({"normal": 3000, "other": 2500}, [2000, 1000])
    assert plans == [{"normal": 1000, "other": 1000}, {"normal": 2000, "other": 2000}]
    assert notes == []


def test_planned_sizes_scaled_to_small_data_with_a_note():
    plans, notes = planned_sizes({"normal": 40, "other": 30}, [1000, 2000])
    assert plans == [{"normal": 20, "other": 15}, {"normal": 40, "other": 30}]
    assert "mapped to fractions [0.5, 1.0]" in notes[0]


def _exclusion_scores(dataset, request) -> np.ndarray:
    """Probabilities that call a COVID image COVID with a chance growing with the other
    classes' size in the training rows: the paper's pattern, planted without any images."""
    n_others = int(np.sum(dataset.labels[list(request.train_rows)] != 0))
    rng = np.random.default_rng([request.seed, n_others])
    n_rows = len(request.score_rows)
    hit = rng.random(n_rows) < 0.5 + 0.45 * min(1.0, n_others / 60)
    proba = np.zeros((n_rows, 4))
    proba[np.arange(n_rows), np.where(hit, 0, 1)] = 1
    return proba


def _exclusion_context(tmp_path):
    dataset, splits = synth_data(0.0, False, seed=0, n_per_class=15)
    context = make_context(dataset, splits, tmp_path, ablation_sizes=[500, 1000, 2000])

    def train_variants(requests):
        return [_exclusion_scores(dataset, request) for request in requests]

    context.train_variants = train_variants
    return context


def test_fires_on_a_planted_size_dependence(tmp_path):
    result = ablation_class_size.run(_exclusion_context(tmp_path))
    assert fires(result)
    assert result.metric > 0.2 and result.ci[0] > 0  # planted: recall grows with the others
    assert len(result.tables["runs"]) == 9  # 3 sizes x 3 seeds
    assert "mapped to fractions" in result.notes[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_quiet_on_clean_phantoms(tmp_path, seed):
    dataset, splits = synth_data(0.0, False, seed=seed, n_per_class=15)
    result = ablation_class_size.run(make_context(dataset, splits, tmp_path))
    assert result.status == Status.MEASURED
    assert judged_status(result) == Status.PASS


def test_not_run_without_retraining(tmp_path):
    context = make_context(*synth_data(0.0, False, seed=0, n_per_class=3), tmp_path)
    context.train_variants = None
    result = ablation_class_size.run(context)
    assert result.status == Status.NOT_RUN and "needs retraining" in result.reason


def test_glm_change_has_a_finite_ci_when_every_image_is_judged_the_same_way():
    # 12 COVID test images, 4 models (2 sizes x 2 seeds); each image is always right or
    # always wrong, so the image-clustered variance is degenerate (the demo hit this: nan CI).
    always_right = np.arange(12) < 8
    x = np.repeat([0.5, 0.5, 1.0, 1.0], 12)
    correct = np.tile(always_right, 4)
    image = np.tile(np.arange(12), 4)
    change, (low, high), p_value, notes = glm_change(x, correct, image)
    assert change == pytest.approx(0.0, abs=1e-9)
    assert np.isfinite([low, high, p_value]).all()
    assert low < 0 < high and p_value > 0.5
    assert "model-based covariance" in notes[0]
