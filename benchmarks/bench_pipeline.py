"""End to end: `cxr-audit demo` step by step, its unchanged rerun, and growth with data size.

Every run is the real console command (``python -m audit.cli --log-json ...``) in a
subprocess on a fresh run folder, so a time includes starting Python and TensorFlow. A
first run is split into steps, each with its forward passes and their floor, as
``benchmarks.bench_floor`` does (from the stage timestamps in its cache, at the forward
rate measured in this process after the run). Stage reuse of the rerun comes from its
``summary.json`` (``provenance.stages``).

Measured, in one run of this script:

- the demo (``audit/defaults/demo.yaml``), then the same command again on the same run
  folder: the rerun / first-run ratio (issue 6 target: under 5%);
- the real-set example (``examples/cxr-real.yaml``) when ``../shared`` is present;
- the demo's settings on 500, 2,000 and 8,000 synthetic images: time per image, the
  forward-pass floor of each run and the rest above it, and the growth exponents between
  sizes of both (1.0 is linear; issue 12's target for the rest is no more).

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

import yaml

from audit.cli import demo_config_path
from audit.core.config import CLASSES, load_config
from audit.core.tensorflow_output import quiet_tensorflow
from audit.data.phantoms import label_source_counts
from benchmarks.bench_floor import forward_rate, print_steps, run_audit

REAL_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "cxr-real.yaml"
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr-real"
QUICK_SIZES, QUICK_IMAGE_SIZE = (125, 250, 500), 96


def first_run(title: str, config: Path | None, out: Path,
              target: str | None) -> tuple[float, float]:
    """Run the config (None: the demo) into ``out``, print its steps against their floor;
    its wall seconds and the part above the floor."""
    seconds, steps = run_audit(config, out)
    load = os.getloadavg()[1]  # how much other work shared the machine during the run
    rate = forward_rate(config or demo_config_path(), out)
    print(f"{title}: {seconds:.0f} s wall (load average {load:.1f}); forward rate "
          f"{rate:.0f} images/s")
    print_steps(steps, seconds, rate, target)
    return seconds, seconds - sum(step[2] for step in steps) / rate


def rerun(command: list[str], out: Path) -> tuple[float, dict[str, int]]:
    """Run one ``cxr-audit`` command again on ``out``; its wall time and stage counts."""
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "audit.cli", *command, "--out", str(out)],
                          capture_output=True, text=True, check=False)
    seconds = time.time() - started
    if done.returncode not in (0, 1):  # 1 is a failing verdict: a finished audit
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, json.loads((out / "summary.json").read_text())["provenance"]["stages"]


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
    """Each size's wall time and the part of it above the forward-pass floor, with their
    growth exponents."""
    runs = []
    for n_images in sizes:
        config, exact = sized_config(n_images, image_size, root)
        runs.append((exact, *first_run(f"demo settings on {exact} images", config,
                                        root / f"growth-{n_images}", None)))
    print("growth (exponent 1.0 = linear; target for the rest above the floor <= 1):")
    for (n0, t0, rest0), (n1, t1, rest1) in zip(runs, runs[1:], strict=False):
        scale = math.log(n1 / n0)
        rest = (f"the rest x{rest1 / rest0:.2f}, exponent {math.log(rest1 / rest0) / scale:.2f}"
                if min(rest0, rest1) > 0 else "the rest not above the floor: no exponent")
        print(f"    {n0:>6} -> {n1:<6} images: time x{t1 / t0:.2f} for data x{n1 / n0:.1f}, "
              f"exponent {math.log(t1 / t0) / scale:.2f}; {t0 / n0 * 1000:.0f} -> "
              f"{t1 / n1 * 1000:.0f} ms/image; {rest}")


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
    quiet_tensorflow()  # this process imports TensorFlow too, for the forward rates
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
        root = Path(folder)
        if not args.skip_demo:
            first, _ = first_run("demo, first run", None, root / "demo", "under 180 s")
            seconds, stages = rerun(["demo"], root / "demo")
            print(f"demo, unchanged rerun: {seconds:.1f} s, stages {stages['reused']} reused / "
                  f"{stages['computed']} computed; rerun / first run {seconds / first:.1%} "
                  "(target under 5%)")
        if not args.quick and not args.skip_demo and REAL_DATA.is_dir():
            first_run("real-set example (examples/cxr-real.yaml)", REAL_CONFIG, root / "real",
                      "under 900 s")
        if args.quick:
            growth(list(QUICK_SIZES), QUICK_IMAGE_SIZE, root)
        else:
            growth(args.sizes, args.image_size, root)


if __name__ == "__main__":
    main()
