"""The real set and encoder file the segmenter benchmarks share (not a ``bench_*`` script).

``../shared/data/cxr-real/`` decoded at 256 px, its own side: every Dice is measured
against its human masks at that size, whatever size a U-Net trains at.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from audit.core.cache import StageCache
from audit.data.dataset import Dataset
from audit.data.images import load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared"
MANIFEST = SHARED / "data/cxr-real/metadata.csv"
ENCODER = SHARED / "weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
MASK_SIZE = 256


def decoded_real_set(cache_dir: Path | None, *needed: Path) -> tuple[Dataset, StageCache]:
    """The real set through a stage cache in ``cache_dir`` (default: a new temporary
    folder), and that cache; exits naming what is missing when the manifest or any of the
    ``needed`` files (e.g. ``ENCODER``) is absent."""
    missing = [str(path) for path in (MANIFEST, *needed) if not path.is_file()]
    if missing:
        sys.exit(f"needs {' and '.join(missing)}")
    cache = StageCache(cache_dir or tempfile.mkdtemp(prefix="cxr-real-"))
    return load_dataset(MANIFEST, MASK_SIZE, cache), cache
