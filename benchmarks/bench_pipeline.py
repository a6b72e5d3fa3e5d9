"""End to end: `cxr-audit demo` step by step, its unchanged rerun, and growth with data size.

Every run is the real console command (``python -m audit.cli --log-json ...``) in a
subprocess on a fresh run folder, so a time includes starting Python and TensorFlow. Steps
are read off the run's JSON log lines (each carries its time): data (phantoms, image
store, masks) until the training grid starts, the training grid until its last classifier
reports, then each check until it reports (the first one also includes reloading the
trained models), then reports and gate until the process ends.
Stage reuse comes from the run's ``summary.json`` (``provenance.stages``).

Measured, in one run of this script:

- the demo (``audit/defaults/demo.yaml``), then the same command again on the same run
  folder: the rerun / first-run ratio (issue 6 target: under 5%);
- the real-set example (``examples/cxr-real.yaml``) when ``../shared`` is present;
- the demo's settings on 500, 2,000 and 8,000 synthetic images: time per image and the
  growth exponent between sizes (1.0 is linear; the target is no more than that).

``--quick`` runs the growth series on 125/250/500 images at 96 px instead and skips the
real set, for a check in minutes rather than hours.

Run: ``.venv/bin/python -m benchmarks.bench_pipeline [--quick] [--sizes 500 2000 8000]
[--image-size 96] [--skip-demo]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from audit.cli import demo_config_path
from audit.core.config import CLASSES, load_config
from audit.data.phantoms import label_source_counts
from probes.registry import check_ids

REAL_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "cxr-real.yaml"
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr-real"
QUICK_SIZES, QUICK_IMAGE_SIZE = (125, 250, 500), 96


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


def steps(records: list[dict[str, Any]], started: float, ended: float) -> list[tuple[str, float]]:
    """(step, seconds) from the milestones in the log: see the module docstring."""
    milestones: list[tuple[str, float]] = []
    n_trained, training_end = 0, started
    known = check_ids()
    for record in records:
        message = record["message"]
        check = message.split(":", 1)[0]
        if check in known:  # first: a check's summary may say ": accuracy " too
            if n_trained:  # the grid ended at its last classifier's report
                milestones.append((f"training grid ({n_trained} classifiers)", training_end))
                n_trained = 0
            milestones.append((f"check {check}", record["time"]))
        elif message.startswith("training ") and " classifiers " in message:
            milestones.append(("data (phantoms, image store, masks)", record["time"]))
        elif ": accuracy " in message:
            n_trained += 1
            training_end = record["time"]
    milestones.append(("reports and gate", ended))
    durations, previous = [], started
    for name, moment in milestones:
        durations.append((name, moment - previous))
        previous = moment
    return durations


def run_cli(command: list[str], out: Path) -> dict[str, Any]:
    """Run one ``cxr-audit`` command; its wall time, steps and stage counts."""
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "audit.cli", "--log-json", *command,
                           "--out", str(out)], capture_output=True, text=True, check=False)
    ended = time.time()
    if done.returncode not in (0, 1):  # 1 is a failing verdict: a finished audit
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    provenance = json.loads((out / "summary.json").read_text())["provenance"]
    return {"seconds": ended - started, "steps": steps(log_records(done.stderr), started, ended),
            "stages": provenance["stages"]}


def print_run(title: str, run: dict[str, Any]) -> None:
    stages = run["stages"]
    print(f"{title}: {run['seconds']:.0f} s wall, stages {stages['reused']} reused / "
          f"{stages['computed']} computed")
    for name, seconds in run["steps"]:
        print(f"    {name:<48} {seconds:8.1f} s")


def sized_config(n_images: int, image_size: int | None, folder: Path) -> tuple[Path, int]:
    """The demo's settings with about ``n_images`` phantoms; (config file, exact count)."""
    config = load_config(demo_config_path()).model_dump(mode="json")  # paths made absolute
    synth = config["data"]["synth"]
    # n_per_class images per class per source: classes x sources x n_per_class in all
    synth["n_per_class"] = max(1, round(n_images / (len(CLASSES) * synth["n_sources"])))
    if image_size:
        synth["image_size"] = config["data"]["image_size"] = image_size
    path = folder / f"demo-{n_images}.yaml"
    path.write_text(yaml.safe_dump(config))
    exact = int(label_source_counts(load_config(path).data.synth).sum())
    return path, exact


def growth(sizes: list[int], image_size: int | None, root: Path) -> None:
    runs = []
    for n_images in sizes:
        config, exact = sized_config(n_images, image_size, root)
        run = run_cli(["run", str(config)], root / f"growth-{n_images}")
        # The load average says how much other work shared the machine during this run.
        print_run(f"demo settings on {exact} images (load average {os.getloadavg()[1]:.1f})",
                  run)
        runs.append((exact, run["seconds"]))
    print("growth (exponent 1.0 = linear; target <= 1):")
    for (n0, t0), (n1, t1) in zip(runs, runs[1:], strict=False):
        exponent = math.log(t1 / t0) / math.log(n1 / n0)
        print(f"    {n0:>6} -> {n1:<6} images: time x{t1 / t0:.2f} for data x{n1 / n0:.1f}, "
              f"exponent {exponent:.2f}; {t0 / n0 * 1000:.0f} -> {t1 / n1 * 1000:.0f} ms/image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"growth on {QUICK_SIZES} images at {QUICK_IMAGE_SIZE} px, no real set")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    parser.add_argument("--image-size", type=int, default=None,
                        help="phantom side for the growth series (default: the demo's)")
    parser.add_argument("--skip-demo", action="store_true",
                        help="only the growth series (no demo, no real set)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
        root = Path(folder)
        if not args.skip_demo:
            first = run_cli(["demo"], root / "demo")
            print_run("demo, first run", first)
            rerun = run_cli(["demo"], root / "demo")
            print_run("demo, unchanged rerun", rerun)
            print(f"rerun / first run: {rerun['seconds'] / first['seconds']:.1%} "
                  "(target under 5%)")
        if not args.quick and not args.skip_demo and REAL_DATA.is_dir():
            print_run("real-set example (examples/cxr-real.yaml)",
                      run_cli(["run", str(REAL_CONFIG)], root / "real"))
        if args.quick:
            growth(list(QUICK_SIZES), QUICK_IMAGE_SIZE, root)
        else:
            growth(args.sizes, args.image_size, root)


if __name__ == "__main__":
    main()
