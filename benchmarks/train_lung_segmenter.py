"""Train the lung U-Net shipped in ``models/pretrained`` (``segmentation.source: pretrained``).

Trains ``models.segment.train_unet`` on the masked rows of ``../shared/data/cxr-real/``
(cohen, kermany and shenzhen; hannover has no masks) with the local ImageNet MobileNetV2
encoder file from ``../shared/weights``. Patients are split 80/20 (``GroupShuffleSplit``,
seed 0) into training and held-out rows; early stopping watches a further share of the
training patients, never the held-out ones. The weights are then written as float16, read
back, and the held-out Dice per source measured with exactly those weights goes into the
record, with the held-out patient ids (so ``benchmarks.bench_segmenter`` and the tests
measure the same patients).

Writes into ``--out``: ``lung_unet.weights.npz`` and ``lung_unet.json``. To ship them,
copy both into ``models/pretrained/``.

Run: ``nice -n 19 .venv/bin/python -m benchmarks.train_lung_segmenter --out DIR
[--unet-size 128] [--epochs 8] [--cache DIR]`` (the shipped files: 8 epochs, 20 min on 2
shared CPU cores)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from audit.core.cache import hash_file
from audit.core.config import SegmentationConfig
from audit.core.progress import configure
from benchmarks.real_set import ENCODER, decoded_real_set
from models.pretrained import load_unet_weights, save_pretrained_record, save_pretrained_weights
from models.segment import train_unet
from models.unet_training import held_out_quality

DECODER_FILTERS = (64, 32, 16, 16, 8)
"""A quarter of segmentation_models' default decoder: its deepest block alone (1,856
input channels x 3 x 3 x 256) would hold 4.3 M parameters, twice the whole encoder."""
LICENCE_NOTE = (
    "Learned from lung masks of three sources: V7 Labs lung annotations (CC BY 4.0) of "
    "Cohen et al.'s COVID-19 image data collection and of Kermany et al.'s pediatric set "
    "(images CC BY 4.0; Kermany masks matched by an inferred alignment), and the NLM "
    "Shenzhen TB set's hand-drawn masks, whose terms ask for attribution (Jaeger et al. "
    "2014; Candemir et al. 2014) and not to share the data outside the research group. "
    "Treat these weights, which derive from those masks, under the same terms: internal "
    "research and testing use."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the two files")
    parser.add_argument("--unet-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="reuse decoded images")
    args = parser.parse_args()
    configure()
    dataset, _ = decoded_real_set(args.cache, ENCODER)
    config = SegmentationConfig(source="unet", image_size=args.unet_size,
                                decoder_filters=DECODER_FILTERS, epochs=args.epochs,
                                patience=args.patience, encoder_weights=str(ENCODER))
    started = time.perf_counter()
    trained = train_unet(dataset, config)  # no cache: always a fresh training
    wall = time.perf_counter() - started
    architecture = {"encoder": config.encoder, "image_size": config.image_size,
                    "decoder_filters": list(config.decoder_filters)}
    weights = save_pretrained_weights(trained.model, args.out)
    shipped = load_unet_weights(weights, architecture)
    quality = held_out_quality(shipped, dataset, trained.val_rows)
    held_out = dataset.groups[trained.val_rows]
    record = {
        "architecture": architecture,
        "weights": {"file": weights.name, "dtype": "float16", "sha256_16": hash_file(weights),
                    "bytes": weights.stat().st_size},
        "data": {"manifest": "../shared/data/cxr-real/metadata.csv",
                 "rows_with_mask": int(dataset.has_mask.sum()),
                 "sources": sorted(set(dataset.sources[dataset.has_mask]))},
        "split": {"by": "patient_id", "method": "GroupShuffleSplit over masked rows",
                  "held_out_fraction": config.val_fraction, "seed": config.seed,
                  "n_train": trained.quality["n_train"], "n_held_out": int(trained.val_rows.size),
                  "held_out_patients": sorted(set(held_out.tolist()))},
        "training": {"encoder_weights": ENCODER.name, "epochs_max": config.epochs,
                     "epochs_run": trained.quality["epochs_run"], "patience": config.patience,
                     "batch_size": config.batch_size, "learning_rate": config.learning_rate,
                     "wall_seconds": round(wall)},
        "held_out_quality": quality,
        "held_out_quality_float32": {"dice": trained.quality["dice"]},
        "licence": LICENCE_NOTE,
    }
    save_pretrained_record(record, args.out)
    per_source = {s: round(q["dice"]["mean"], 4) for s, q in quality["per_source"].items()}
    print(f"held-out Dice {quality['dice']['mean']:.4f} (n={quality['n_val']}), per source "
          f"{per_source}; {wall:.0f} s; {weights.stat().st_size / 1e6:.1f} MB -> {args.out}")


if __name__ == "__main__":
    main()
