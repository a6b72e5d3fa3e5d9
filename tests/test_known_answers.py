"""The audit's own known answer, end to end through ``cxr-audit run`` (slow; needs
../shared/weights).

Phantoms whose every label comes from its own source (confounding 1), whose sources differ
by placed traits (a burned-in marker in a source-specific corner, border bars or a frame)
and which carry no disease signal at all: whatever a model gets right here, it gets right
by a shortcut. The audit must say so: the confounding, the source readable with the lungs
removed, Grad-CAM mass on the border and outside the lungs, and a failing verdict.

Measured on this set at phantom seed 1 (MobileNetV2 0.35, ImageNet weights): Cramér's V 1,
source skill 1.00 from lungs-removed images, border enrichment 1.18 (p = 2e-5 after Holm),
outside-lung enrichment 1.15 (p = 2e-5). Without the site's exposure profile the model
has nowhere to look but the placed traits; with it (the demo's phantoms) models often read
the exposure of the mediastinum instead, which Grad-CAM's 32-pixel cells cannot tell from
the lungs beside it, and only the image-level checks find that shortcut (README, Known
answers).
"""

from __future__ import annotations

import pytest
import yaml

from audit.core.result import AuditResult
from probes.base import Status
from tests.conftest import MOBILENET_V2_035, WEIGHTS_DIR, cxr_audit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MOBILENET_V2_035.is_file(), reason="needs ../shared/weights"),
]

SHORTCUT_ONLY = {
    "data": {"synth": {"n_per_class": 10, "image_size": 224, "signal_strength": 0.0,
                       "confounding": 1.0, "seed": 1,
                       "site_traits": {"markers": True, "borders": True, "intensity": False}},
             "image_size": 224, "test_fraction": 0.5, "n_folds": 2},
    "segmentation": {"source": "manifest"},
    "models": {"alpha": 0.35, "weights": "imagenet", "weights_dirs": [str(WEIGHTS_DIR)],
               "epochs": 40, "augmented_views": 0, "training_path": "cached",
               "cross_validate": False},
    "probes": {"n_permutations": 480, "n_bootstrap": 200, "ablation_sizes": [5, 10],
               "ablation_seeds": [0]},
}


def test_shortcut_only_phantoms_fail_on_confounding_site_and_attention(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(SHORTCUT_ONLY))
    code = cxr_audit(monkeypatch, "run", str(config), "--out", str(tmp_path / "run"))
    result = AuditResult.load_json(tmp_path / "run" / "summary.json")
    assert (code, result.verdict) == (1, "fail")
    status = {check.check_id: check.status for check in result.checks}
    for check_id in ("data.confounding", "site.image", "attention.border",
                     "attention.outside_lung"):
        assert status[check_id] == Status.FAIL, (check_id, result.check(check_id).summary)
    site = result.check("site.image")
    assert site.details["headline_input"] == "lungs_removed" and site.metric > 0.8
    border = result.check("attention.border")
    assert border.ci[0] > 1.05  # measured 1.18 (95% CI 1.15-1.20)
    # The lung-masked twin cannot see the traits: its CAMs leave the border.
    twin = border.details["lung_masked_comparison"]
    assert twin["masked_enrichment"] < twin["raw_enrichment"]
