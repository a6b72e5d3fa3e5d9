"""``data.leakage``: test images whose patient, or a near-duplicate of the image itself, is
also in the training rows. Headline metric: how many test images leak."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.hashing import (
    NEAR_DUPLICATE_DISTANCE,
    NEAR_DUPLICATE_HASH_SIZE,
    NEAR_DUPLICATE_MIN_CORRELATION,
    confirmed_near_duplicates,
    dhash,
    pack_hashes,
)
from probes.base import CheckResult, CheckSpec, Gate, ProbeContext

MAX_TABLE_ROWS = 500  # leaking pairs listed in the table (all leaking rows are in details)

SPEC = CheckSpec(
    id="data.leakage",
    title="Train/test leakage",
    question="Do images of the same patient (or duplicate images) appear in both the "
             "training and the test split?",
    metric="test images whose patient or near-duplicate image is also in training (count)",
    default=Gate(level="fail", threshold=0.0),
    order=20,
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
    next_steps=(
        "Give the manifest real patient ids (so splits keep a patient's images together) "
        "and remove duplicate images; the leaking_pairs table lists each pair to look at."),
)


def run(context: ProbeContext) -> CheckResult:
    """Test images that share a patient with, or nearly duplicate, a training image."""
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
    return SPEC.result(
        metric_name="leaking test images",
        metric=float(len(leaking)),
        summary=(f"{len(leaking)} of {len(test)} test images leak from training: "
                 f"{by_patient} share a patient with a training image and {by_image} nearly "
                 f"duplicate one ({len(pairs)} leaking pairs)."),
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
