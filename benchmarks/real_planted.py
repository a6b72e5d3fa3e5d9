"""The model-level checks on real radiographs: a planted marker, no plant, an external source.

``../shared/data/cxr-real/`` (read-only; never copied into the repository; its paths from ``benchmarks.real_set``). Three cases:

- ``planted``: the shenzhen rows (labels ``normal`` and ``other``, i.e. tuberculosis; every
  row has a lung mask) split by patient into two pseudo-sites ``shenzhen_a`` and
  ``shenzhen_b`` (half the patients each, drawn from ``--seed``); on pseudo-site A, 80% of
  the ``other`` images get a bright text-like block burned into the top-right corner,
  inside the ``probes.border_fraction`` band. The
  copy's images are written as PNGs under ``--out``, its masks read from the shared folder.
- ``randomised``: the same rows and pseudo-sites, the shared images unchanged.

With ``--band shuffled`` both copies start from the shenzhen images with their outer band
replaced by another image's (``band_shuffled_manifest``): the images' own bands carry the
label, so the unchanged copy is no clean control for the border swap; with shuffled bands
only the plant ties a band to a label.
- ``external``: every source but ``--external-source`` trains the model; that source is
  the ``data.external`` manifest of ``generalization.external``.

Each case trains only the audited raw-input model (MobileNetV2 with the local ImageNet
weights of ``../shared/weights``, frozen base, small images, few epochs, no
cross-validation) and runs only the inference-level checks; one line per check prints its
status, metric, CI and p-value, and the external case prints its per-source table.
A check "flags" the run when its status is ``warn`` or ``fail``.

Run: ``nice -n 19 /work/main/.venv/bin/python -m benchmarks.real_planted --out /tmp/rp
[--seed N] [--band shuffled] [--cases planted randomised]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw

from audit.core.config import load_config
from benchmarks.real_set import MANIFEST, SHARED

WEIGHTS = SHARED / "weights"
MODEL_CHECKS = ("intervention.surround_swap", "intervention.border_swap",
                "performance.within_source", "attention.border", "attention.localized",
                "attention.outside_lung")
CASES = ("planted", "randomised", "external")
PLANTED_SHARE = 0.8
FLAGGED = {"warn", "fail"}


def real_table() -> pd.DataFrame:
    """The real set's manifest with its image and mask paths made absolute."""
    table = pd.read_csv(MANIFEST, dtype=str, keep_default_na=False)
    table["path"] = [str(MANIFEST.parent / path) for path in table["path"]]
    table["mask_path"] = [str(MANIFEST.parent / path) if path else ""
                          for path in table["mask_path"]]
    return table


def shenzhen_pseudo_sites(seed: int) -> pd.DataFrame:
    """The shenzhen rows, absolute paths, ``source`` set to ``shenzhen_a`` for a random half
    of the patients (drawn from ``seed``) and ``shenzhen_b`` for the rest."""
    table = real_table()
    rows = table[table["source"] == "shenzhen"].copy()
    patients = np.random.default_rng(seed).permutation(sorted(set(rows["patient_id"])))
    site_a = rows["patient_id"].isin(patients[: len(patients) // 2])
    rows["source"] = np.where(site_a, "shenzhen_a", "shenzhen_b")
    return rows[["path", "label", "source", "patient_id", "view", "mask_path"]]


def burn_marker(image: Image.Image, border_fraction: float) -> Image.Image:
    """A white plate with dark glyph-like strokes in the top-right corner, within the
    outer ``border_fraction`` of the side (as a burned-in "TB"/"R" label would be)."""
    marked = image.convert("L").copy()
    side = marked.size[0]
    band = int(border_fraction * side)
    top, right = max(1, band // 8), side - max(1, band // 8)
    height, width = band - 2 * top, 3 * (band - 2 * top)
    draw = ImageDraw.Draw(marked)
    draw.rectangle((right - width, top, right, top + height), fill=255)
    stroke = max(1, height // 6)
    for glyph in range(3):  # three block letters, each a bar and a stem
        left = right - width + glyph * width // 3 + stroke
        draw.rectangle((left, top + stroke, left + width // 3 - 2 * stroke, top + 2 * stroke), fill=30)
        middle = left + width // 6 - stroke
        draw.rectangle((middle, top + stroke, middle + stroke, top + height - stroke), fill=30)
    return marked


WORKING_SIDE = 512
"""Side the band-shuffled copies are written at (the image store resizes every image to a
square anyway, so the band is the same fraction of each axis before and after)."""


def band_shuffled_manifest(rows: pd.DataFrame, folder: Path, border_fraction: float,
                           seed: int) -> pd.DataFrame:
    """``rows`` with every image rewritten under ``folder/images``, resized to
    ``WORKING_SIDE`` squares, its outer ``border_fraction`` band replaced by another row's
    band. Partners follow one seeded cycle over the rows, so no image keeps its own band
    and a band says nothing about its image's label: a control whose band carries no label
    by construction (the shenzhen images' own bands do: a band-only model scores 0.75)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed + 1).permutation(len(rows))
    partner = np.empty(len(rows), dtype=int)
    partner[order] = np.roll(order, -1)
    side, band = WORKING_SIDE, round(border_fraction * WORKING_SIDE)

    def square(path: str) -> np.ndarray:
        return np.asarray(Image.open(path).convert("L").resize((side, side),
                                                                Image.Resampling.LANCZOS))

    squares = [square(path) for path in rows["path"]]  # each image decoded once
    inner = (slice(band, side - band), slice(band, side - band))
    paths = []
    for own_path, own, donor in zip(rows["path"], squares, partner, strict=True):
        mixed = squares[donor].copy()
        mixed[inner] = own[inner]
        target = images / Path(own_path).name
        Image.fromarray(mixed).save(target)
        paths.append(str(target))
    return rows.assign(path=paths)


def planted_rows(candidates: np.ndarray, seed: int) -> np.ndarray:
    """Sorted positions of a seeded ``PLANTED_SHARE`` of the rows where ``candidates``."""
    rows = np.flatnonzero(candidates)
    return np.sort(np.random.default_rng(seed).choice(
        rows, size=round(PLANTED_SHARE * len(rows)), replace=False))


def planted_manifest(rows: pd.DataFrame, folder: Path, border_fraction: float,
                     seed: int) -> tuple[Path, set[str]]:
    """Write every image of ``rows`` under ``folder/images`` as PNG, the marker burned into
    ``PLANTED_SHARE`` of pseudo-site A's ``other`` images; the manifest and its count."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    planted = np.zeros(len(rows), bool)
    planted[planted_rows(((rows["source"] == "shenzhen_a")
                          & (rows["label"] == "other")).to_numpy(), seed)] = True
    paths = []
    for path, plant in zip(rows["path"], planted, strict=True):
        image = Image.open(path).convert("L")
        if plant:
            image = burn_marker(image, border_fraction)
        target = images / Path(path).name
        image.save(target)
        paths.append(str(target))
    manifest = folder / "manifest.csv"
    rows.assign(path=paths).to_csv(manifest, index=False)
    return manifest, {Path(path).name for path in rows["path"][planted]}


def marker_effect(run_dir: Path, planted: Path, randomised: Path, marked: set[str],
                  image_size: int, target: str = "other") -> str:
    """Whether the audited model learned the marker: its ``target`` probability on the
    marked test images (file names in ``marked``) against the same images unmarked (the
    randomised copy)."""
    from audit.data.images import load_dataset
    from models.saving import load_trained

    model = load_trained(next((run_dir / "models").iterdir()))
    test = json.loads((run_dir / "splits.json").read_text())["test"]
    target_index = model.classes.index(target)
    probabilities = []
    for manifest in (planted, randomised):
        dataset = load_dataset(manifest, image_size)
        names = [Path(path).name for path in dataset.manifest["path"]]
        rows = np.array([i for i in test if names[i] in marked])
        probabilities.append(model.predict_proba(dataset, rows)[:, target_index])
    with_marker, without = probabilities
    return (f"marker effect on {len(with_marker)} marked test images: P({target}) "
            f"{with_marker.mean():.3f} with the marker vs {without.mean():.3f} without; "
            f"called '{target}' {np.mean(with_marker > 0.5):.2f} vs "
            f"{np.mean(without > 0.5):.2f}")


def external_split(folder: Path, held_out: str) -> tuple[Path, Path]:
    """The real set without ``held_out`` and ``held_out`` alone, absolute paths."""
    folder.mkdir(parents=True, exist_ok=True)
    table = real_table()
    internal, external = folder / "internal.csv", folder / "external.csv"
    table[table["source"] != held_out].to_csv(internal, index=False)
    table[table["source"] == held_out].to_csv(external, index=False)
    return internal, external


def write_config(case: str, manifest: Path, args: argparse.Namespace,
                 external: Path | None = None) -> Path:
    config = {
        "data": {"manifest": str(manifest), "image_size": args.image_size,
                 "test_fraction": 0.25, "seed": args.seed,
                 "external": [str(external)] if external else []},
        "segmentation": {"source": "manifest"},
        "models": {"backbones": ["mobilenetv2"], "alpha": args.alpha, "weights": "imagenet",
                   "weights_dirs": [str(WEIGHTS)], "input_modes": ["raw"],
                   "training_path": "cached", "cross_validate": False,
                   "epochs": args.epochs, "augmented_views": 0, "seeds": [args.seed]},
        "probes": {"checks": ["generalization.external", "performance.within_source"]
                   if external else list(MODEL_CHECKS),
                   "target_class": "covid" if external else "other",
                   "cam_max_images": 100, "swap_pairs": 100, "n_permutations": 400,
                   "n_bootstrap": 500, "seed": args.seed},
        "runtime": {"cache_dir": str(args.out / f"cache-{case}"), "quiet": True},
    }
    path = args.out / f"{case}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def print_checks(case: str, result, check_ids) -> None:
    flagged = []
    for check_id in check_ids:
        check = result.check(check_id)
        ci = "-" if check.ci is None else f"{check.ci[0]:.3f} to {check.ci[1]:.3f}"
        p = "-" if check.p_value is None else f"{check.p_value:.3g}"
        metric = "-" if check.metric is None else f"{check.metric:.3f}"
        if str(check.status) in FLAGGED:
            flagged.append(check_id)
        print(f"{case} {check_id}: {check.status} {metric} (95% CI {ci}; p {p}) "
              f"{check.summary or check.reason}", flush=True)
    print(f"{case}: flagged by {', '.join(flagged) or 'none'}", flush=True)


def main() -> None:
    from audit.pipeline import run_audit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--alpha", type=float, default=0.35, choices=(0.35, 1.0))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--border-fraction", type=float, default=0.1)
    parser.add_argument("--external-source", default="kermany")
    parser.add_argument("--band", choices=("own", "shuffled"), default="own",
                        help="shuffled: both copies' outer bands come from other images "
                             "(band_shuffled_manifest), so only the plant ties a band to a label")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        external = None
        if case == "external":
            manifest, external = external_split(args.out / "external", args.external_source)
            print(f"external: {args.external_source} held out as data.external", flush=True)
        else:
            rows = shenzhen_pseudo_sites(args.seed)
            if args.band == "shuffled":
                rows = band_shuffled_manifest(rows, args.out / "band-shuffled",
                                              args.border_fraction, args.seed)
            manifest = args.out / "randomised.csv"
            rows.to_csv(manifest, index=False)
            if case == "planted":
                manifest, marked = planted_manifest(rows, args.out / "planted",
                                                    args.border_fraction, args.seed)
                print(f"planted: marker on {len(marked)} of the "
                      f"{((rows.source == 'shenzhen_a') & (rows.label == 'other')).sum()} "
                      "'other' images of shenzhen_a", flush=True)
            print(f"{case}: {rows.groupby(['source', 'label']).size().to_dict()}", flush=True)
        result = run_audit(load_config(write_config(case, manifest, args, external)),
                           args.out / f"run-{case}")
        if external:
            print_checks(case, result, ("generalization.external", "performance.within_source"))
            for row in result.check("generalization.external").tables.get("per_source", []):
                print(f"external per source: {row['source']} n {row['n']} labels "
                      f"{row['labels']} accuracy {row['accuracy']:.3f} "
                      f"({row['accuracy_ci_low']:.3f} to {row['accuracy_ci_high']:.3f}) vs "
                      f"internal {row['internal_accuracy']:.3f}, p {row['p_value']:.3g}",
                      flush=True)
        else:
            print_checks(case, result, MODEL_CHECKS)
            if case == "planted":
                print("planted: " + marker_effect(args.out / "run-planted", manifest,
                                                  args.out / "randomised.csv", marked,
                                                  args.image_size), flush=True)


if __name__ == "__main__":
    main()
