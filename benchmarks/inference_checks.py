"""Measure the four inference-only model checks on known answers (issue 11's first item).

The checks (``CHECKS``): ``intervention.surround_swap``, ``intervention.border_swap``,
``performance.within_source`` and ``generalization.external``. For each seed, three kinds
of phantoms (``KINDS``), with ``data.synth.seed``, ``data.seed`` and ``probes.seed`` set to
the seed:

- ``clean-control`` (``examples/clean-control.yaml``: confounding 0, no site traits): no
  check may fire;
- ``shortcut-only``: the demo's config with confounding 1 (each label in its own source),
  the placed site traits (markers and borders, no exposure profile) and no disease signal
  (``signal_strength`` 0), so every right answer is a shortcut: the surround swap must fire
  with a surround-following share of at least 0.8 (``performance.within_source`` cannot run:
  no source holds two labels);
- ``demo`` (``examples/demo.yaml``: confounding 0.8, every site trait; its model reads the
  sources): the swap must fire.

Each run gets an external manifest: phantoms of the same generator at seed ``100 + seed``,
15 per class per source, labels spread evenly over the sources (confounding 0), sources
and patients renamed ``ext_...``. The run trains only the audited raw-input model
(``input_modes: [raw]``, no cross-validation: the audited model is trained as in the full
example), runs only the four checks and is judged by the default policy (one Holm family of
the four). One line per run prints each check's headline, CI, p-value and whether it fired;
``results.jsonl`` under ``--out`` keeps them with the surround swap's shares.

Run: ``nice -n 19 .venv/bin/python -m benchmarks.inference_checks --out /tmp/ic --seeds 0 1 2 3 4``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

from audit.core.config import SynthConfig, load_config
from audit.core.result import Status
from audit.data.phantoms import generate_phantoms

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("intervention.surround_swap", "intervention.border_swap",
          "performance.within_source", "generalization.external")
KINDS = ("clean-control", "shortcut-only", "demo")
SHORTCUT_ONLY_SYNTH = {"confounding": 1.0, "signal_strength": 0.0,
                       "site_traits": {"markers": True, "borders": True, "intensity": False}}
"""The demo's synth settings changed into the shortcut-only phantoms."""
FIRED = (Status.WARN, Status.FAIL)


def external_manifest(folder: Path, synth: dict, seed: int) -> Path:
    """Phantoms of ``synth`` at ``seed``, confounding 0, their sources named ``ext_...``."""
    manifest = generate_phantoms(SynthConfig(**{**synth, "seed": seed, "n_per_class": 15,
                                                "confounding": 0.0}), folder)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["source"] = "ext_" + table["source"]
    table["patient_id"] = "ext_" + table["patient_id"]
    table.to_csv(manifest, index=False)
    return manifest


def example_config(example: str, seed: int, checks) -> dict:
    """``examples/<example>.yaml`` at ``seed`` (``data.synth.seed``, ``data.seed``,
    ``probes.seed``), its weights folders made absolute, training only the audited raw-input
    model (no cross-validation) and running only ``checks``."""
    config = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    config["data"]["synth"]["seed"] = config["data"]["seed"] = seed
    config["probes"]["seed"] = seed
    config["models"]["weights_dirs"] = [str((ROOT / "examples" / folder).resolve())
                                        for folder in config["models"]["weights_dirs"]]
    config["models"]["input_modes"] = ["raw"]  # the audited model only
    config["models"]["cross_validate"] = False
    config["probes"]["checks"] = list(checks)
    return config


def write_config(kind: str, seed: int, out: Path) -> Path:
    config = example_config("clean-control" if kind == "clean-control" else "demo", seed, CHECKS)
    if kind == "shortcut-only":
        config["data"]["synth"].update(SHORTCUT_ONLY_SYNTH)
    config["data"]["external"] = [str(external_manifest(
        out / f"ext-{kind}-{seed}", config["data"]["synth"], 100 + seed))]
    path = out / f"{kind}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_record(check) -> dict:
    """What the table needs of one judged check, JSON-able."""
    record = {"status": str(check.status), "fired": check.status in FIRED,
              "metric": check.metric, "ci": check.ci, "p_value": check.p_value,
              "reason": check.reason}
    if check.check_id == "intervention.surround_swap" and check.status != Status.NOT_RUN:
        record["across"] = {key: check.details["across"][key]
                            for key in ("pairs", "follow_surround", "share")}
        record["within"] = {key: check.details["within"][key]
                            for key in ("pairs", "follow_surround", "share")}
        record["baseline"] = check.details["baseline"]
    return record


def share(pairs: dict) -> str:
    """A surround-following share, ``-`` where no pair was drawn."""
    return "-" if pairs["share"] is None else f"{pairs['share']:.2f}"


def line(kind: str, seed: int, records: dict) -> str:
    parts = []
    for check_id, record in records.items():
        name = check_id.split(".")[1]
        if record["metric"] is None:
            parts.append(f"{name} {record['status']} ({record['reason']})")
            continue
        ci = "-" if record["ci"] is None else f"{record['ci'][0]:.3f} to {record['ci'][1]:.3f}"
        p = "-" if record["p_value"] is None else f"{record['p_value']:.3g}"
        text = (f"{name} {record['metric']:.3f} (CI {ci}; p {p}) "
                f"fired {'yes' if record['fired'] else 'no'}")
        if "across" in record:
            across, within = record["across"], record["within"]
            text += (f" [across {share(across)} of {across['pairs']}, within "
                     f"{share(within)} of {within['pairs']}]")
        parts.append(text)
    return f"{kind} seed {seed} | " + " | ".join(parts)


def seeded_runs_arguments(description: str, kinds: tuple[str, ...]) -> argparse.Namespace:
    """``--out`` (made absolute and created), ``--seeds`` and ``--kinds`` of a benchmark
    that audits each kind of data at each seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--kinds", nargs="+", choices=kinds, default=list(kinds))
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def main() -> None:
    from audit.pipeline import run_audit

    args = seeded_runs_arguments(__doc__.splitlines()[0], KINDS)
    for kind in args.kinds:
        for seed in args.seeds:
            path = write_config(kind, seed, args.out)
            result = run_audit(load_config(path), args.out / f"run-{kind}-seed{seed}")
            records = {check_id: check_record(result.check(check_id)) for check_id in CHECKS}
            print(line(kind, seed, records), flush=True)
            with (args.out / "results.jsonl").open("a") as handle:
                handle.write(json.dumps({"kind": kind, "seed": seed, "checks": records},
                                        default=float) + "\n")


if __name__ == "__main__":
    main()
