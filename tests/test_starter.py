"""``cxr-audit init``: the starter config names what the manifest holds and loads as is."""

from __future__ import annotations

import pytest

from audit.core.config import load_config
from audit.data.starter import guess_class, starter_config
from tests.conftest import cxr_audit
from tests.data_fixtures import distinct_image, write_manifest, write_png


@pytest.mark.parametrize(("label", "expected"), [
    ("COVID-19", "covid"), ("Normal", "normal"), ("no finding", "normal"), ("TB", "opacity"),
    ("Viral Pneumonia", "opacity"), ("nodule", "other"), ("stb", "other"),
    ("abnormal", "other"), ("unhealthy", "other"),
])
def test_labels_are_guessed_from_their_names(label, expected):
    assert guess_class(label) == expected


def manifest_with(tmp_path, rows):
    for row in rows:
        write_png(tmp_path / row["path"], distinct_image(len(row["path"]), 64))
    return write_manifest(tmp_path, rows)


def test_starter_config_maps_unknown_labels_and_loads_back(tmp_path):
    path = manifest_with(tmp_path, [
        {"path": "a.png", "label": "TB", "source": "s1", "patient_id": "p1"},
        {"path": "b.png", "label": "normal", "source": "s2", "patient_id": ""},
    ])
    text = starter_config(path)
    assert "2 images, 2 labels, 2 sources, 0 lung masks, 1 patient ids" in text
    assert "labels found: TB 1, normal 1" in text
    assert "1 image(s) have no patient id" in text
    assert "no lung masks: the segmenter shipped with the package" in text
    config_path = tmp_path / "config.yaml"
    config_path.write_text(text)
    config = load_config(config_path)
    assert config.data.label_map == {"TB": "opacity"}
    assert config.data.manifest == path.resolve()
    assert config.segmentation.source == "pretrained"


def test_init_writes_the_file_and_refuses_to_overwrite(monkeypatch, tmp_path):
    path = manifest_with(tmp_path, [{"path": "a.png", "label": "covid", "source": "s1",
                                     "mask_path": "a.png"}])
    out = tmp_path / "starter.yaml"
    assert cxr_audit(monkeypatch, "init", str(path), "--out", str(out)) == 0
    assert "every image has a lung mask" in out.read_text()
    assert "One source only" in out.read_text()
    assert cxr_audit(monkeypatch, "init", str(path), "--out", str(out)) == 2
    assert cxr_audit(monkeypatch, "init", str(path), "--out", str(out), "--force") == 0


@pytest.mark.parametrize(("labels", "target", "why"), [
    ({"COVID-19": 2, "normal": 3}, "covid", None),
    ({"normal": 3, "TB": 2}, "opacity", "no covid label: the one class that is not normal."),
    ({"normal": 3, "TB": 2, "nodule": 1}, "other",
     "no covid label: the rarest class that is not normal (other 1, opacity 2)"),
    ({"normal": 2}, "normal", None),
])
def test_starter_target_class_is_covid_or_a_class_that_is_not_normal(tmp_path, labels, target,
                                                                     why):
    """The starter's probes.target_class is a class of the data, so the run accepts it."""
    from audit.pipeline import check_target_class

    path = manifest_with(tmp_path, [
        {"path": f"{label}_{i}.png", "label": label, "source": f"s{i % 2}"}
        for label, count in labels.items() for i in range(count)])
    config_path = tmp_path / "config.yaml"
    text = starter_config(path)
    config_path.write_text(text)
    config = load_config(config_path)
    assert config.probes.target_class == target
    assert (why is None) == ("no covid label" not in text)
    assert why is None or why in text
    check_target_class(config)
