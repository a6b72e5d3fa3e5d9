"""Crash safety and backends at the pipeline level, on a tiny synthetic audit.

An uninterrupted run is the reference. A second run is killed with SIGKILL at several
points (while the first stage is being written, once the image store exists, once the
first classifier is trained, once the first probe result is stored), each time resuming
from what the previous attempts left in the cache; after every kill no finished stage
folder is incomplete, and the run that finally completes writes the same ``summary.json``
numbers as the reference. A rerun reuses every stage, and the Ray backend (a local
instance with 2 CPUs) gives the same numbers as the local one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from audit.core.config import load_config
from audit.pipeline import run_audit
from tests.conftest import MOBILENET_V2_035, WEIGHTS_DIR

TINY_AUDIT = {
    "data": {"synth": {"n_per_class": 4, "image_size": 96, "confounding": 1.0},
             "image_size": 96, "test_fraction": 0.25, "n_folds": 2},
    "segmentation": {"source": "manifest"},
    "models": {"alpha": 0.35, "weights": "imagenet", "weights_dirs": [str(WEIGHTS_DIR)],
               "epochs": 3, "dense_units": 16, "augmented_views": 0,
               "training_path": "cached", "cross_validate": False},
    "probes": {"checks": ["data.confounding", "site.image", "attention.border",
                          "masking.raw_vs_lung"],
               "cam_max_images": 8, "n_permutations": 160, "n_bootstrap": 20},
    "runtime": {"quiet": True},
}
# Real ImageNet weights: with ``weights: none`` two uninterrupted runs in separate
# processes already differed (the random backbone; the lung-masked classifier's
# predictions flipped between classes), so no two runs could be compared number for number.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not MOBILENET_V2_035.is_file(),
                                 reason=f"ImageNet weights {MOBILENET_V2_035} not present")]
KILL_TIMEOUT_S = 1800  # generous: the test machine may be shared and slow


def write_config(folder: Path, runtime: dict[str, Any] | None = None) -> Path:
    config = {**TINY_AUDIT, "runtime": {**TINY_AUDIT["runtime"], **(runtime or {})}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def summary_numbers(run_dir: Path) -> dict[str, Any]:
    """What a reviewer reads off ``summary.json``: verdict, every check, every model's
    metrics (minus where this run stored the model, which differs between runs)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    models = [{k: v for k, v in model.items() if k != "path"} for model in summary["models"]]
    return {"verdict": summary["verdict"], "checks": summary["checks"], "models": models}


def finished_stages(cache: Path) -> dict[str, list[Path]]:
    """Stage name -> its finished folders (temporary folders and lock files are not)."""
    return {stage.name: sorted(p for p in stage.iterdir() if p.is_dir() and p.name[0] != ".")
            for stage in cache.iterdir() if stage.is_dir()}


def listing(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))


def assert_stages_whole(cache: Path, complete: dict[str, set[tuple[str, ...]]]) -> None:
    """Every finished stage folder holds exactly the files such a stage holds when an
    uninterrupted run wrote it, and each of its arrays and JSON files reads back."""
    for stage, folders in finished_stages(cache).items():
        for folder in folders:
            assert listing(folder) in complete[stage], f"incomplete stage folder {folder}"
            for path in folder.rglob("*.npy"):
                np.load(path, mmap_mode="r")
            for path in folder.rglob("*.json"):
                json.loads(path.read_text())


def run_until_killed(config: Path, out: Path, kill_point: Callable[[], bool]) -> None:
    """Start ``cxr-audit run`` in a subprocess and SIGKILL it once ``kill_point()`` holds."""
    command = [sys.executable, "-m", "audit.cli", "--quiet", "run", str(config), "--out",
               str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while not kill_point():
            assert process.poll() is None, "the run ended before reaching the kill point"
            assert time.monotonic() < deadline, "the kill point was never reached"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def stage_begun(cache: Path, stage: str) -> Callable[[], bool]:
    """True from the moment the stage's temporary folder appears (mid-write, if caught)."""
    folder = cache / stage
    return lambda: folder.is_dir() and any(not p.name.endswith(".lock") for p in folder.iterdir())


def stage_finished(cache: Path, stage: str) -> Callable[[], bool]:
    return lambda: (cache / stage).is_dir() and bool(finished_stages(cache).get(stage))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the tiny audit (its run folder)."""
    folder = tmp_path_factory.mktemp("reference")
    run_audit(load_config(write_config(folder)), folder / "run")
    return folder / "run"


def test_a_run_killed_at_several_points_resumes_to_the_same_numbers(reference, tmp_path):
    complete: dict[str, set[tuple[str, ...]]] = {}
    for stage, folders in finished_stages(reference / "cache").items():
        complete[stage] = {listing(folder) for folder in folders}
    config, out = write_config(tmp_path), tmp_path / "run"
    cache = out / "cache"
    kill_points = [stage_begun(cache, "phantoms"), stage_finished(cache, "images"),
                   stage_finished(cache, "classifier"), stage_finished(cache, "probe")]
    for kill_point in kill_points:
        run_until_killed(config, out, kill_point)
        assert not (out / "summary.json").exists()
        assert_stages_whole(cache, complete)

    resumed = run_audit(load_config(config), out)
    assert resumed.provenance["stages"]["reused"] > 0
    assert summary_numbers(out) == summary_numbers(reference)
    assert not list(cache.rglob(".*.tmp-*")), "stale temporary folders were left behind"


def test_a_rerun_reuses_every_stage_and_writes_the_same_numbers(reference):
    before = summary_numbers(reference)
    rerun = run_audit(load_config(reference.parent / "config.yaml"), reference)
    assert rerun.provenance["stages"]["computed"] == 0
    assert rerun.provenance["stages"]["reused"] > 0
    assert summary_numbers(reference) == before


@pytest.fixture
def ray_shutdown():
    """Skips without Ray; shuts down the instance the Ray backend starts."""
    ray = pytest.importorskip("ray")
    yield
    ray.shutdown()


def test_ray_backend_gives_the_same_numbers_as_local(reference, tmp_path, ray_shutdown):
    import ray

    config = load_config(write_config(tmp_path, {"backend": "ray", "workers": 2}))
    run_audit(config, tmp_path / "run")
    assert ray.is_initialized()  # the grid went to Ray (2 CPUs), not to the local runner
    assert ray.cluster_resources()["CPU"] == 2
    assert summary_numbers(tmp_path / "run") == summary_numbers(reference)
