"""Fault injection into the stage cache: a stage whose files were edited, truncated,
replaced or deleted is named, moved aside and recomputed, never read back.

The first part corrupts stages of a bare ``StageCache``; the second corrupts each kind of
stage of a tiny synthetic audit (the one ``tests/test_resume.py`` kills), reruns it and
expects the summary of the clean run, also when resumed from another working directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from audit.core.cache import MANIFEST_FILE, QUARANTINE_FOLDER, SMALL_FILE_BYTES, StageCache
from audit.core.config import load_config
from audit.core.progress import log
from audit.pipeline import run_audit
from tests.conftest import MOBILENET_V2_035
from tests.test_resume import summary_numbers, write_config

BIG = SMALL_FILE_BYTES // 8 + 1  # float64 values: an array just over the small-file size


def save_arrays(values: dict[str, np.ndarray]):
    def compute(folder: Path) -> None:
        for name, array in values.items():
            np.save(folder / f"{name}.npy", array)

    return compute


@pytest.fixture
def warnings_logged():
    """The messages of the warnings the tool logs while the test runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    log.addHandler(handler)
    yield lambda: [record.getMessage() for record in records]
    log.removeHandler(handler)


def flip_digits(text: str) -> str:
    """``text`` with every digit changed, so the same number of bytes says something else."""
    return "".join(str((int(c) + 5) % 10) if c.isdigit() else c for c in text)


def quarantined(cache_root: Path) -> list[str]:
    folder = cache_root / QUARANTINE_FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ----------------------------------------------------------------------- a bare cache


def test_a_small_file_edited_to_the_same_size_is_caught(tmp_path, warnings_logged):
    cache = StageCache(tmp_path)
    compute = save_arrays({"value": np.asarray([0.97])})
    folder = cache.run("probe", {"k": 1}, compute)
    stored = folder / "value.npy"
    edited = stored.read_bytes().replace(np.asarray([0.97]).tobytes(),
                                         np.asarray([0.01]).tobytes())
    stored.write_bytes(edited)
    os.utime(stored, ns=(0, json.loads((folder / MANIFEST_FILE).read_text())
                         ["files"]["value.npy"]["mtime_ns"]))  # even with its old time

    again = StageCache(tmp_path).run("probe", {"k": 1}, compute)
    assert np.load(again / "value.npy")[0] == 0.97
    (warning,) = warnings_logged()
    assert "stage probe" in warning and "value.npy: content differs" in warning
    assert quarantined(tmp_path)[0].startswith("probe-")
    moved = tmp_path / QUARANTINE_FOLDER / quarantined(tmp_path)[0] / "value.npy"
    assert np.load(moved)[0] == 0.01  # kept for inspection, not deleted


def test_a_truncated_large_file_is_caught_by_its_size(tmp_path, warnings_logged):
    compute = save_arrays({"features": np.arange(BIG, dtype=np.float64)})
    folder = StageCache(tmp_path).run("features", {"k": 1}, compute)
    size = (folder / "features.npy").stat().st_size
    os.truncate(folder / "features.npy", size // 2)

    cache = StageCache(tmp_path)
    again = cache.run("features", {"k": 1}, compute)
    assert np.load(again / "features.npy").shape == (BIG,)
    assert [event.action for event in cache.events] == ["computed"]
    assert f"features.npy: {size // 2} bytes, {MANIFEST_FILE} records {size}" in warnings_logged()[0]


def test_a_large_file_rewritten_in_place_is_hashed_and_verify_hashes_every_file(tmp_path):
    compute = save_arrays({"model": np.arange(BIG, dtype=np.float64)})
    folder = StageCache(tmp_path).run("classifier", {"k": 1}, compute)
    stored = folder / "model.npy"
    recorded = json.loads((folder / MANIFEST_FILE).read_text())["files"]["model.npy"]
    np.save(stored, np.zeros(BIG))  # same size, new content, new modification time
    assert "content differs" in StageCache(tmp_path).problem(folder)

    os.utime(stored, ns=(0, recorded["mtime_ns"]))  # hidden from the cheap check...
    assert StageCache(tmp_path).problem(folder) is None
    assert "content differs" in StageCache(tmp_path, verify=True).problem(folder)  # not this


def test_a_stage_without_manifest_or_with_an_added_file_is_recomputed(tmp_path):
    cache = StageCache(tmp_path)
    compute = save_arrays({"value": np.asarray([1])})
    folder = cache.run("images", {"k": 1}, compute)
    (folder / "extra.npy").write_bytes(b"x")
    assert "extra.npy: not listed" in StageCache(tmp_path).problem(folder)
    folder = StageCache(tmp_path).run("images", {"k": 1}, compute)
    (folder / MANIFEST_FILE).unlink()  # as older code left its stages
    assert "no .stage.json" in StageCache(tmp_path).problem(folder)
    again = StageCache(tmp_path)
    again.run("images", {"k": 1}, compute)
    assert [event.action for event in again.events] == ["computed"]
    assert len(quarantined(tmp_path)) == 2


def test_a_reused_stage_that_does_not_load_is_recomputed_once(tmp_path, warnings_logged):
    compute = save_arrays({"value": np.asarray([3])})
    StageCache(tmp_path).run("record", {"k": 1}, compute)
    loads: list[Path] = []

    def load_after_first_failure(folder: Path) -> int:
        loads.append(folder)
        if len(loads) == 1:
            raise ValueError("points at a stage that is gone")
        return int(np.load(folder / "value.npy")[0])

    cache = StageCache(tmp_path)
    assert cache.run_and_load("record", {"k": 1}, compute, load_after_first_failure) == 3
    assert [event.action for event in cache.events] == ["reused", "computed"]
    assert "stage record" in warnings_logged()[0]
    assert "does not load (ValueError: points at a stage that is gone)" in warnings_logged()[0]


def test_a_computed_stage_that_does_not_load_raises_and_is_moved_aside(tmp_path):
    def broken_load(folder: Path) -> None:
        raise ValueError("cannot parse")

    cache = StageCache(tmp_path)
    with pytest.raises(ValueError, match="cannot parse"):
        cache.run_and_load("record", {"k": 1}, save_arrays({"v": np.zeros(1)}), broken_load)
    assert [event.action for event in cache.events] == ["computed"]  # not computed twice
    assert quarantined(tmp_path)[0].startswith("record-")
    assert not any(p.is_dir() for p in (tmp_path / "record").iterdir())


# -------------------------------------------------------------- a tiny synthetic audit

needs_weights = pytest.mark.skipif(not MOBILENET_V2_035.is_file(),
                                   reason=f"ImageNet weights {MOBILENET_V2_035} not present")


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A clean run of the tiny audit, started from its own folder with a relative
    ``--out`` (so a record relative to the working directory would not resolve from
    elsewhere): the run folder and its summary numbers."""
    folder = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_audit(load_config(write_config(folder)), Path("run"))
    return folder / "run", summary_numbers(folder / "run")


def stage_files(cache: Path, stage: str, name: str) -> list[Path]:
    return sorted((cache / stage).glob(f"[!.]*/{name}"))


def edit_probe_result(cache: Path) -> str:
    """A probe's metric rewritten to another number of the same length (0.97 -> 0.42)."""
    for path in stage_files(cache, "probe", "result.json"):
        value = json.loads(path.read_text())["metric"]
        if isinstance(value, float):
            text = path.read_text()
            written = f'"metric": {json.dumps(value)}'
            path.write_text(text.replace(written, flip_digits(written)))
            assert path.stat().st_size == len(text)
            return "probe"
    raise AssertionError("no probe result with a number")


def truncate(stage: str, name: str):
    def corrupt(cache: Path) -> str:
        path = stage_files(cache, stage, name)[0]
        os.truncate(path, path.stat().st_size // 2)
        return stage

    return corrupt


def truncate_features(cache: Path) -> str:
    """Every ``features.npy`` truncated (which feature stages the probes read depends on
    the stage keys, so not one picked by its folder name), with the probe results deleted
    so that the probes ask for features again (a reused probe result reads none)."""
    for path in stage_files(cache, "features", "features.npy"):
        os.truncate(path, path.stat().st_size // 2)
    shutil.rmtree(cache / "probe")
    return "features"


def overwrite_a_grid_model(cache: Path) -> str:
    """A model the grid trained, overwritten with as many bytes of noise."""
    record = json.loads(stage_files(cache, "grid_job", "result.json")[0].read_text())
    path = cache / record["path"] / "model.keras"
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    return "classifier"


@needs_weights
@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [edit_probe_result, truncate("images", "images.npy"),
                                     truncate("images", "masks.npy"),
                                     truncate_features,
                                     overwrite_a_grid_model],
                         ids=["probe result", "images", "masks", "features", "model"])
def test_a_corrupted_stage_is_recomputed_to_the_clean_summary(audited, corrupt,
                                                              warnings_logged):
    run_dir, clean = audited
    stage = corrupt(run_dir / "cache")
    rerun = run_audit(load_config(run_dir.parent / "config.yaml"), run_dir)
    assert summary_numbers(run_dir) == clean
    assert rerun.provenance["stages"]["computed"] >= 1
    assert any(f"stage {stage} key" in message and "recomputing" in message
               for message in warnings_logged()), warnings_logged()


@needs_weights
@pytest.mark.slow
def test_a_run_resumes_from_another_working_directory(audited, tmp_path, monkeypatch):
    run_dir, clean = audited
    monkeypatch.chdir(tmp_path)
    rerun = run_audit(load_config(run_dir.parent / "config.yaml"), run_dir.resolve())
    assert rerun.provenance["stages"]["computed"] == 0
    assert summary_numbers(run_dir) == clean


@needs_weights
@pytest.mark.slow
def test_a_classifier_stage_deleted_by_hand_is_retrained(audited, warnings_logged):
    run_dir, clean = audited
    record = json.loads(stage_files(run_dir / "cache", "grid_job", "result.json")[0].read_text())
    shutil.rmtree(run_dir / "cache" / record["path"])
    run_audit(load_config(run_dir.parent / "config.yaml"), run_dir)
    assert summary_numbers(run_dir) == clean
    assert (run_dir / "cache" / record["path"]).is_dir()
    assert any("stage grid_job key" in message and f"{record['path']}: missing" in message
               for message in warnings_logged()), warnings_logged()


def test_unet_weights_that_do_not_load_are_moved_aside_and_retrained(tmp_path,
                                                                     warnings_logged):
    from audit.core.config import SegmentationConfig
    from models.unet_training import WEIGHTS_FILE, train_unet
    from tests.unet_fixtures import phantom_dataset

    config = SegmentationConfig(image_size=64, epochs=1, batch_size=4, patience=1)
    first = train_unet(phantom_dataset(), config, StageCache(tmp_path))
    (weights,) = stage_files(tmp_path, "unet", WEIGHTS_FILE)
    recorded = os.stat(weights)
    weights.write_bytes(bytes(recorded.st_size))  # same size, and the old time below:
    os.utime(weights, ns=(recorded.st_atime_ns, recorded.st_mtime_ns))  # only loading fails

    cache = StageCache(tmp_path)
    again = train_unet(phantom_dataset(), config, cache)
    assert [event.action for event in cache.events] == ["reused", "computed"]
    assert again.quality.keys() == first.quality.keys()
    assert any("stage unet key" in message and "does not load" in message
               for message in warnings_logged()), warnings_logged()
