"""Config validation at the door: settings that would crash or silently mislead later are
rejected when the file is read, naming the key, what was expected and what arrived."""

from __future__ import annotations

import pytest

from audit.core.config import load_config
from audit.core.errors import InputError


@pytest.mark.parametrize(("text", "message"), [
    ("models:\n  backbones: []\n", r"models.backbones: List should have at least 1 item"),
    ("models:\n  seeds: []\n", r"models.seeds: List should have at least 1 item"),
    ("models:\n  input_modes: []\n", r"models.input_modes: List should have at least 1 item"),
    ("models:\n  input_modes: [lung_masked]\n",
     r"models: Value error, input_modes must include 'raw'.*got \['lung_masked'\]"),
    ("models:\n  epochs: true\n", r"models.epochs: Input should be a valid integer \(got True\)"),
    ("models:\n  epochs: 2.5\n", r"models.epochs: Input should be a valid integer \(got 2.5\)"),
    ("models:\n  seeds: [yes]\n", r"models.seeds.0: Input should be a valid integer"),
    ("models:\n  cross_validate: 'yes'\n", r"models.cross_validate: Input should be a valid boolean"),
    ("policy:\n  checks:\n    site.image: {threshold: .inf}\n",
     r"policy.checks.site.image.threshold: Input should be a finite number"),
    ("policy:\n  checks:\n    site.image: {threshold: .nan}\n",
     r"policy.checks.site.image.threshold: Input should be a finite number"),
    ("policy:\n  checks:\n    site.image: {required: 'yes'}\n",
     r"policy.checks.site.image.required: Input should be a valid boolean"),
    ("probes:\n  n_permutations: true\n", r"probes.n_permutations: Input should be a valid integer"),
])
def test_settings_that_would_mislead_later_are_rejected_naming_the_key(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_a_config_that_is_not_utf8_is_named_with_the_offending_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    before = "data:\n  label_map: {b"
    path.write_bytes(f"{before}ésame: covid}}\n".encode("latin-1"))
    with pytest.raises(InputError, match=rf"latin1.yaml: a config file must be UTF-8 text; "
                                         rf"byte {len(before)} is not"):
        load_config(path)


def test_valid_settings_still_load(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  input_modes: [raw]\n  seeds: [0, 1]\n  learning_rate: 1e-3\n"
                    "policy:\n  checks:\n    site.image: {threshold: 0.3, required: false}\n")
    config = load_config(path)
    assert config.models.seeds == [0, 1]
    assert config.policy.checks["site.image"].required is False
