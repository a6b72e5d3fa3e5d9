"""``benchmarks.single_source_marker``'s marking: the marker lies in the border band and is
burned into the chosen share of the target class only, nothing else changed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.core.config import SynthConfig
from audit.data.phantoms import generate_phantoms
from benchmarks.real_planted import PLANTED_SHARE
from benchmarks.single_source_marker import SYNTH, mark_copy, marker_outside_band
from models.inputs import border_band


@pytest.mark.parametrize("size", [64, 128, 224, 256])
def test_marker_lies_in_the_default_band(size):
    assert marker_outside_band(size, 0.10) == 0


def test_a_narrower_band_is_refused(tmp_path):
    assert marker_outside_band(224, 0.05) > 0
    generate_phantoms(SynthConfig(**{**SYNTH, "n_per_class": 2, "image_size": 64}),
                      tmp_path / "unmarked")
    with pytest.raises(ValueError, match="leaves the 0.05 band"):
        mark_copy(tmp_path / "unmarked", tmp_path / "marked", "covid", 0, 0.05)


def test_marker_only_on_the_chosen_target_rows(tmp_path):
    size = 64
    generate_phantoms(SynthConfig(**{**SYNTH, "n_per_class": 10, "image_size": size}),
                      tmp_path / "unmarked")
    names = mark_copy(tmp_path / "unmarked", tmp_path / "marked", "covid", 3, 0.10)
    table = pd.read_csv(tmp_path / "unmarked" / "manifest.csv")
    assert len(names) == round(PLANTED_SHARE * 10) == 8
    band = border_band(size, 0.10)
    changed = []
    for path, label in zip(table["path"], table["label"], strict=True):
        before = np.asarray(Image.open(tmp_path / "unmarked" / path))
        after = np.asarray(Image.open(tmp_path / "marked" / path))
        differs = before != after
        if differs.any():
            changed.append(path.split("/")[-1])
            assert label == "covid"
            assert not (differs & ~band).any()
            assert (after[differs] == 255).all()
    assert changed == names
    # another seed marks another subset of the same images
    other = mark_copy(tmp_path / "unmarked", tmp_path / "marked2", "covid", 4, 0.10)
    assert len(other) == 8 and other != names
