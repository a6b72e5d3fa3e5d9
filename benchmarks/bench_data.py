"""Data layer on the real set: validate time, and image-store cold decode vs warm reuse.

Runs on ``../shared/data/cxr-real/metadata.csv`` (1,417 PNGs); exits with a message when
it is absent. Each measurement is best-of-N; cold loads use a fresh cache folder each
time, warm loads reopen the store the cold load wrote. The printed ratio compares the two
best times measured in this run.

Run: ``.venv/bin/python -m benchmarks.bench_data [--size 224] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from audit.core.cache import StageCache
from audit.core.progress import configure
from audit.data.images import load_dataset
from audit.data.validate import validate_manifest

MANIFEST = Path(__file__).resolve().parents[2] / "shared/data/cxr-real/metadata.csv"


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not MANIFEST.exists():
        raise SystemExit(f"real data not found at {MANIFEST}")
    configure(quiet=True)
    report = validate_manifest(MANIFEST)
    validate_time = best_seconds(lambda: validate_manifest(MANIFEST), args.repeats)
    print(f"validate: {report.n_rows} rows, {len(report.problems)} problem(s), "
          f"best {validate_time:.1f} s")
    with tempfile.TemporaryDirectory() as root:
        caches = iter(StageCache(Path(root) / f"cold{i}") for i in range(args.repeats))
        cold = best_seconds(lambda: load_dataset(MANIFEST, args.size, next(caches)), args.repeats)
        warm_cache = StageCache(Path(root) / "cold0")
        warm = best_seconds(lambda: load_dataset(MANIFEST, args.size, warm_cache), args.repeats)
    print(f"load_dataset @ {args.size}px: cold decode {cold:.1f} s, warm reuse {warm:.2f} s, "
          f"ratio {cold / warm:.0f}x")


if __name__ == "__main__":
    main()
