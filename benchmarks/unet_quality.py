"""U-Net lung-mask quality on the real set: held-out-patient Dice/IoU at 256 px.

Trains the segmenter (``models.segment.train_unet``) on the 1,085 masked rows of
``../shared/data/cxr-real/`` with the local ImageNet MobileNetV2 encoder file, then prints
its held-out quality (overall and per source). The U-Net may train at a lower side
(``--unet-size``); predictions are upsampled and Dice is always measured against the
256 px masks. Not a ``bench_*`` script: it trains for a long time, so ``make bench``
does not run it. Exits with a message when the data or weights are absent.

Run: ``.venv/bin/python -m benchmarks.unet_quality [--unet-size 128] [--epochs 3]
[--cache /tmp/unet-cache]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audit.core.config import SegmentationConfig
from audit.core.progress import configure
from benchmarks.real_set import ENCODER, decoded_real_set
from models.segment import train_unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="reuse a trained U-Net")
    args = parser.parse_args()
    configure()
    dataset, cache = decoded_real_set(args.cache, ENCODER)
    config = SegmentationConfig(image_size=args.unet_size, epochs=args.epochs,
                                encoder_weights=str(ENCODER))
    quality = train_unet(dataset, config, cache).quality
    print(json.dumps(quality, indent=2))


if __name__ == "__main__":
    main()
