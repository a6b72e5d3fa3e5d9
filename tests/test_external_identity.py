"""Two external models of one backbone, one cache, the same data: each gets its own probe
results (issue 10's acceptance test; the probe stage once keyed models by file name, and
every external model's file is ``model.keras``)."""

from __future__ import annotations

import pytest
import yaml

from audit.core.config import parse_config
from audit.pipeline import audit_external

keras = pytest.importorskip("keras")

SPEC = {"input_size": 32, "channels": 3, "scaling": "0-1", "backbone": "tinynet",
        "classes": ["covid", "opacity", "other", "normal"]}


def _save_model(folder, seed: int):
    """A tiny ``tinynet`` classifier with weights drawn from ``seed``, as ``model.keras``."""
    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, kernel_initializer=initializer, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(4, activation="softmax", kernel_initializer=initializer,
                                 name="out")(x)
    folder.mkdir()
    keras.Model(inputs, outputs).save(folder / "model.keras")
    return folder / "model.keras"


def test_two_external_models_sharing_a_cache_get_their_own_probe_results(tmp_path):
    config = parse_config({
        "data": {"synth": {"n_per_class": 6, "image_size": 64, "confounding": 0.0,
                           "site_traits": {"markers": True, "borders": False,
                                           "intensity": True}},
                 "image_size": 64, "n_folds": 2},
        "segmentation": {"source": "manifest"},
        "models": {"weights": "none"},
        "probes": {"checks": ["site.embedding"], "n_permutations": 40, "n_bootstrap": 20},
        "runtime": {"cache_dir": str(tmp_path / "cache")},
    })
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    results = [audit_external(_save_model(tmp_path / name, seed), spec, config,
                              tmp_path / f"run-{name}")
               for name, seed in (("first", 1), ("second", 2))]

    checks = [result.check("site.embedding") for result in results]
    assert all(check.ran for check in checks), [check.reason for check in checks]
    assert checks[0].metric != checks[1].metric
    probe_stages = [result.provenance["stages"]["by_stage"]["probe"] for result in results]
    assert probe_stages == [{"reused": 0, "computed": 1}] * 2
