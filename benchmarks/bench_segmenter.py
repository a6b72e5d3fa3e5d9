"""The shipped lung segmenter's held-out Dice per source on the real set.

Loads the segmenter from the installed package (``models.pretrained``, the files that
ship), decodes ``../shared/data/cxr-real/`` at 256 px and segments the masked images of
the patients its training record holds out (they never trained it, nor stopped its
training early). Prints Dice and IoU per source and overall, mean with a bootstrap 95%
CI, against the human masks at 256 px, and the prediction time per image. Exits with a
message when the data set is absent.

Run: ``.venv/bin/python -m benchmarks.bench_segmenter [--cache DIR]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from audit.core.progress import configure
from benchmarks.real_set import MANIFEST, decoded_real_set
from models.pretrained import load_pretrained_unet, pretrained_key, pretrained_record
from models.unet_training import held_out_quality


def _line(name: str, n: int, quality: dict) -> str:
    dice, iou = quality["dice"], quality["iou"]
    return (f"{name:<10} {n:>5}  {dice['mean']:.3f} ({dice['ci_low']:.3f}-{dice['ci_high']:.3f})"
            f"  {iou['mean']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="reuse decoded images")
    args = parser.parse_args()
    configure(quiet=True)
    record = pretrained_record()
    dataset, _ = decoded_real_set(args.cache)
    held_out = set(record["split"]["held_out_patients"])
    rows = np.flatnonzero(dataset.has_mask & np.isin(dataset.groups, list(held_out)))
    model = load_pretrained_unet()
    started = time.perf_counter()
    quality = held_out_quality(model, dataset, rows)
    seconds = time.perf_counter() - started
    print(f"shipped segmenter {pretrained_key()} ({record['architecture']}), held-out "
          f"patients of {MANIFEST.parent.name}: {len(held_out)}, images {rows.size}")
    print(f"{'source':<10} {'n':>5}  Dice (95% CI)        IoU")
    for source, row in quality["per_source"].items():
        print(_line(source, row["n"], row))
    print(_line("all", quality["n_val"], quality))
    print(f"prediction incl. post-processing: {1000 * seconds / rows.size:.0f} ms per image")


if __name__ == "__main__":
    main()
