"""An audit against its floor: the backbone forward passes it must make, at their measured rate.

Issue 12 defines the floor of a run as the backbone forward passes it needs times the
forward rate of that backbone, measured in the same benchmark run. This script:

1. runs ``cxr-audit demo``, or ``cxr-audit run CONFIG`` with ``--config`` (the real console
   command, ``--log-json``, fresh run folder), and
   splits its wall time into steps by the stage timestamps in its cache (each stage's
   manifest is written when the stage finishes): data until the log says the training
   grid starts, the training grid until its last ``grid_job`` stage, each check until its
   ``probe`` stage (which includes the variant classifiers, features and Grad-CAMs it
   computed), reports and gate until the process ends;
2. counts the forward passes the run made from its stage cache: the rows of every
   ``features`` stage (one pass per image), of every ``view_features`` stage (one per
   image and rotated view), of every ``gradcam`` stage (one per image and model: a
   Grad-CAM is a forward and a backward pass, counted as one forward pass here) and of
   every ``image_predictions`` stage (one per intervened image: the swap composites).
   Each stage counts in the step during which it finished. Passes that leave no stage of
   their own (a probe predicting on images it keeps to itself) are not counted, so the
   floor is a lower bound and the ratio an upper bound;
3. measures the forward rate of the run's first backbone in this process (``models.features.
   extract`` on the run's own images at its size, the fastest of three rounds after a
   warm-up);
4. prints per step: actual seconds, forward passes, floor seconds and actual / floor;
5. runs the same command into the same folder again (an unchanged rerun) and prints its
   wall time as a share of the first run's.

Neither the demo (its phantoms carry their masks) nor ``examples/cxr-real.yaml`` (the
manifest's masks, the shipped segmenter elsewhere) trains a U-Net, so no U-Net epochs count.

Run: ``nice -n 19 .venv/bin/python -m benchmarks.bench_floor [--config FILE] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from audit.cli import demo_config_path
from audit.core.cache import MANIFEST_FILE
from audit.core.config import load_config
from audit.core.tensorflow_output import quiet_tensorflow


def log_records(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run's stderr (TensorFlow's own log lines share the stream)."""
    records = []
    for piece in stderr.replace("\r", "\n").splitlines():
        start = piece.find('{"time"')
        if start >= 0:
            try:
                records.append(json.loads(piece[start:]))
            except json.JSONDecodeError:
                continue
    return records


FORWARD_ARRAYS = {"features": "features.npy", "view_features": "features.npy",
                  "image_predictions": "probabilities.npy"}
"""The stages that ran the backbone besides ``gradcam``: the array whose rows they passed."""
RATE_IMAGES = 256


def stage_passes(folder: Path) -> int:
    """Backbone forward passes a finished stage folder stands for (see module docstring)."""
    stage = folder.parent.name
    if stage == "gradcam":
        with np.load(folder / "cams.npz") as stored:
            return len(stored["predicted_class"])
    if stage not in FORWARD_ARRAYS:
        return 0
    shape = np.load(folder / FORWARD_ARRAYS[stage], mmap_mode="r").shape
    return int(np.prod(shape[:2])) if stage == "view_features" else int(shape[0])


def finished_stages(cache: Path) -> list[tuple[float, Path]]:
    """(finish time, folder) of every finished stage of the cache, in finish order."""
    found = [((folder / MANIFEST_FILE).stat().st_mtime, folder)
             for folder in cache.glob("*/*") if (folder / MANIFEST_FILE).is_file()]
    return sorted(found)


def cache_steps(cache: Path, grid_started: float, started: float,
                ended: float) -> list[tuple[str, float, int]]:
    """(step, seconds, forward passes) of one run, from its cache (module docstring)."""
    stages = finished_stages(cache)
    grid_end = max(moment for moment, folder in stages if folder.parent.name == "grid_job")
    milestones = [("data (phantoms, image store, masks)", grid_started),
                  ("training grid", grid_end)]
    for moment, folder in stages:
        if folder.parent.name == "probe":
            check = json.loads((folder / "result.json").read_text())["check_id"]
            milestones.append((f"check {check}", moment))
    milestones.append(("reports and gate", ended))
    steps, previous = [], started
    for name, moment in milestones:
        passes = sum(stage_passes(folder) for finished, folder in stages
                     if previous < finished <= moment)
        steps.append((name, moment - previous, passes))
        previous = moment
    return steps


def audit_process(config: Path | None, out: Path) -> tuple[float, float, str]:
    """Run ``cxr-audit run config`` (``cxr-audit demo`` when ``config`` is None) into
    ``out``: its start and end time and its stderr (the JSON log)."""
    command = ["demo"] if config is None else ["run", str(config)]
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "audit.cli", "--log-json", *command, "--out",
                           str(out)], capture_output=True, text=True, check=False)
    ended = time.time()
    if done.returncode not in (0, 1):  # 1 is a failing verdict: a finished audit
        raise SystemExit(f"cxr-audit {command[0]} exited {done.returncode}:\n"
                         f"{done.stderr[-3000:]}")
    return started, ended, done.stderr


def run_audit(config: Path | None, out: Path) -> tuple[float, list[tuple[str, float, int]]]:
    """``audit_process`` into ``out``: its wall seconds and steps."""
    started, ended, stderr = audit_process(config, out)
    grid_started = next(record["time"] for record in log_records(stderr)
                        if record["message"].startswith("training ")
                        and " classifiers " in record["message"])
    return ended - started, cache_steps(out / "cache", grid_started, started, ended)


def forward_rate(config_file: Path, run_folder: Path) -> float:
    """Images per second through the run's first frozen backbone, on the run's own images."""
    from audit.core.cache import StageCache
    from audit.jobs import load_data
    from models.features import extract, feature_extractor

    config = load_config(config_file)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None,
                        help="audit this config with cxr-audit run (default: the demo), "
                             "e.g. examples/cxr-real.yaml")
    parser.add_argument("--keep", type=Path, default=None,
                        help="run into this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    quiet_tensorflow()  # this process imports TensorFlow too, for the forward rate
    config = args.config.resolve() if args.config else None
    config_file = config or demo_config_path()
    target = "under 180 s" if config is None else "under 900 s"
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as folder:
        run_folder = args.keep or Path(folder) / "run"
        seconds, steps = run_audit(config, run_folder)
        load = os.getloadavg()
        rate = forward_rate(config_file, run_folder)
        rerun_started, rerun_ended, _ = audit_process(config, run_folder)
    print(f"{args.config or 'cxr-audit demo'}: {seconds:.0f} s wall; load average (1/5/15 min) after it "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores")
    print(f"forward rate of its backbone here: {rate:.0f} images/s "
          f"(fastest of 3 rounds of {RATE_IMAGES} images)")
    print_steps(steps, seconds, rate, target)
    rerun = rerun_ended - rerun_started
    print(f"unchanged rerun into the same folder: {rerun:.1f} s = {rerun / seconds:.1%} of the "
          "first run (target < 5%)")


def print_steps(steps: list[tuple[str, float, int]], seconds: float, rate: float,
                target: str | None) -> None:
    """Per step: actual seconds, forward passes, floor and their ratio; then the run's,
    with the wall-time ``target`` when there is one."""
    print(f"    {'step':<48} {'actual':>9} {'passes':>7} {'floor':>8} {'ratio':>7}")
    for name, actual, passes in steps:
        floor = passes / rate
        ratio = f"{actual / floor:6.1f}x" if floor else "      -"
        print(f"    {name:<48} {actual:8.1f}s {passes:7d} {floor:7.1f}s {ratio}")
    passes = sum(step[2] for step in steps)
    print(f"    {'whole run':<48} {seconds:8.1f}s {passes:7d} {passes / rate:7.1f}s "
          f"{seconds / (passes / rate):6.1f}x   (target <= 2x{f', {target}' if target else ''})")


if __name__ == "__main__":
    main()
