"""``cxr-audit init``: a starter run config written from what a manifest holds.

A new user edits a config rather than writing one: the starter names the labels found and
how they map onto the four classes, the class the one-class checks follow, the sources,
how many images have lung masks and which segmentation setting that calls for, with a
comment on each choice. The text is plain
YAML (strings JSON-quoted), so ``audit.core.config.load_config`` reads it back.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

from audit.core.config import CLASSES
from audit.data.manifest import read_table

# Words in a raw label that suggest a class, checked in this order. A guess is written
# with a comment asking the user to confirm it; a label matching none maps to "other".
LABEL_HINTS = (
    ("covid", ("covid", "sars-cov-2", "sars_cov_2", "cov19")),
    ("normal", ("normal", "healthy", "no finding", "no_finding", "negative")),
    ("opacity", ("opacity", "pneumonia", "tuberculosis", "tb", "consolidation", "infiltrat")),
)


def guess_class(label: str) -> str:
    """The class a raw label most likely means (``"other"`` when no hint matches).

    A hint of three letters or more matches where a word starts (``Viral Pneumonia``, but
    not ``abnormal`` for ``normal``); a shorter one only the whole label (``TB``, not ``stb``).
    """
    text = label.strip().lower()
    for name, hints in LABEL_HINTS:
        if any(hint == text or (len(hint) > 2 and re.search(rf"(?<![a-z]){re.escape(hint)}", text))
               for hint in hints):
            return name
    return "other"


def starter_config(manifest: str | Path) -> str:
    """YAML text of a run config for ``manifest``, commented for a first edit.

    Raises:
        InputError: the manifest cannot be read (from ``read_table``).
    """
    manifest = Path(os.path.abspath(manifest))
    table = read_table(manifest)
    labels = Counter(value.strip() for value in table.get("label", []))
    sources = Counter(value.strip() for value in table.get("source", []))
    masks = sum(1 for value in table.get("mask_path", []) if value.strip())
    patients = sum(1 for value in table.get("patient_id", []) if value.strip())
    n_rows = len(table)
    lines = [
        f"# Starter config for {manifest.name}: {n_rows} images, {len(labels)} labels, "
        f"{len(sources)} sources, {masks} lung masks, {patients} patient ids.",
        "# Written by `cxr-audit init`; edit, then `cxr-audit run THIS.yaml --out DIR`.",
        "# Every key not set here has the default of README 'Config reference'.",
        "data:",
        f"  manifest: {json.dumps(str(manifest))}",
        *_label_map_lines(labels),
        "  image_size: 224          # the backbones' ImageNet size",
        "  test_fraction: 0.15      # held-out test patients",
        "  n_folds: 5",
        "  seed: 0",
        "segmentation:",
        *_segmentation_lines(masks, n_rows),
        "models:",
        "  backbones: [mobilenetv2]  # the fastest of the paper's five on a CPU",
        "  weights: imagenet          # downloaded by Keras when online",
        "  weights_dirs: []           # offline: folders holding Keras' cache-named files",
        "  input_modes: [raw, lung_masked]",
        "probes:",
        *_target_class_lines(labels),
        "  seed: 0",
    ]
    if len(sources) < 2:
        lines.append("# One source only: the site and leave-one-source-out checks cannot run; "
                     "judge with --policy examples/policy-single-source.yaml (README).")
    if patients < n_rows:
        lines.append(f"# {n_rows - patients} image(s) have no patient id: each counts as its "
                     "own patient in the splits and the leakage check.")
    return "\n".join(lines) + "\n"


def _label_map_lines(labels: Counter) -> list[str]:
    """``label_map`` entries for the labels that are not class names, each a guess to check."""
    unknown = sorted(label for label in labels if label.lower() not in CLASSES)
    counts = ", ".join(f"{label} {count}" for label, count in sorted(labels.items()))
    if not unknown:
        return [f"  # labels found: {counts}: all are class names ({', '.join(CLASSES)})"]
    lines = [f"  # labels found: {counts}. The classes are {', '.join(CLASSES)};",
             "  # each other label is mapped below by a guess from its name: check each one.",
             "  label_map:"]
    lines += [f"    {json.dumps(label)}: {guess_class(label)}" for label in unknown]
    return lines


def _target_class_lines(labels: Counter) -> list[str]:
    """``probes.target_class``: covid when the data has it, else a class that is not normal
    (the rarest of several), with why."""
    counts = Counter()
    for label, count in labels.items():  # class names map to themselves, as in label_map
        counts[guess_class(label)] += count
    follows = "# the class masking.raw_vs_lung and ablation.class_size follow"
    if "covid" in counts or not counts:
        return [f"  target_class: covid      {follows}"]
    diseases = sorted((name for name in counts if name != "normal"),
                      key=lambda name: (counts[name], CLASSES.index(name)))
    if not diseases:
        return [f"  target_class: normal     {follows}: the only class found"]
    if len(diseases) == 1:
        why = "the one class that is not normal"
    else:
        found = ", ".join(f"{name} {counts[name]}" for name in diseases)
        why = (f"the rarest class that is not normal ({found}), the one a model most easily "
               "finds by exclusion, as the paper's COVID")
    return [f"  target_class: {diseases[0]:<10} {follows};",
            f"  # no covid label: {why}. Set the disease the audit is about."]


def _segmentation_lines(masks: int, n_rows: int) -> list[str]:
    if masks == n_rows and n_rows:
        return ["  source: manifest         # every image has a lung mask"]
    if masks:
        return [f"  source: auto             # {masks} of {n_rows} images have masks; the "
                "segmenter shipped with the package masks the rest",
                "                           # (`unet` instead trains a U-Net on your masks)"]
    return ["  source: pretrained       # no lung masks: the segmenter shipped with the package",
            "                           # masks every image (README: Where lung masks come from);",
            "                           # your own masks: `cxr-audit data import --masks DIR`"]
