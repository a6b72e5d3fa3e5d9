"""Run every benchmark (``make bench``): each ``benchmarks/bench_*.py``, one after the other.

Each runs in its own process (as ``python -m benchmarks.<name>``) so one benchmark's
memory and TensorFlow state never colour the next one's numbers; their output is printed
under a header. A benchmark that fails is reported and the others still run; the exit
code is 1 if any failed.

Run: ``.venv/bin/python -m benchmarks [--quick] [--only bench_memory bench_pipeline]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

QUICK_ARGS = {"bench_pipeline": ["--quick"], "bench_memory": ["--n", "2000"]}
"""Smaller settings for ``--quick`` (benchmarks not listed run as they are)."""


def benchmark_names() -> list[str]:
    return sorted(path.stem for path in Path(__file__).parent.glob("bench_*.py"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes where supported")
    parser.add_argument("--only", nargs="+", choices=benchmark_names(), help="run just these")
    args = parser.parse_args()
    failed = []
    for name in args.only or benchmark_names():
        extra = QUICK_ARGS.get(name, []) if args.quick else []
        print(f"== {name} {' '.join(extra)}".rstrip(), flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *extra], check=False)
        print(f"== {name}: exit {done.returncode} after {time.perf_counter() - started:.0f} s\n",
              flush=True)
        if done.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
