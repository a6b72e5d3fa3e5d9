"""site.image on the real, source-confounded set (../shared/data/cxr-real), when present.

A stratified subset keeps it to a few minutes: frozen ImageNet MobileNetV2 (alpha 0.35)
features of 240 images shown four ways.
"""

from dataclasses import replace

import numpy as np
import pytest

from audit.data.images import load_dataset
from probes.checks import site_image
from tests.conftest import MOBILENET_V2_035, REAL_DATA
from tests.probe_fixtures import make_context, stratified_splits

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def _subset(dataset, per_source: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(dataset.sources == s), per_source, replace=False)
        for s in np.unique(dataset.sources)]))
    return replace(dataset, manifest=dataset.manifest.iloc[rows].reset_index(drop=True),
                   images=np.asarray(dataset.images[rows]), masks=np.asarray(dataset.masks[rows]),
                   has_mask=np.asarray(dataset.has_mask)[rows])


@pytest.mark.skipif(not (REAL_DATA.exists() and MOBILENET_V2_035.exists()),
                    reason="needs ../shared/data/cxr-real and the MobileNetV2 0.35 weights")
def test_site_image_finds_the_sources_of_real_radiographs(tmp_path):
    from models.features import FeatureSpec, frozen_features

    dataset = _subset(load_dataset(REAL_DATA, image_size=128), per_source=60, seed=0)
    spec = FeatureSpec("mobilenetv2", weights=str(MOBILENET_V2_035), alpha=0.35, input_size=128)

    def features(images):
        return frozen_features(np.ascontiguousarray(images), spec)

    context = make_context(dataset, stratified_splits(dataset, 0), tmp_path, features=features)
    result = site_image.run(context)
    # hannover has no masks: the headline compares the three sources that do
    assert result.details["headline_input"] == "lungs_removed"
    assert result.metric > 0.5 and result.p_value < 0.05
    assert any("rows without a lung mask left out" in note for note in result.notes)
