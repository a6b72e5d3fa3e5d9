"""The demo against its floor: the backbone forward passes it must make, at their measured rate.

Issue 12 defines the floor of a run as the backbone forward passes it needs times the
forward rate of that backbone, measured in the same benchmark run. This script:

1. runs ``cxr-audit demo`` (the real console command, ``--log-json``, fresh run folder) and
   splits its wall time into steps as ``benchmarks.bench_pipeline`` does (from the log);
2. counts the forward passes the run made from its stage cache: the rows of every
   ``features`` stage (one pass per image), of every ``view_features`` stage (one per
   image and rotated view) and of every ``gradcam`` stage (one per image and model: a
   Grad-CAM is a forward and a backward pass, counted as one forward pass here). Each stage
   counts in the step during which it finished (its manifest's modification time). Passes
   that leave no stage of their own (a probe predicting on intervened images) are not
   counted, so the floor is a lower bound and the ratio an upper bound;
3. measures the forward rate of the demo's backbone in this process (``models.features.
   extract`` on the demo's own images at the demo's size, the fastest of three rounds after
   a warm-up);
4. prints per step: actual seconds, forward passes, floor seconds and actual / floor.

The demo trains no U-Net (its phantoms carry their masks), so no U-Net epochs count.

Run: ``nice -n 19 .venv/bin/python -m benchmarks.bench_floor``
"""

from __future__ import annotations

import bisect
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from audit.cli import demo_config_path
from audit.core.cache import MANIFEST_FILE
from audit.core.config import load_config
from benchmarks.bench_pipeline import run_cli

FORWARD_STAGES = ("features", "view_features", "gradcam")
RATE_IMAGES = 256


def stage_passes(folder: Path) -> int:
    """Backbone forward passes a finished stage folder stands for (see module docstring)."""
    stage = folder.parent.name
    if stage == "gradcam":
        with np.load(folder / "cams.npz") as stored:
            return len(stored["predicted_class"])
    shape = np.load(folder / "features.npy", mmap_mode="r").shape
    return int(np.prod(shape[:2])) if stage == "view_features" else int(shape[0])


def passes_by_step(cache: Path, steps: list[tuple[str, float]], started: float) -> list[int]:
    """Forward passes of the stages that finished during each step."""
    ends = list(np.cumsum([seconds for _, seconds in steps]) + started)
    counts = [0] * len(steps)
    for stage in FORWARD_STAGES:
        for folder in sorted((cache / stage).glob("[!.]*")):
            if not folder.is_dir():
                continue
            finished = (folder / MANIFEST_FILE).stat().st_mtime
            step = min(bisect.bisect_left(ends, finished), len(steps) - 1)
            counts[step] += stage_passes(folder)
    return counts


def forward_rate(run_folder: Path) -> float:
    """Images per second through the demo's frozen backbone, on the demo's own images."""
    from audit.core.cache import StageCache
    from audit.jobs import load_data
    from models.features import extract, feature_extractor

    config = load_config(demo_config_path())
    models = config.models
    dataset = load_data(config, StageCache(run_folder / "cache"))
    images = dataset.images[:RATE_IMAGES]
    extractor, _ = feature_extractor(models.backbones[0], models.weights, models.alpha,
                                     config.data.image_size, list(models.weights_dirs))
    extract(extractor, images[:64], config.data.image_size)  # trace and warm up
    best = np.inf
    for _ in range(3):
        started = time.perf_counter()
        extract(extractor, images, config.data.image_size)
        best = min(best, time.perf_counter() - started)
    return len(images) / best


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as folder:
        run_folder = Path(folder) / "demo"
        started = time.time()
        run = run_cli(["demo"], run_folder)
        load = os.getloadavg()
        rate = forward_rate(run_folder)
        passes = passes_by_step(run_folder / "cache", run["steps"], started)
    print(f"cxr-audit demo: {run['seconds']:.0f} s wall; load average (1/5/15 min) after "
          f"it {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores")
    print(f"forward rate of the demo's backbone here: {rate:.0f} images/s "
          f"(fastest of 3 rounds of {RATE_IMAGES} images)")
    print(f"    {'step':<48} {'actual':>9} {'passes':>7} {'floor':>8} {'ratio':>7}")
    for (name, seconds), count in zip(run["steps"], passes, strict=True):
        floor = count / rate
        ratio = f"{seconds / floor:6.1f}x" if floor else "      -"
        print(f"    {name:<48} {seconds:8.1f}s {count:7d} {floor:7.1f}s {ratio}")
    total = sum(passes) / rate
    print(f"    {'whole run':<48} {run['seconds']:8.1f}s {sum(passes):7d} {total:7.1f}s "
          f"{run['seconds'] / total:6.1f}x   (target <= 2x, under 180 s)")


if __name__ == "__main__":
    main()
