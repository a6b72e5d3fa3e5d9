"""What a run checks before any work: weights files that do not exist stop it (exit 2),
weights folders that do not exist are warned about with the file names Keras expects."""

from __future__ import annotations

import yaml

from audit import pipeline
from audit.core import progress
from audit.core.config import parse_config
from models.backbones import keras_weights_file_name
from tests.test_cli import run_cli


def test_a_missing_weights_file_exits_2_naming_it_before_any_stage(monkeypatch, capsys,
                                                                    tmp_path):
    config = tmp_path / "copied" / "config.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"models": {"weights": "weights/backbone.h5"}}))
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "run", str(config), "--out", str(out))
    assert code == 2
    assert "models.weights" in err and str(config.parent / "weights" / "backbone.h5") in err
    assert not (out / "cache").exists()  # nothing decoded, trained or cached


def test_a_missing_weights_folder_is_a_warning_naming_the_files_keras_expects(capsys,
                                                                              tmp_path):
    missing = tmp_path / "no-such-folder"
    config = parse_config({"data": {"image_size": 160},
                           "models": {"backbones": ["mobilenetv2", "resnet50"], "alpha": 0.35,
                                      "weights_dirs": [str(missing), str(tmp_path)]}})
    progress.configure()
    try:
        pipeline.check_weights(config)
    finally:
        progress.configure()
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and str(missing) in warnings[0]  # the existing folder is fine
    for backbone, size in (("mobilenetv2", 160), ("mobilenetv2", 224), ("resnet50", 160)):
        assert keras_weights_file_name(backbone, 0.35, size) in warnings[0]


def test_weights_folders_are_not_searched_without_imagenet_weights(capsys, tmp_path):
    config = parse_config({"models": {"weights": "none",
                                      "weights_dirs": [str(tmp_path / "absent")]}})
    progress.configure()
    try:
        pipeline.check_weights(config)
    finally:
        progress.configure()
    assert capsys.readouterr().err == ""
