"""``site.image``: can the image source be read off the pixels, shown four ways?

A linear probe (``probes.linear_probe``: cross-validated logistic regression) predicts the
source from frozen ImageNet features of the images shown four ways (``raw``,
``lungs_removed``, ``border_only``, ``lung_masked``). Source still predictable with the
lungs removed is the classic shortcut signature (Maguolo & Nanni 2021); source still
predictable from the lungs alone means masking by itself does not remove the site signal.
Because label and source are confounded, the check also measures source skill *within*
each label, and the label's own predictability with the lungs removed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from models.inputs import apply_input_mode
from probes.base import CheckResult, CheckSpec, Gate, ProbeContext
from probes.linear_probe import (
    Skill,
    format_skill,
    linear_probe_skill,
    reduce_features,
    within_label_skill,
)
from probes.stats import permutation_p_floor

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

MODE_ORDER = ("lungs_removed", "border_only", "raw", "lung_masked")
"""Input modes in report order; the first available one is the headline."""
MASK_MODES = frozenset({"lungs_removed", "lung_masked"})

SPEC = CheckSpec(
    id="site.image",
    title="Source predictable from the images",
    question="Can the image source be recognised from the pictures alone?",
    metric="source predicted from lungs-removed images: balanced accuracy rescaled to "
           "0 = chance, 1 = perfect",
    default=Gate(level="fail", threshold=0.2),
    order=30,
    p_value="permutation",
    needs=("two_sources",),
    explanation=(
        "A model can learn where an image came from instead of what it shows. If the "
        "source can be read off the image where no lung is visible, a classifier trained "
        "on these sources can score well without looking at the disease."),
    next_steps=(
        "Remove what tells the sources apart outside the lungs (crop borders and text, "
        "harmonise exposure) or collect each label from several sources, and check that "
        "masking.raw_vs_lung and generalization.leave_one_source_out agree. Without lung "
        "masks the headline falls back to the border-only input."),
)


def run(context: ProbeContext) -> CheckResult:
    """Source (and label) predictability from the images, per input mode."""
    missing = _missing_features(context)
    if missing:
        return SPEC.not_run(missing)
    measured, within_table, notes = {}, [], []
    for mode in MODE_ORDER:
        rows, reason = _mode_rows(context.dataset, mode)
        if reason:
            notes.append(f"Input {mode!r} not measured: {reason}.")
            continue
        if len(rows) < len(context.dataset):
            notes.append(f"Input {mode!r}: {len(context.dataset) - len(rows)} rows without "
                         "a lung mask left out (their lungs cannot be removed or isolated).")
        # only the headline (first measured) mode pays for permutation refits: its p-value
        # is the check's; the other modes are details shown with CIs
        measured[mode], per_label = _measure_mode(context, mode, rows,
                                                  with_p_values=not measured)
        within_table += [{"input": mode, **entry} for entry in per_label]
    return _result(measured, within_table, notes,
                   permutation_p_floor(context.params.n_permutations))


def _mode_rows(dataset: Dataset, mode: str) -> tuple[np.ndarray, str]:
    """Rows a mode can be applied to, or why none: mask modes need a real lung mask."""
    rows = np.arange(len(dataset))
    if mode not in MASK_MODES:
        return rows, ""
    if dataset.masks is None:
        return rows[:0], "the dataset has no lung masks"
    if dataset.has_mask is not None:
        rows = rows[np.asarray(dataset.has_mask, dtype=bool)]
    return rows, "" if len(rows) else "no row has a lung mask"


def _features(context: ProbeContext, mode: str, rows: np.ndarray) -> np.ndarray:
    """Features of rows ``rows`` shown in ``mode``, from the backbone the params choose."""
    if context.params.site_features_backbone != "audited":
        return np.asarray(context.mode_features(mode))[rows]
    dataset = context.dataset
    masks = dataset.masks[rows] if dataset.masks is not None else None
    images = apply_input_mode(dataset.images[rows], mode, masks, context.params.border_fraction)
    # manifest_hash "": the shown pixels are not the manifest's, so their own hash is their
    # identity (the audited model must not read the manifest rows' cached features)
    shown = replace(dataset, manifest=dataset.manifest.iloc[rows].reset_index(drop=True),
                    images=images, masks=None, has_mask=None, manifest_hash="")
    return context.models[context.audited].embed(shown, np.arange(len(rows)))


def _missing_features(context: ProbeContext) -> str:
    if context.params.site_features_backbone == "audited":
        return "" if context.audited in context.models else (
            f"site_features_backbone is 'audited' but no model {context.audited!r} is loaded")
    return "" if context.mode_features is not None else "no frozen ImageNet feature extractor"


def _skill_row(mode: str, what: str, skill: Skill) -> dict:
    return {"input": mode, "target": what, "n": skill.n, "classes": skill.n_classes,
            "skill": skill.skill if skill.estimable else None, "ci_low": skill.ci[0],
            "ci_high": skill.ci[1], "p_value": skill.p_value, "reason": skill.reason}


def _measure_mode(context: ProbeContext, mode: str, rows: np.ndarray, with_p_values: bool):
    dataset, params = context.dataset, context.params
    labels = dataset.label_names[rows]
    sources, patients = dataset.sources[rows], dataset.groups[rows]
    x = reduce_features(_features(context, mode, rows), params.seed)
    n_perm = params.n_permutations if with_p_values else 0
    common = {"n_bootstrap": params.n_bootstrap, "seed": params.seed}
    # within-label skill is a detail here (CI only); site.embedding tests it with permutations
    within, per_label = within_label_skill(x, sources, labels, patients, n_permutations=0,
                                           **common)
    skills = {
        "source": linear_probe_skill(x, sources, patients, n_permutations=n_perm, **common),
        "label": linear_probe_skill(x, labels, patients, n_permutations=0, **common),
        "source within label": within,
    }
    return skills, per_label


def _result(measured: dict, within_table: list, notes: list, p_floor: float) -> CheckResult:
    headline = next(iter(measured))
    main = measured[headline]["source"]
    if not main.estimable:
        return SPEC.not_run(f"source skill on {headline!r} not estimable: {main.reason}")
    if headline != "lungs_removed":
        notes.append(f"Headline measured on {headline!r} because 'lungs_removed' could not be.")
    modes = list(measured)
    sources = [measured[m]["source"] for m in modes]
    figure = {"kind": "bars", "title": "Source skill per input (0 = chance, 1 = perfect)",
              "labels": modes, "values": [s.skill for s in sources],
              "ci_low": [s.ci[0] for s in sources], "ci_high": [s.ci[1] for s in sources],
              "reference": 0.0, "ylabel": "source skill"}
    table = [_skill_row(m, what, skill) for m in modes for what, skill in measured[m].items()]
    summary = (f"With the image shown as {headline!r}, a linear probe tells the {main.n_classes} "
               f"sources apart at skill {format_skill(main)}, p = {main.p_value:.3g}; label "
               f"skill {format_skill(measured[headline]['label'])}, source skill within a "
               f"label {format_skill(measured[headline]['source within label'])}.")
    return SPEC.result(
        metric_name=f"source skill, {headline} input (0 = chance, 1 = perfect)",
        metric=main.skill, ci=main.ci, p_value=main.p_value, p_floor=p_floor, summary=summary,
        explanation=_explanation(measured), notes=notes,
        details={"headline_input": headline,
                 **{f"{m}.{what}": s.skill for m in modes for what, s in measured[m].items()}},
        tables={"skill_by_input": table, "source_within_label": within_table},
        figures={"source_skill_by_input": figure},
    )


def _clearly_above_chance(skill: Skill | None) -> bool:
    """The skill's 95% CI lies above chance (a statement about the CI, not a policy)."""
    return skill is not None and skill.estimable and skill.ci[0] > 0


def _explanation(measured: dict) -> str:
    """The spec's explanation, then what the measured inputs add to it."""
    removed, lungs = measured.get("lungs_removed", {}), measured.get("lung_masked", {})
    lines = [SPEC.explanation]
    if _clearly_above_chance(removed.get("label")):
        lines.append("Here even the diagnosis can be predicted with the lungs blacked out, "
                     "which the acquisition context, not the disease, must explain.")
    if removed and not removed["source within label"].estimable:
        lines.append("Every label comes from a single source here, so site and disease "
                     "information cannot be told apart within a label.")
    if _clearly_above_chance(lungs.get("source within label")):
        lines.append("Within a label the source is also predictable from the lungs alone "
                     "(mask outline, anatomy such as children's chests, exposure): masking the "
                     "lungs by itself does NOT remove the shortcut.")
    elif lungs and not lungs["source within label"].estimable:
        lines.append("Whether masking removes the site signal cannot be measured here: from "
                     "the lungs alone the source is only separable together with the label.")
    elif lungs:
        lines.append("Within a label, the lungs alone do not reveal the source: lung masking "
                     "removes the site signal this probe can measure.")
    return " ".join(lines)
