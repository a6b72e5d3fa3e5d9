"""The phantom generator: counts, exact masks, where signal and traits live, determinism, PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import f_oneway

from audit.core.cache import stable_hash
from audit.core.config import CLASSES, SiteTraits, SynthConfig
from audit.data.hashing import (
    NEAR_DUPLICATE_DISTANCE,
    NEAR_DUPLICATE_HASH_SIZE,
    dhash,
    near_duplicate_pairs,
    pack_hashes,
)
from audit.data.images import load_dataset
from audit.data.phantoms import (
    generate_phantoms,
    label_source_counts,
    make_phantoms,
    plant_marker,
    source_names,
    synthetic_dataset,
)

TRAITS_OFF = SiteTraits(markers=False, borders=False, intensity=False)


def small(**changes) -> SynthConfig:
    """A tiny config: 4 sources, 2 per class and source, 64 px."""
    return SynthConfig(**{"n_per_class": 2, "image_size": 64, "confounding": 0.0, **changes})


def table(phantoms) -> pd.DataFrame:
    return pd.crosstab(phantoms.manifest["label"], phantoms.manifest["source"])


def test_confounding_zero_balances_every_label_over_every_source():
    counts = table(make_phantoms(small(n_per_class=3)))
    assert counts.shape == (4, 4)
    assert (counts.to_numpy() == 3).all()


def test_confounding_one_puts_each_label_in_its_home_source_only():
    counts = table(make_phantoms(small(n_per_class=3, confounding=1.0)))
    assert sorted(counts.index) == sorted(CLASSES) and list(counts.columns) == source_names(4)
    home = {"covid": "site_a", "opacity": "site_b", "other": "site_c", "normal": "site_d"}
    for label, source in home.items():
        assert counts.loc[label, source] == 12
        assert counts.loc[label].sum() == 12


def test_partial_confounding_and_fewer_sources_follow_the_documented_rule():
    # 7 per class and source, 4 sources: 28 per class; home share 1/4 + 0.5 * 3/4 -> 17.5 -> 18
    counts = label_source_counts(small(n_per_class=7, confounding=0.5))
    assert counts[0].tolist() == [18, 4, 3, 3]
    assert counts[3].tolist() == [4, 3, 3, 18]
    assert (counts.sum(axis=1) == 28).all()
    # 2 sources: labels 0 and 2 live at site_a, 1 and 3 at site_b
    two = label_source_counts(small(n_sources=2, confounding=1.0))
    assert two.tolist() == [[4, 0], [0, 4], [4, 0], [0, 4]]


def test_manifest_columns_and_relative_paths():
    manifest = make_phantoms(small()).manifest
    assert list(manifest.columns) == ["path", "mask_path", "label", "source", "patient_id", "view"]
    first = manifest.iloc[0]
    assert first["path"] == f"images/{first['source']}/00000.png"
    assert first["mask_path"] == f"masks/{first['source']}/00000.png"
    assert manifest["patient_id"].is_unique
    assert set(manifest["view"]) == {"PA"}


def test_masks_are_binary_and_plausible_lungs():
    phantoms = make_phantoms(small())
    assert phantoms.images.dtype == np.uint8 and phantoms.masks.dtype == np.uint8
    assert set(np.unique(phantoms.masks)) == {0, 1}
    lung_fraction = phantoms.masks.mean(axis=(1, 2))
    assert ((lung_fraction > 0.12) & (lung_fraction < 0.4)).all()
    # lungs are darker than the rest of the body on average
    inside = phantoms.images[phantoms.masks == 1].mean()
    assert inside < phantoms.images[:, 20:44, 28:36].mean()  # mediastinum column


def test_anatomy_is_the_same_whatever_the_label_source_signal_or_traits():
    # Masks depend only on the seed and row, so silhouettes cannot carry label or source.
    reference = make_phantoms(small()).masks
    changes = ({"confounding": 1.0}, {"signal_strength": 2.0}, {"site_traits": TRAITS_OFF})
    for changed in (small(**change) for change in changes):
        np.testing.assert_array_equal(make_phantoms(changed).masks, reference)


def test_class_signal_is_exactly_zero_outside_the_lungs():
    with_signal = make_phantoms(small(signal_strength=1.5))
    without = make_phantoms(small(signal_strength=0.0))
    outside = with_signal.masks == 0
    np.testing.assert_array_equal(with_signal.images[outside], without.images[outside])
    difference = np.abs(with_signal.images.astype(int) - without.images).sum(axis=(1, 2))
    is_normal = (with_signal.manifest["label"] == "normal").to_numpy()
    assert (difference[is_normal] == 0).all()
    assert (difference[~is_normal] > 0).all()


def test_site_traits_are_exactly_zero_inside_the_lungs():
    with_traits = make_phantoms(small())
    without = make_phantoms(small(site_traits=TRAITS_OFF))
    inside = with_traits.masks == 1
    np.testing.assert_array_equal(with_traits.images[inside], without.images[inside])
    changed_outside = (with_traits.images != without.images) & ~inside
    assert changed_outside.any(axis=(1, 2)).all()


@pytest.mark.parametrize("trait", ["markers", "borders", "intensity"])
def test_each_trait_switch_changes_only_its_own_part(trait):
    only = make_phantoms(small(site_traits=SiteTraits(**{**TRAITS_OFF.model_dump(), trait: True})))
    base = make_phantoms(small(site_traits=TRAITS_OFF))
    changed = only.images != base.images
    assert changed.any(axis=(1, 2)).all()
    assert not (changed & (only.masks == 1)).any()
    share = changed.mean()
    if trait == "markers":  # a small glyph per image
        assert share < 0.02
    elif trait == "borders":  # edge bands only: the centre is untouched
        assert not changed[:, 16:48, 16:48].any()
    else:  # the whole outside of the lungs
        assert share > 0.3


@pytest.mark.parametrize("seed", range(3))
def test_sources_differ_outside_the_lungs_only_when_traits_are_on(seed):
    def source_effect_p_value(traits: SiteTraits) -> float:
        """One-way ANOVA of each image's mean gray level outside the lungs, by source."""
        phantoms = make_phantoms(small(n_per_class=8, seed=seed, site_traits=traits))
        outside = np.where(phantoms.masks == 0, phantoms.images, np.nan).reshape(32 * 4, -1)
        means = pd.Series(np.nanmean(outside, axis=1))
        return f_oneway(*[group for _, group in means.groupby(phantoms.manifest["source"])]).pvalue

    assert source_effect_p_value(SiteTraits()) < 1e-10
    assert source_effect_p_value(TRAITS_OFF) > 0.05


def test_no_two_phantoms_are_perceptual_near_duplicates():
    # Otherwise data.leakage would flag distinct synthetic patients as leaking.
    images = make_phantoms(small(n_per_class=8, confounding=0.5)).images
    hashes = pack_hashes([dhash(image, NEAR_DUPLICATE_HASH_SIZE) for image in images],
                         NEAR_DUPLICATE_HASH_SIZE)
    assert near_duplicate_pairs(hashes, NEAR_DUPLICATE_DISTANCE) == []


def test_deterministic_by_seed():
    first, again, other = (make_phantoms(small(seed=s)) for s in (3, 3, 4))
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.masks, again.masks)
    assert (first.images != other.images).mean() > 0.5


def test_synthetic_dataset_has_exact_masks_and_config_hash():
    config = small(confounding=1.0)
    dataset = synthetic_dataset(config)
    assert dataset.has_mask.all() and dataset.mask_origin == "manifest"
    assert dataset.manifest_hash == stable_hash(config)
    np.testing.assert_array_equal(dataset.masks, make_phantoms(config).masks)
    assert np.bincount(dataset.labels).tolist() == [8, 8, 8, 8]
    resized = synthetic_dataset(config, image_size=96)
    assert resized.images.shape == (32, 96, 96)
    assert resized.manifest_hash == stable_hash(config.model_copy(update={"image_size": 96}))


def test_generate_phantoms_round_trips_through_png(tmp_path):
    config = small(n_per_class=1)
    manifest_path = generate_phantoms(config, tmp_path / "out")
    assert manifest_path == tmp_path / "out" / "manifest.csv"
    manifest = pd.read_csv(manifest_path)
    phantoms = make_phantoms(config)
    pd.testing.assert_frame_equal(manifest, phantoms.manifest)
    def read(relative: str) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / "out" / relative))

    for row, (path, mask_path) in enumerate(zip(manifest["path"], manifest["mask_path"], strict=True)):
        np.testing.assert_array_equal(read(path), phantoms.images[row])
        np.testing.assert_array_equal(read(mask_path), phantoms.masks[row] * 255)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")}
    assert len(written) == 2 * len(manifest) and all(w.startswith("out/") for w in written)
    generate_phantoms(config, tmp_path / "out")  # overwrites its own files
    assert len(list(tmp_path.rglob("*.png"))) == 2 * len(manifest)


def test_generated_folder_loads_through_the_image_store_unchanged(tmp_path):
    config = small(n_per_class=1, confounding=0.5)
    dataset = load_dataset(generate_phantoms(config, tmp_path), config.image_size)
    phantoms = make_phantoms(config)
    assert dataset.quarantined.empty and dataset.has_mask.all()
    np.testing.assert_array_equal(dataset.images, phantoms.images)
    np.testing.assert_array_equal(dataset.masks, phantoms.masks)
    assert dataset.manifest["label"].tolist() == phantoms.manifest["label"].tolist()


def test_plant_marker_burns_a_square_off_the_lungs_of_the_chosen_rows():
    phantoms = make_phantoms(small())
    rows = np.array([0, 5])
    marked = plant_marker(phantoms.images, rows, corner="bottom_left", size_fraction=0.1, value=255)
    changed = marked != phantoms.images
    assert marked is not phantoms.images and not changed[np.setdiff1d(np.arange(32), rows)].any()
    square = marked[rows, 55:61, 3:9]  # 3 px (5%) in from the corner, 6 px side at 64 px
    assert (square == 255).all()
    assert not (changed & (phantoms.masks == 1)).any()
    assert (phantoms.images == make_phantoms(small()).images).all()  # input untouched


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"corner": "middle"}, "corner must be one of top_left, .*got 'middle'"),
    ({"size_fraction": 0.6}, r"size_fraction must be in \(0, 0.45\); got 0.6"),
])
def test_plant_marker_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plant_marker(np.zeros((2, 64, 64), np.uint8), np.array([0]), **kwargs)
