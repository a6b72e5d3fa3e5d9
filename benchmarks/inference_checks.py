"""Measure ``performance.within_source`` and ``generalization.external`` on known answers.

For each seed: the clean control (``examples/clean-control.yaml``: confounding 0, no site
traits; neither check may fire) and the demo (``examples/demo.yaml``: confounding 0.8,
site traits on; its model reads the sources), with ``data.synth.seed``, ``data.seed`` and
``probes.seed`` set to the seed. Each gets an external manifest: phantoms of the same
generator at seed ``100 + seed``, 15 per class per source, labels spread evenly over the
sources (confounding 0), sources and patients renamed ``ext_...``. The run trains only the
audited raw-input model (``input_modes: [raw]``, no cross-validation: the audited model is
trained as in the full example) and runs only the two checks; one line per run prints
each check's headline, CI and p-value.

Run: ``nice -n 19 .venv/bin/python -m benchmarks.inference_checks --out /tmp/wx``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from audit.core.config import SynthConfig, load_config
from audit.data.phantoms import generate_phantoms

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("performance.within_source", "generalization.external")
KINDS = ("clean-control", "demo")


def external_manifest(folder: Path, synth: dict, seed: int) -> Path:
    """Phantoms of ``synth`` at ``seed``, confounding 0, their sources named ``ext_...``."""
    manifest = generate_phantoms(SynthConfig(**{**synth, "seed": seed, "n_per_class": 15,
                                                "confounding": 0.0}), folder)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["source"] = "ext_" + table["source"]
    table["patient_id"] = "ext_" + table["patient_id"]
    table.to_csv(manifest, index=False)
    return manifest


def write_config(kind: str, seed: int, out: Path) -> Path:
    config = yaml.safe_load((ROOT / "examples" / f"{kind}.yaml").read_text())
    config["data"]["synth"]["seed"] = config["data"]["seed"] = seed
    config["probes"]["seed"] = seed
    config["data"]["external"] = [str(external_manifest(
        out / f"ext-{kind}-{seed}", config["data"]["synth"], 100 + seed))]
    config["models"]["weights_dirs"] = [str((ROOT / "examples" / folder).resolve())
                                        for folder in config["models"]["weights_dirs"]]
    config["models"]["input_modes"] = ["raw"]  # the audited model only
    config["models"]["cross_validate"] = False
    config["probes"]["checks"] = list(CHECKS)
    path = out / f"{kind}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    from audit.pipeline import run_audit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        for seed in args.seeds:
            path = write_config(kind, seed, args.out)
            result = run_audit(load_config(path), args.out / f"run-{kind}-seed{seed}")
            for check_id in CHECKS:
                check = result.check(check_id)
                ci = "-" if check.ci is None else f"{check.ci[0]:.3f} to {check.ci[1]:.3f}"
                p = "-" if check.p_value is None else f"{check.p_value:.3g}"
                metric = "-" if check.metric is None else f"{check.metric:.3f}"
                print(f"{kind} seed {seed} {check_id}: {check.status} {metric} "
                      f"(95% CI {ci}; p {p}) {check.summary or check.reason}", flush=True)


if __name__ == "__main__":
    main()
