"""One source, a marker tied to the label: do the model checks that need no second source
fire (issue 11, "single source, label-tied marker")?

The recipe of Sun, Koch and Baumgartner (MICCAI 2023): within one data set, an artificial
confounder is added to a share of the positive class only, so the label is tied to an
image feature that is not the disease and no source difference exists to find. For each
seed, the phantoms of ``examples/demo.yaml``'s generator with one source (``n_sources``
1), the disease signal on (``signal_strength`` 1), every site trait off and
``N_PER_CLASS`` images per class, written as PNGs under ``--out``; two kinds (``KINDS``):

- ``marked``: a copy of those PNGs in which a seeded ``real_planted.PLANTED_SHARE`` of the
  ``probes.target_class`` (COVID) images get a filled white square of ``MARKER_FRACTION``
  of the side burned into the ``MARKER_CORNER`` corner (``audit.data.phantoms.
  plant_marker``), which lies wholly inside the outer ``probes.border_fraction`` band the
  border swap and ``attention.border`` read (checked before any image is written);
  ``intervention.border_swap`` or an attention check must fire;
- ``unmarked``: the same PNGs, no marker: nothing may fire.

Each run is the demo's config (MobileNetV2 alpha 0.35 with the local ImageNet weights,
224 px, 40 epochs on the cached path) reading the kind's manifest, training only the
audited raw-input model without cross-validation (``benchmarks.inference_checks.
example_config``), running only ``CHECKS`` and judged by the default policy (one Holm
family). Two of them are listed only to show what they do with one source:
both report ``not_run`` (``performance.within_source`` since `9472740`; before, it ran on
the one source, where within the source is pooled over sources, and measured a loss of 0
by construction). One line
per (kind, seed) prints each check's headline, CI, p-value and whether it fired; a marked
run also prints the marker's effect on the model (its COVID probability on the marked test
images against the same images unmarked); ``results.jsonl`` under ``--out`` keeps both.

Run: ``nice -n 19 /work/main/.venv/bin/python -m benchmarks.single_source_marker --out /tmp/ssm --seeds 0 1 2 3 4``
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from audit.core.config import SynthConfig, load_config
from audit.data.phantoms import generate_phantoms, plant_marker
from benchmarks.inference_checks import (
    check_record,
    example_config,
    line,
    seeded_runs_arguments,
)
from benchmarks.real_planted import marker_effect, planted_rows
from models.inputs import border_band

CHECKS = ("intervention.border_swap", "attention.border", "attention.localized",
          "attention.outside_lung", "intervention.surround_swap", "performance.within_source")
KINDS = ("marked", "unmarked")
N_PER_CLASS = 100  # one source: 400 images, 80 test images of which ~20 COVID
MARKER_CORNER = "top_right"
MARKER_FRACTION = 0.05  # 11 px at 224, 11 px in from the corner: inside the 22 px band
SYNTH = {"n_sources": 1, "n_per_class": N_PER_CLASS, "signal_strength": 1.0,
         "confounding": 0.0, "site_traits": {"markers": False, "borders": False,
                                             "intensity": False}}
"""The demo's synth settings changed into the one-source phantoms."""


def marker_outside_band(size: int, border_fraction: float,
                        corner: str = MARKER_CORNER, fraction: float = MARKER_FRACTION) -> int:
    """Pixels of the planted square that fall outside the outer ``border_fraction`` band."""
    square = plant_marker(np.zeros((1, size, size), np.uint8), [0], corner, fraction, 255)[0] > 0
    return int((square & ~border_band(size, border_fraction)).sum())


def mark_copy(unmarked: Path, marked: Path, target: str, seed: int,
              border_fraction: float) -> list[str]:
    """Copy the phantom folder ``unmarked`` to ``marked`` and burn the marker into the PNGs
    of ``real_planted.planted_rows``; returns their file names (unique: one source)."""
    table = pd.read_csv(unmarked / "manifest.csv", dtype=str, keep_default_na=False)
    size = Image.open(unmarked / table["path"].iloc[0]).size[0]
    outside = marker_outside_band(size, border_fraction)
    if outside:
        raise ValueError(f"the marker leaves the {border_fraction:g} band by {outside} pixels")
    if marked.exists():
        shutil.rmtree(marked)
    shutil.copytree(unmarked, marked)
    rows = planted_rows((table["label"] == target).to_numpy(), seed)
    paths = [marked / table["path"].iloc[row] for row in rows]
    images = np.stack([np.asarray(Image.open(path).convert("L")) for path in paths])
    images = plant_marker(images, np.arange(len(paths)), MARKER_CORNER, MARKER_FRACTION, 255)
    for path, image in zip(paths, images, strict=True):
        Image.fromarray(image).save(path)
    return [path.name for path in paths]


def write_config(kind: str, seed: int, manifest: Path, out: Path) -> Path:
    config = example_config("demo", seed, CHECKS)
    config["data"].pop("synth")
    config["data"]["manifest"] = str(manifest.resolve())
    path = out / f"{kind}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    from audit.pipeline import run_audit

    args = seeded_runs_arguments(__doc__.splitlines()[0], KINDS)
    synth = example_config("demo", 0, CHECKS)["data"]["synth"]
    for seed in args.seeds:
        unmarked = args.out / f"phantoms-seed{seed}"
        generate_phantoms(SynthConfig(**{**synth, **SYNTH, "seed": seed}), unmarked)
        configs = {"unmarked": load_config(write_config(
            "unmarked", seed, unmarked / "manifest.csv", args.out))}
        probes = configs["unmarked"].probes
        marked = args.out / f"marked-seed{seed}"
        names = mark_copy(unmarked, marked, probes.target_class, seed, probes.border_fraction)
        configs["marked"] = load_config(write_config("marked", seed, marked / "manifest.csv",
                                                     args.out))
        for kind in args.kinds:
            run_dir = args.out / f"run-{kind}-seed{seed}"
            result = run_audit(configs[kind], run_dir)
            records = {check_id: check_record(result.check(check_id)) for check_id in CHECKS}
            print(line(kind, seed, records), flush=True)
            record = {"kind": kind, "seed": seed, "marked_images": len(names),
                      "checks": records}
            if kind == "marked":
                record["marker_effect"] = marker_effect(
                    run_dir, configs["marked"].data.manifest, configs["unmarked"].data.manifest,
                    set(names), configs[kind].data.image_size, probes.target_class)
                print(f"marked seed {seed}: {len(names)} images marked; "
                      f"{record['marker_effect']}", flush=True)
            with (args.out / "results.jsonl").open("a") as handle:
                handle.write(json.dumps(record, default=float) + "\n")


if __name__ == "__main__":
    main()
