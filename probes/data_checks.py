"""Checks on the data alone, before any model: label-source confounding and train/test leakage.

- ``data.confounding`` (``ConfoundingProbe``): how strongly the label can be read off the
  source. Headline metric Cramér's V of the label x source table (0: labels spread the same
  way over every source, 1: each label from its own source), with the chi-square test's
  p-value.
- ``data.leakage`` (``LeakageProbe``): test images whose patient, or a near-duplicate of the
  image itself, is also in the training rows. Headline metric: how many test images leak.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association

from audit.data.hashing import (
    NEAR_DUPLICATE_DISTANCE,
    NEAR_DUPLICATE_HASH_SIZE,
    NEAR_DUPLICATE_MIN_CORRELATION,
    confirmed_near_duplicates,
    dhash,
    pack_hashes,
)
from probes.base import CheckResult, ProbeContext

NOT_ESTIMABLE = "not estimable"
MAX_TABLE_ROWS = 500  # leaking pairs listed in the table (all leaking rows are in details)


class ConfoundingProbe:
    """Label x source contingency table, chi-square test and Cramér's V."""

    check_id = "data.confounding"
    title = "Label-source confounding"

    def run(self, context: ProbeContext) -> CheckResult:
        manifest = context.dataset.manifest
        counts = pd.crosstab(manifest["label"].astype(str), manifest["source"].astype(str))
        known = [name for name in context.dataset.classes if name in counts.index]
        counts = counts.reindex(known + sorted(set(counts.index) - set(known)))  # class order
        if counts.shape[0] < 2 or counts.shape[1] < 2:
            only = "source" if counts.shape[1] < 2 else "label"
            return CheckResult.not_run(
                self.check_id, self.title,
                f"the data has a single {only}, so label-source association is not defined "
                f"({counts.shape[0]} label(s), {counts.shape[1]} source(s))")
        test = chi2_contingency(counts.to_numpy())
        cramers_v = float(association(counts.to_numpy(), method="cramer"))
        per_source = _per_source_rows(counts)
        single = [row["source"] for row in per_source if row["n_labels"] == 1]
        notes = [f"Source {name!r} holds a single label: per-source metrics (accuracy within the "
                 f"source, leave-one-source-out scores) are {NOT_ESTIMABLE} for it."
                 for name in single]
        return CheckResult(
            check_id=self.check_id,
            title=self.title,
            metric_name="Cramér's V",
            metric=cramers_v,
            p_value=float(test.pvalue),
            summary=(f"Label and source are associated with Cramér's V = {cramers_v:.2f} "
                     f"(chi-square {test.statistic:.1f}, {test.dof} df, p = {test.pvalue:.2g}) "
                     f"over {int(counts.to_numpy().sum())} images from {counts.shape[1]} sources; "
                     f"{len(single)} source(s) hold a single label."),
            explanation=(
                "Cramér's V measures how much knowing an image's source tells you about its "
                "label: 0 means every source contributes the labels in the same proportions, 1 "
                "means each label comes from its own source. When it is high, a classifier can "
                "score well by recognising the hospital, scanner or dataset an image came from "
                "(markers, borders, exposure) instead of the disease, and a good test score "
                "does not show otherwise, because the test images share the same confounding."),
            details={"chi2": float(test.statistic), "dof": int(test.dof),
                     "n_images": int(counts.to_numpy().sum()), "single_label_sources": single},
            tables={"label_by_source": _count_rows(counts), "per_source": per_source},
            figures={"label_by_source": {
                "kind": "heatmap", "title": "Images per label and source",
                "row_labels": list(counts.index), "col_labels": list(counts.columns),
                "values": counts.to_numpy().tolist(), "fmt": "d"}},
            notes=notes,
        )


def _count_rows(counts: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"label": label, **{source: int(n) for source, n in row.items()}}
            for label, row in counts.iterrows()]


def _per_source_rows(counts: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for source in counts.columns:
        column = counts[source]
        n_labels = int((column > 0).sum())
        rows.append({
            "source": source,
            "n_images": int(column.sum()),
            "n_labels": n_labels,
            "majority_label": str(column.idxmax()),
            "majority_share": float(column.max() / column.sum()),
            "per_source_metrics": ("estimable" if n_labels > 1
                                   else f"{NOT_ESTIMABLE} (single label)"),
        })
    return rows


class LeakageProbe:
    """Test images that share a patient with, or nearly duplicate, a training image."""

    check_id = "data.leakage"
    title = "Train/test leakage"

    def run(self, context: ProbeContext) -> CheckResult:
        dataset, splits = context.dataset, context.splits
        train, test = np.asarray(splits.train), np.asarray(splits.test)
        pairs = (_patient_pairs(dataset.groups, train, test)
                 + _duplicate_pairs(dataset.images, train, test))
        paths = dataset.manifest["path"].astype(str).to_numpy()
        leaking = sorted({t for t, _, _ in pairs})
        by_patient = len({t for t, _, reason in pairs if reason == "same patient"})
        by_image = len({t for t, _, reason in pairs if reason != "same patient"})
        table = [{"test_row": t, "train_row": r, "test_path": paths[t], "train_path": paths[r],
                  "test_patient": str(dataset.groups[t]), "train_patient": str(dataset.groups[r]),
                  "reason": reason} for t, r, reason in pairs[:MAX_TABLE_ROWS]]
        notes = [] if len(pairs) <= MAX_TABLE_ROWS else [
            f"The leaking-pairs table lists the first {MAX_TABLE_ROWS} of {len(pairs)} pairs; "
            "details.leaking_rows lists every leaking test row."]
        return CheckResult(
            check_id=self.check_id,
            title=self.title,
            metric_name="leaking test images",
            metric=float(len(leaking)),
            summary=(f"{len(leaking)} of {len(test)} test images leak from training: "
                     f"{by_patient} share a patient with a training image and {by_image} nearly "
                     f"duplicate one ({len(pairs)} leaking pairs)."),
            explanation=(
                "A test image leaks when the same patient, or practically the same picture, is "
                "also in the training rows. The model may then recognise the person or the "
                "picture rather than the disease, and the test score overstates how it would do "
                "on new patients. Near-duplicates are found with a perceptual difference hash "
                f"({NEAR_DUPLICATE_HASH_SIZE ** 2} bits, at most {NEAR_DUPLICATE_DISTANCE} bits "
                "apart), which survives re-encoding, resizing and small exposure changes, and "
                "confirmed by a thumbnail correlation of at least "
                f"{NEAR_DUPLICATE_MIN_CORRELATION}, which look-alike images of different "
                "patients do not reach."),
            details={"n_test": int(len(test)), "n_train": int(len(train)),
                     "same_patient": by_patient, "near_duplicate": by_image,
                     "leaking_rows": leaking},
            tables={"leaking_pairs": table},
            notes=notes,
        )


def _patient_pairs(groups: np.ndarray, train: np.ndarray, test: np.ndarray) -> list[tuple]:
    """``(test_row, train_row, "same patient")`` for every train image of a test patient."""
    train_by_patient = pd.Series(train).groupby(groups[train]).agg(list)
    return [(int(t), int(r), "same patient")
            for t in test if groups[t] in train_by_patient.index
            for r in train_by_patient[groups[t]]]


def _duplicate_pairs(images: np.ndarray, train: np.ndarray, test: np.ndarray) -> list[tuple]:
    """``(test_row, train_row, reason)`` for test images within the near-duplicate distance."""
    rows = np.concatenate([train, test])
    hashes = pack_hashes([dhash(np.asarray(images[row]), NEAR_DUPLICATE_HASH_SIZE) for row in rows],
                         NEAR_DUPLICATE_HASH_SIZE)
    in_test = np.r_[np.zeros(len(train), bool), np.ones(len(test), bool)]
    pairs = []
    for i, j, distance, correlation in confirmed_near_duplicates(
            hashes, lambda k: np.asarray(images[rows[k]]),
            wanted=lambda i, j: in_test[i] != in_test[j]):
        t, r = (rows[j], rows[i]) if in_test[j] else (rows[i], rows[j])
        pairs.append((int(t), int(r), f"near-duplicate ({distance} bits, thumbnail "
                                      f"correlation {correlation:.3f})"))
    return pairs
