"""Peak memory of a large audit: 20,000 images at 224 px through the memory-mapped store.

Issue 6 target: an audit of 20,000 images at 224 px stays under 4 GB of RAM. Running the
whole audit at that size takes hours on 2 cores, so this benchmark runs the parts whose
memory grows with the number of images, through the real code, each in a fresh
subprocess whose peak resident set (``resource.getrusage``) is printed:

- ``baseline``: imports, TensorFlow and a tiny Keras model; no data (the fixed cost).
- ``store``: ``load_dataset`` decoding every PNG and mask into the image store (cold).
- ``training``: what a training job does with the store (cached-feature path): reopen it
  (memory-mapped), hash the masks, and compute the cached features of every row shown
  ``lung_masked`` and of the default two rotated views of each (``frozen_features`` and
  ``view_features`` on ``models.inputs.ModeImages``, masked and rotated a chunk at a time).
- ``evaluation``: ``TrainedModel.predict_proba`` on the rows of one cross-validation fold
  (the default 5 folds of the non-test rows), as ``audit.jobs.train_job`` evaluates.

Two numbers per phase: peak RSS (``getrusage``: everything resident, including the
store's memory-mapped file pages, which the kernel can drop and reread under pressure)
and peak anonymous memory (``RssAnon`` of ``/proc/self/status``, sampled every 20 ms:
the heap, which has to stay in RAM). The 4 GB target is judged on peak RSS.

A tiny Keras model (global average pooling + a softmax layer) stands in for the backbone:
the network's own memory does not grow with the data, the arrays around it do. The data
are a few hundred phantoms from ``audit.data.phantoms`` written as PNGs once and hard-linked under
``--n`` distinct names, so building the set is quick while decoding still reads every file.

Run: ``.venv/bin/python -m benchmarks.bench_memory [--n 20000] [--size 224]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from audit.core.config import DataConfig, ModelsConfig, SynthConfig
from audit.data.phantoms import make_phantoms

TARGET_GB = 4.0
PHASES = ("baseline", "store", "training", "evaluation")
VIEWS = ModelsConfig().augmented_views  # rotated copies per image in the training phase
UNIQUE_PER_CLASS = 16  # phantoms per class per source actually rendered (x 4 x 4 = 256)


def write_dataset(root: Path, n_images: int, size: int) -> Path:
    """``n_images`` manifest rows of distinct files (hard links to rendered phantoms)."""
    phantoms = make_phantoms(SynthConfig(n_per_class=UNIQUE_PER_CLASS, image_size=size,
                                         confounding=0.5))
    unique = root / "unique"
    unique.mkdir(parents=True)
    for i, (image, mask) in enumerate(zip(phantoms.images, phantoms.masks, strict=True)):
        Image.fromarray(image).save(unique / f"{i}.png", compress_level=1)
        Image.fromarray(mask * np.uint8(255)).save(unique / f"{i}_mask.png", compress_level=1)
    links = root / "images"
    links.mkdir()
    rows = []
    for row in range(n_images):
        source_row = row % len(phantoms.images)
        image, mask = links / f"{row}.png", links / f"{row}_mask.png"
        os.link(unique / f"{source_row}.png", image)
        os.link(unique / f"{source_row}_mask.png", mask)
        meta = phantoms.manifest.iloc[source_row]
        rows.append({"path": str(image), "mask_path": str(mask), "label": meta["label"],
                     "source": meta["source"], "patient_id": f"p{row}"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def tiny_model(size: int):
    """Pixels ``(S, S, 3)`` -> pooled -> 4-way softmax: a stand-in backbone and head."""
    import keras

    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", name="probs")(pooled)
    return keras.Model(inputs, outputs)


class AnonymousPeak:
    """Samples this process's anonymous resident memory in a thread; ``gb`` is the peak."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> AnonymousPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            status = Path("/proc/self/status").read_text()
            kb = int(status.split("RssAnon:", 1)[1].split()[0])
            self.peak_kb = max(self.peak_kb, kb)
            if self._stop.wait(self.interval):
                return

    @property
    def gb(self) -> float:
        return self.peak_kb / 2**20


def run_phase(phase: str, manifest: Path, cache_root: Path, size: int) -> None:
    """One phase in this process (a fresh subprocess); prints its peak memory as JSON."""
    with AnonymousPeak() as anonymous:
        seconds = _phase_work(phase, manifest, cache_root, size)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"phase": phase, "peak_gb": peak_kb / 2**20, "anon_gb": anonymous.gb,
                      "seconds": seconds}))


def _phase_work(phase: str, manifest: Path, cache_root: Path, size: int) -> float:
    """The work of ``phase``; its seconds (the tiny model is built before the clock)."""
    from audit.core.cache import StageCache
    from audit.core.progress import configure
    from audit.data.images import load_dataset

    configure(quiet=True)
    model = tiny_model(size)
    started = time.perf_counter()
    if phase != "baseline":
        dataset = load_dataset(manifest, size, StageCache(cache_root))
    if phase == "training":
        from models.features import FeatureSpec, frozen_features, view_features
        from models.inputs import ModeImages

        shown = ModeImages(dataset, "lung_masked")
        dataset.masks_key  # noqa: B018 - hashed by the classifier's stage key, as in a job
        spec, cache = FeatureSpec("mobilenetv2", "none", input_size=size, build=lambda: model), \
            StageCache(cache_root)
        frozen_features(shown, spec, cache)
        view_features(shown, VIEWS, ModelsConfig().rotation_degrees, 0, spec, cache)
    elif phase == "evaluation":
        from models.trained import TrainedModel

        defaults = DataConfig()
        n_rows = math.ceil(len(dataset) * (1 - defaults.test_fraction) / defaults.n_folds)
        trained = TrainedModel(key="tiny/raw", backbone="tiny", input_mode="raw",
                               load_keras=lambda: model, classes=tuple(dataset.classes),
                               last_conv_layer="pooled", embedding_layer="pooled",
                               input_size=size)
        trained.predict_proba(dataset, np.arange(n_rows))
    return time.perf_counter() - started


def measure(phase: str, manifest: Path, cache_root: Path, size: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--phase", phase,
               "--manifest", str(manifest), "--cache", str(cache_root), "--size", str(size)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="images in the data set")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args.phase, args.manifest, args.cache, args.size)
        return
    array_gb = 2 * args.n * args.size**2 / 2**30  # images + masks, uint8
    print(f"memory: {args.n} images at {args.size} px; images + masks in memory would be "
          f"{array_gb:.2f} GB")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as root:
        started = time.perf_counter()
        manifest = write_dataset(Path(root) / "data", args.n, args.size)
        print(f"  wrote {args.n} PNG rows in {time.perf_counter() - started:.0f} s")
        for phase in PHASES:
            result = measure(phase, manifest, Path(root) / "cache", args.size)
            verdict = "under" if result["peak_gb"] < TARGET_GB else "OVER"
            print(f"  {phase:<10} peak RSS {result['peak_gb']:.2f} GB "
                  f"({result['peak_gb'] / TARGET_GB:.0%} of the {TARGET_GB:.0f} GB target: "
                  f"{verdict}), anonymous {result['anon_gb']:.2f} GB, "
                  f"{result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
