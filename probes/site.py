"""Site checks: can the image source be read off the pixels or the model's embedding?

``site.image`` trains a linear probe (cross-validated logistic regression) to predict the
source from frozen ImageNet features of the images shown four ways (``raw``,
``lungs_removed``, ``border_only``, ``lung_masked``). Source still predictable with the
lungs removed is the classic shortcut signature (Maguolo & Nanni 2021); source still
predictable from the lungs alone means masking by itself does not remove the site signal.
Because label and source are confounded, the probe also measures source skill *within*
each label, and the label's own predictability with the lungs removed.

``site.embedding`` asks the same of the audited classifier's penultimate embedding, within
each class, with sources permuted only within a class so that label-source confounding
alone cannot make it fire.

Skill is balanced accuracy rescaled to chance: ``(bacc - 1/k) / (1 - 1/k)``, 0 = chance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from models.inputs import apply_input_mode
from probes.base import CheckResult, ProbeContext
from probes.stats import (
    balanced_accuracy,
    bootstrap_ci,
    chance_rescaled_skill,
    permutation_p_value,
    permute_within_groups,
)

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

MODE_ORDER = ("lungs_removed", "border_only", "raw", "lung_masked")
"""Input modes in report order; the first available one is the headline."""
MASK_MODES = frozenset({"lungs_removed", "lung_masked"})
MAX_FOLDS = 3
"""Cross-validation folds of each linear probe: 3 keeps the many permutation refits affordable
on a few CPU cores (each permutation refits once per fold, per label within labels)."""
PCA_COMPONENTS = 32
"""Features are reduced once, without labels, so each of the many permutation refits is
a small logistic regression (the reduction sees no labels, so it cannot leak them). The
linear algebra here is many small problems, so it runs with one BLAS thread: on a shared
machine more threads only add contention (measured: a 160 x 256 SVD took seconds)."""


@dataclass(frozen=True)
class Skill:
    """A linear probe's cross-validated skill at predicting ``target`` (nan = not estimable)."""

    skill: float
    ci: tuple[float, float]
    p_value: float | None
    n: int
    n_classes: int
    reason: str = ""  # why not estimable

    @property
    def estimable(self) -> bool:
        return not self.reason


@threadpool_limits.wrap(limits=1)
def reduce_features(features: np.ndarray, seed: int) -> np.ndarray:
    """Standardise and project onto at most ``PCA_COMPONENTS`` principal axes (label-free)."""
    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64))
    n_components = min(PCA_COMPONENTS, x.shape[0] - 1, x.shape[1])
    return PCA(n_components=n_components, whiten=True, random_state=seed).fit_transform(x)


def _folds(target: np.ndarray, patients: np.ndarray, seed: int) -> list[tuple]:
    """Patient-grouped stratified folds; as many as the rarest value allows (<= MAX_FOLDS)."""
    values = np.unique(target)
    fewest = min(len(np.unique(patients[target == v])) for v in values)
    n_splits = min(MAX_FOLDS, fewest)
    if n_splits < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(patients, target, groups=patients))


def _out_of_fold(x: np.ndarray, target: np.ndarray, folds: list[tuple], seed: int) -> np.ndarray:
    predicted = np.empty_like(target)
    for train, test in folds:
        model = LogisticRegression(class_weight="balanced", max_iter=500, random_state=seed)
        predicted[test] = model.fit(x[train], target[train]).predict(x[test])
    return predicted


def _skill_of(truth: np.ndarray, predicted: np.ndarray) -> float:
    k = len(np.unique(truth))
    return chance_rescaled_skill(balanced_accuracy(truth, predicted), k) if k > 1 else np.nan


@threadpool_limits.wrap(limits=1)
def linear_probe_skill(
    x: np.ndarray,
    target: np.ndarray,
    patients: np.ndarray,
    *,
    n_permutations: int,
    n_bootstrap: int,
    seed: int,
) -> Skill:
    """Cross-validated skill of a logistic regression predicting ``target`` from ``x``.

    Args:
        x: ``(n, d)`` reduced features.
        target: ``(n,)`` values to predict (sources or labels).
        patients: ``(n,)`` patient ids: a patient's images never straddle train and test.
        n_permutations: Refits with ``target`` shuffled among patients (a patient's images
            move together), for the p-value; 0 skips it.
        n_bootstrap: Resamples of the out-of-fold predictions for the CI.
        seed: Seed of folds, permutations and bootstrap.
    """
    target = np.asarray(target).astype(str)
    n, k = len(target), len(np.unique(target))
    if k < 2:
        return Skill(np.nan, (np.nan, np.nan), None, n, k, f"only one value ({str(target[0])!r})")
    folds = _folds(target, patients, seed)
    if not folds:
        return Skill(np.nan, (np.nan, np.nan), None, n, k,
                     "a value has fewer than 2 patients, too few to cross-validate")
    predicted = _out_of_fold(x, target, folds, seed)
    skill = _skill_of(target, predicted)
    ci = bootstrap_ci(_skill_of, target, predicted, n_bootstrap=n_bootstrap, seed=seed,
                      strata=target)
    p_value = None
    if n_permutations:
        rng = np.random.default_rng(seed)
        shuffles = (permute_within_groups(target, None, rng, units=patients)
                    for _ in range(n_permutations))
        null = [_skill_of(shuffled, _out_of_fold(x, shuffled, folds, seed))
                for shuffled in shuffles]
        p_value = permutation_p_value(skill, null)
    return Skill(skill, ci, p_value, n, k)


def _pooled_skill(truth: np.ndarray, predicted: np.ndarray, label: np.ndarray) -> float:
    """Row-weighted mean over labels of the within-label skill."""
    values = [(np.sum(label == v), _skill_of(truth[label == v], predicted[label == v]))
              for v in np.unique(label)]
    weights, skills = np.array(values, dtype=float).T
    return float(np.sum(weights * skills) / np.sum(weights))


def _label_plan(source: np.ndarray, label: np.ndarray, patients: np.ndarray, seed: int):
    """Per label: the rows usable for a within-label source probe, their folds, or why not.

    A source enters a label's probe only with at least 2 patients under that label (fewer
    cannot be cross-validated); a label with fewer than 2 such sources is not estimable.
    """
    plan = []
    for value in map(str, np.unique(label)):
        rows = np.flatnonzero(label == value)
        kept = [s for s in np.unique(source[rows])
                if len(np.unique(patients[rows][source[rows] == s])) >= 2]
        dropped = sorted(set(source[rows]) - set(kept))
        rows = rows[np.isin(source[rows], kept)]
        folds = _folds(source[rows], patients[rows], seed) if len(kept) >= 2 else []
        reason = "" if folds else (
            f"label {value!r} has a single usable source ({', '.join(kept) or 'none'}): "
            "site and label cannot be told apart here")
        plan.append({"label": value, "rows": rows, "folds": folds, "sources": kept,
                     "dropped": dropped, "reason": reason})
    return plan


@threadpool_limits.wrap(limits=1)
def within_label_skill(
    x: np.ndarray,
    source: np.ndarray,
    label: np.ndarray,
    patients: np.ndarray,
    *,
    n_permutations: int,
    n_bootstrap: int,
    seed: int,
) -> tuple[Skill, list[dict]]:
    """Source skill inside each label, pooled over the labels where it is estimable.

    Sources are permuted only within a label (among patients) for the p-value, so the null
    keeps the label-source confounding: skill that comes from disease information alone
    stays null.

    Returns:
        The pooled ``Skill`` (not estimable when no label has two usable sources) and one
        table row per label (``skill`` None with a ``reason`` where not estimable, never 0).
    """
    source, label = np.asarray(source).astype(str), np.asarray(label).astype(str)
    plan = _label_plan(source, label, patients, seed)
    usable = [p for p in plan if not p["reason"]]
    table = [{"label": p["label"], "n": int(len(p["rows"])), "sources": ", ".join(p["sources"]),
              "excluded_sources": ", ".join(p["dropped"]), "skill": None, "ci_low": None,
              "ci_high": None, "reason": p["reason"]} for p in plan]
    if not usable:
        return Skill(np.nan, (np.nan, np.nan), None, 0, 0, "; ".join(p["reason"] for p in plan)), table

    rows = np.concatenate([p["rows"] for p in usable])
    ends = np.cumsum([len(p["rows"]) for p in usable])
    parts = [slice(end - len(p["rows"]), end) for p, end in zip(usable, ends, strict=True)]

    def predict(target: np.ndarray) -> np.ndarray:
        predicted = np.empty_like(target)
        for p, part in zip(usable, parts, strict=True):
            predicted[part] = _out_of_fold(x[p["rows"]], target[part], p["folds"], seed)
        return predicted

    truth, groups = source[rows], label[rows]
    units = np.char.add(np.char.add(np.asarray(patients)[rows].astype(str), "|"), groups)
    predicted = predict(truth)
    for entry in table:
        part = groups == entry["label"]
        if entry["reason"]:
            continue
        entry["skill"] = _skill_of(truth[part], predicted[part])
        entry["ci_low"], entry["ci_high"] = bootstrap_ci(
            _skill_of, truth[part], predicted[part], n_bootstrap=n_bootstrap, seed=seed,
            strata=truth[part])
    pooled = _pooled_skill(truth, predicted, groups)
    ci = bootstrap_ci(_pooled_skill, truth, predicted, groups, n_bootstrap=n_bootstrap,
                      seed=seed, strata=np.char.add(np.char.add(groups, "|"), truth))
    p_value = None
    if n_permutations:
        rng = np.random.default_rng(seed)
        null = []
        for _ in range(n_permutations):
            shuffled = permute_within_groups(truth, groups, rng, units=units)
            null.append(_pooled_skill(shuffled, predict(shuffled), groups))
        p_value = permutation_p_value(pooled, null)
    return Skill(pooled, ci, p_value, len(rows), len(np.unique(truth))), table


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
    dataset = context.dataset
    masks = dataset.masks[rows] if dataset.masks is not None else None
    images = apply_input_mode(dataset.images[rows], mode, masks, context.params.border_fraction)
    if context.params.site_features_backbone == "audited":
        shown = replace(dataset, manifest=dataset.manifest.iloc[rows].reset_index(drop=True),
                        images=images, masks=None, has_mask=None)
        return context.models[context.audited].embed(shown, np.arange(len(rows)))
    return np.asarray(context.image_features(images))


def _missing_features(context: ProbeContext) -> str:
    if context.params.site_features_backbone == "audited":
        return "" if context.audited in context.models else (
            f"site_features_backbone is 'audited' but no model {context.audited!r} is loaded")
    return "" if context.image_features is not None else "no frozen ImageNet feature extractor"


def _fmt(skill: Skill) -> str:
    if not skill.estimable:
        return "not estimable"
    return f"{skill.skill:.2f} (95% CI {skill.ci[0]:.2f} to {skill.ci[1]:.2f})"


def _skill_row(mode: str, what: str, skill: Skill) -> dict:
    return {"input": mode, "target": what, "n": skill.n, "classes": skill.n_classes,
            "skill": skill.skill if skill.estimable else None, "ci_low": skill.ci[0],
            "ci_high": skill.ci[1], "p_value": skill.p_value, "reason": skill.reason}


class SiteImageProbe:
    """``site.image``: source (and label) predictability from the images, per input mode."""

    check_id = "site.image"
    title = "Source predictable from the images"

    def run(self, context: ProbeContext) -> CheckResult:
        missing = _missing_features(context)
        if missing:
            return CheckResult.not_run(self.check_id, self.title, missing)
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
        return _site_image_result(self, measured, within_table, notes)


def _measure_mode(context: ProbeContext, mode: str, rows: np.ndarray, with_p_values: bool):
    dataset, params = context.dataset, context.params
    labels = dataset.manifest["label"].astype(str).to_numpy()[rows]
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


def _site_image_result(probe, measured: dict, within_table: list, notes: list) -> CheckResult:
    headline = next(iter(measured))
    main = measured[headline]["source"]
    if not main.estimable:
        return CheckResult.not_run(probe.check_id, probe.title,
                                   f"source skill on {headline!r} not estimable: {main.reason}")
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
               f"sources apart at skill {_fmt(main)}, p = {main.p_value:.3g}; label skill "
               f"{_fmt(measured[headline]['label'])}, source skill within a label "
               f"{_fmt(measured[headline]['source within label'])}.")
    return CheckResult(
        check_id=probe.check_id, title=probe.title,
        metric_name=f"source skill, {headline} input (0 = chance, 1 = perfect)",
        metric=main.skill, ci=main.ci, p_value=main.p_value, summary=summary,
        explanation=_site_image_explanation(measured), notes=notes,
        details={"headline_input": headline,
                 **{f"{m}.{what}": s.skill for m in modes for what, s in measured[m].items()}},
        tables={"skill_by_input": table, "source_within_label": within_table},
        figures={"source_skill_by_input": figure},
    )


def _clearly_above_chance(skill: Skill | None) -> bool:
    """The skill's 95% CI lies above chance (a statement about the CI, not a policy)."""
    return skill is not None and skill.estimable and skill.ci[0] > 0


def _site_image_explanation(measured: dict) -> str:
    removed, lungs = measured.get("lungs_removed", {}), measured.get("lung_masked", {})
    lines = ["A model can learn where an image came from instead of what it shows. If the "
             "source can be read off the image where no lung is visible, a classifier trained "
             "on these sources can score well without looking at the disease."]
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


class SiteEmbeddingProbe:
    """``site.embedding``: does the audited model's embedding encode the source within a class?"""

    check_id = "site.embedding"
    title = "Audited model's embedding encodes the source"

    def run(self, context: ProbeContext) -> CheckResult:
        if context.audited not in context.models:
            return CheckResult.not_run(self.check_id, self.title,
                                       f"no audited model {context.audited!r} is loaded")
        dataset, params = context.dataset, context.params
        rows = np.arange(len(dataset))
        x = reduce_features(context.models[context.audited].embed(dataset, rows), params.seed)
        labels = dataset.manifest["label"].astype(str).to_numpy()
        skill, per_label = within_label_skill(
            x, dataset.sources, labels, dataset.groups, n_permutations=params.n_permutations,
            n_bootstrap=params.n_bootstrap, seed=params.seed)
        if not skill.estimable:
            return CheckResult.not_run(self.check_id, self.title, skill.reason)
        summary = (f"Within a class, the audited model's embedding tells {skill.n_classes} "
                   f"sources apart at skill {_fmt(skill)}, p = {skill.p_value:.3g} (sources "
                   "permuted within class).")
        return CheckResult(
            check_id=self.check_id, title=self.title,
            metric_name="source skill within class from the embedding (0 = chance)",
            metric=skill.skill, ci=skill.ci, p_value=skill.p_value, summary=summary,
            explanation=("The classifier's internal representation keeps track of which "
                         "hospital or dataset an image came from, beyond what the diagnosis "
                         "explains. A representation that separates sources lets the final "
                         "layer use the source as a proxy for the label."),
            details={"n_rows": skill.n, "rows_used": "all rows (train and test)"},
            tables={"source_within_class": per_label},
            figures={"source_skill_within_class": _within_figure(per_label)},
            notes=[f"Label {e['label']!r}: {e['reason']}" for e in per_label if e["reason"]],
        )


def _within_figure(per_label: list[dict]) -> dict:
    shown = [e for e in per_label if not e["reason"]]
    return {"kind": "bars", "title": "Source skill within each class (0 = chance)",
            "labels": [e["label"] for e in shown], "values": [e["skill"] for e in shown],
            "ci_low": [e["ci_low"] for e in shown], "ci_high": [e["ci_high"] for e in shown],
            "reference": 0.0, "ylabel": "source skill"}
