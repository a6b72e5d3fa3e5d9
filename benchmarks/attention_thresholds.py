"""Measure the attention checks on synthetic sets with a known answer, to set thresholds.

For each seed: a confounded set (confounding 1, site traits on), the same with no disease
signal (``shortcut_only``: every right answer is a shortcut), a clean control
(confounding 0, no site traits) and the control with a square burned into the top-right
corner of the COVID images only (``audit.data.phantoms.plant_marker``). ``--placed-only`` leaves
the outside-lung exposure profile out of the confounded kinds, so their sources differ only
by markers and borders: traits with a place, which attention can point at. A frozen ImageNet
MobileNetV2 0.35 (224 px) gets a trained head on raw and on lung-masked images
(``tests.attention_fixtures.train_flat_mobilenet_v2``); the attention checks run and one
line per check prints the headline (most enriched class, and zone for
``attention.localized``), its corrected p, whether the default policy flags it alone, and
the lung-masked twin's value. A last block gives, per kind and check, the headlines' range
over the seeds and how many fired: on the controls, the false alarms the thresholds are
set against. Needs ``../shared/weights``.

Run: ``.venv/bin/python -m benchmarks.attention_thresholds --seeds 1 2 3``
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from audit.core.config import SiteTraits, SynthConfig
from audit.data.phantoms import plant_marker, synthetic_dataset
from probes.checks import attention_border, attention_localized, attention_outside_lung
from tests.attention_fixtures import half_split, synthetic_context, train_flat_mobilenet_v2
from tests.probe_fixtures import fires

KINDS = ("confounded", "shortcut_only", "control", "marker")
CHECKS = (attention_border, attention_outside_lung, attention_localized)


def dataset_for(kind: str, seed: int, n_per_class: int, marker_size: float,
                placed_only: bool = False):
    if kind in ("confounded", "shortcut_only"):
        signal = 0.0 if kind == "shortcut_only" else 1.0
        return synthetic_dataset(SynthConfig(n_per_class=n_per_class, image_size=128,
                                             confounding=1.0, signal_strength=signal,
                                             site_traits=SiteTraits(intensity=not placed_only),
                                             seed=seed))
    no_traits = SiteTraits(markers=False, borders=False, intensity=False)
    clean = synthetic_dataset(SynthConfig(n_per_class=n_per_class, image_size=128,
                                          confounding=0.0, site_traits=no_traits, seed=seed))
    if kind == "control":
        return clean
    marked = plant_marker(clean.images, clean.labels == 0, size_fraction=marker_size)
    return dataclasses.replace(clean, images=marked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--n-per-class", type=int, default=10)
    parser.add_argument("--marker-size", type=float, default=0.12)
    parser.add_argument("--placed-only", action="store_true",
                        help="confounded kinds carry only the placed traits (markers, borders), "
                             "not the outside-lung exposure profile")
    args = parser.parse_args()
    headlines: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for seed in args.seeds:
        for kind in args.kinds:
            dataset = dataset_for(kind, seed, args.n_per_class, args.marker_size,
                                  args.placed_only)
            train, test = half_split(dataset, seed)
            models = [train_flat_mobilenet_v2(dataset, train, mode, seed=seed)
                      for mode in ("raw", "lung_masked")]
            with tempfile.TemporaryDirectory() as folder:
                context = synthetic_context(Path(folder), dataset, models, test, seed=seed,
                                            n_bootstrap=200)
                for check in CHECKS:
                    result = check.run(context)
                    if not result.ran:
                        print(f"seed {seed} {kind:10s} {check.SPEC.id:22s} {result.status.value}: "
                              f"{result.reason}", flush=True)
                        continue
                    headlines.setdefault((kind, check.SPEC.id), []).append(
                        (result.metric, fires(result)))
                    where = " ".join(str(result.details[key]) for key in ("worst_class", "worst_zone")
                                     if key in result.details)
                    twin = result.details["lung_masked_comparison"] or {}
                    print(f"seed {seed} {kind:10s} {check.SPEC.id:22s} {result.metric:.3f} "
                          f"({where}) p={result.p_value:.2g} fires={fires(result)} "
                          f"lung-masked={twin.get('masked_enrichment', float('nan')):.3f}",
                          flush=True)
    for (kind, check_id), values in headlines.items():
        metrics = sorted(metric for metric, _ in values)
        print(f"{kind:10s} {check_id:22s} {len(values)} seeds: "
              f"{' '.join(f'{m:.2f}' for m in metrics)}; fired at {sum(f for _, f in values)}")

if __name__ == "__main__":
    main()
