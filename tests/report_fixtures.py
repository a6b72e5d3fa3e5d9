"""A rich, judged ``AuditResult`` for the report writer tests (engineer REPORTS).

It holds checks of every status, figures of every kind (plus an unknown kind and a missing
npz), a real Grad-CAM npz written into the run folder, models with metrics and CV folds,
a data summary, segmentation quality and provenance. ``source`` and ``label`` let a test
plant hostile strings (``<script>``) where metadata flows into the page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit.core.config import CheckPolicy, PolicyConfig
from audit.core.result import AuditResult
from audit.gate import judge
from models.metrics import classification_metrics, fold_summary
from probes.base import CheckResult, Status

GALLERY_NPZ = "artifacts/attention.border/gallery.npz"
CLASSES = ["covid", "opacity", "other", "normal"]
REPORT_POLICY = PolicyConfig(alpha=0.05, checks={
    "data.confounding": CheckPolicy(gate="fail", threshold=0.3),
    "data.leakage": CheckPolicy(gate="fail", threshold=0.0),
    "site.image": CheckPolicy(gate="fail", threshold=0.3),
    "site.embedding": CheckPolicy(gate="warn", threshold=0.3),
    "attention.border": CheckPolicy(gate="fail", threshold=1.5),
    "attention.outside_lung": CheckPolicy(gate="fail", threshold=1.25, required=False),
    "masking.raw_vs_lung": CheckPolicy(gate="fail", threshold=0.15),
    "ablation.class_size": CheckPolicy(gate="warn", threshold=0.15),
    "generalization.leave_one_source_out": CheckPolicy(gate="fail", threshold=0.2),
})
"""Judges the fixture's checks to fail, pass, warn, required-not-run, required-crashed and
optional-not-run."""


def write_gallery_npz(run_dir: Path, relative: str = GALLERY_NPZ, n: int = 6,
                      size: int = 64, seed: int = 0, twin: bool = False) -> Path:
    """A Grad-CAM gallery npz: noisy images, 7x7 maps, square 'lungs' as masks and, with
    ``twin``, a lung-masked twin's maps (``twin_cams``)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 200, (n, size, size), dtype=np.uint8)
    cams = rng.random((n, 7, 7)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    masks[:, size // 4: 3 * size // 4, size // 8: size // 2 - 2] = 1
    masks[:, size // 4: 3 * size // 4, size // 2 + 2: 7 * size // 8] = 1
    path = Path(run_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    twin_cams = {"twin_cams": rng.random((n, 7, 7)).astype(np.float32)} if twin else {}
    np.savez(path, images=images, cams=cams, masks=masks, **twin_cams)
    return path


def build_audit_result(run_dir: Path, source: str = "hannover",
                       label: str = "covid") -> AuditResult:
    """A failing audit, judged by the gate under ``REPORT_POLICY``, whose checks cover
    every status and figure kind.

    Args:
        run_dir: Run folder; the Grad-CAM npz is written under it.
        source: Name of one image source (shown in tables, figures, captions).
            Defaults to "hannover".
        label: Name of the first class (shown likewise). Defaults to "covid".
    """
    write_gallery_npz(run_dir, twin=True)
    classes = [label, *CLASSES[1:]]
    sources = ["cohen", source, "kermany", "shenzhen"]
    checks = (_confounding(classes, sources), _leakage(source), _site_image(sources),
              _border(source), _masking(), _ablation(),
              CheckResult.not_run("generalization.leave_one_source_out",
                                  "Leave-one-source-out generalisation",
                                  "needs at least two sources with every class; found 1"),
              CheckResult(check_id="site.embedding", title="Source in the model's embedding",
                          status=Status.ERROR, reason="ValueError: embedding has NaN rows"),
              CheckResult.not_run("attention.outside_lung", "Attention outside the lungs",
                                  "no lung masks for 3 of 4 sources"))
    measured = AuditResult(checks=checks, models=_models(classes),
                           data=_data(classes, sources), segmentation=_segmentation(sources),
                           provenance=_provenance())
    return judge(measured, REPORT_POLICY)


def _confounding(classes: list[str], sources: list[str]) -> CheckResult:
    counts = [[306, 243, 0, 0], [81, 0, 99, 0], [0, 0, 0, 287], [6, 0, 116, 279]]
    return CheckResult(
        check_id="data.confounding", title="Label-source confounding",
        metric_name="cramers_v", metric=0.86, ci=(0.83, 0.89), p_value=0.0005,
        summary=f"Cramér's V between label and source is 0.86: '{sources[1]}' holds only "
                f"{classes[0]} images.",
        explanation="The source alone predicts the label, so a model can score well by "
                    "recognising the hospital.",
        tables={"label_by_source": [{"label": c, **dict(zip(sources, row, strict=True))}
                                    for c, row in zip(classes, counts, strict=True)]},
        figures={"counts": {"kind": "heatmap", "title": "Label x source", "fmt": "d",
                            "row_labels": classes, "col_labels": sources, "values": counts}},
    )


def _leakage(source: str) -> CheckResult:
    return CheckResult(
        check_id="data.leakage", title="Patient leakage between splits",
        metric_name="leaked_test_images", metric=0.0,
        summary="No test image shares a patient or a near-duplicate with training.",
        details={"duplicates_checked": 1417, "hash": "dhash-8"},
        notes=[f"Patient ids of '{source}' were given by the manifest."],
    )


def _site_image(sources: list[str]) -> CheckResult:
    return CheckResult(
        check_id="site.image", title="Source recognisable from the image",
        metric_name="site_skill", metric=0.12, ci=(0.05, 0.19), p_value=0.04,
        summary="Source predicted with skill 0.12 (chance 0).",
        figures={"skill": {"kind": "bars", "title": "Per-source recall", "labels": sources,
                           "values": [0.4, 0.3, 0.35, 0.2], "ci_low": [0.3, 0.2, 0.25, 0.1],
                           "ci_high": [0.5, 0.4, 0.45, 0.3], "reference": 0.25,
                           "ylabel": "recall"},
                 "sweep": {"kind": "pie", "title": "A figure kind nobody draws"}},
    )


def _border(source: str) -> CheckResult:
    rng = np.random.default_rng(1)
    return CheckResult(
        check_id="attention.border", title="Attention on the image border",
        metric_name="border_ratio", metric=2.4, ci=(2.1, 2.8),
        summary="The border band holds 2.4x its area share of Grad-CAM mass.",
        explanation="The model looks at the edges of the image, where markers and "
                    "letterboxing reveal the source.",
        figures={
            "mass": {"kind": "hist", "title": "Border mass ratio per image", "xlabel": "ratio",
                     "series": {"covid": rng.gamma(4, 0.6, 60).tolist(),
                                "normal": rng.gamma(3, 0.5, 60).tolist()}, "reference": 1.0},
            "best": {"kind": "cam_gallery", "title": "Lung-focused examples", "npz": GALLERY_NPZ,
                     "captions": [f"covid -> normal: {i}0% in the border band"
                                  for i in range(6)], "sources": [source] * 6},
            "lost": {"kind": "cam_gallery", "title": "Worst border cases",
                     "npz": "artifacts/attention.border/missing.npz", "captions": []},
        },
        tables={"per_class": [{"class": "covid", "ratio": 2.9, "n": 60},
                              {"class": "normal", "ratio": 1.6, "n": 60}]},
    )


def _masking() -> CheckResult:
    return CheckResult(
        check_id="masking.raw_vs_lung", title="Raw versus lung-masked accuracy",
        metric_name="covid_recall_drop", metric=0.04, ci=(-0.02, 0.1), p_value=0.3,
        summary="COVID recall drops by 0.04 when only the lungs are shown.",
        figures={"recall": {"kind": "bars", "title": "COVID recall", "labels": ["raw", "lungs"],
                            "values": [0.93, 0.89]}},
    )


def _ablation() -> CheckResult:
    return CheckResult(
        check_id="ablation.class_size", title="Non-COVID class size ablation",
        metric_name="covid_recall_change", metric=0.21,
        summary="COVID recall rises by 0.21 from 50 to 200 images per class.",
        figures={"curve": {"kind": "lines", "title": "COVID recall by class size",
                           "x": [50, 100, 200], "series": {"seed 0": [0.7, 0.8, 0.91],
                                                          "seed 1": [0.72, 0.79, 0.93]},
                           "xlabel": "non-COVID images per class", "ylabel": "recall"}},
    )


def _models(classes: list[str]) -> tuple[dict, ...]:
    """Two models as the pipeline records them (``models.metrics.classification_metrics``
    and ``fold_summary``), one with cross-validation folds, one without."""
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(4), 25)
    proba = rng.dirichlet(np.ones(4), size=100) + np.eye(4)[y_true] * 0.25
    test = classification_metrics(y_true, proba / proba.sum(1, keepdims=True), classes,
                                  n_bootstrap=50)
    folds = [classification_metrics(y_true[i::3], proba[i::3], classes, n_bootstrap=0)
             for i in range(3)]
    mean = fold_summary(folds)
    masked = classification_metrics(y_true[::2], proba[::2] ** 2, classes, n_bootstrap=50)
    return (
        {"key": "mobilenetv2/raw", "backbone": "mobilenetv2", "input_mode": "raw", "seed": 0,
         "weights_origin": "imagenet (local file)", "training_path": "cached",
         "best_epoch": 3, "metrics": test, "cv": {"folds": folds, "mean": mean},
         "history": {"accuracy": [0.6, 0.8, 0.9], "val_accuracy": [0.55, 0.75, 0.85]}},
        {"key": "mobilenetv2/lung_masked", "backbone": "mobilenetv2", "input_mode": "lung_masked",
         "weights_origin": "imagenet (local file)", "training_path": "cached",
         "metrics": masked},
    )


def _data(classes: list[str], sources: list[str]) -> dict:
    counts = {c: dict(zip(sources, row, strict=True)) for c, row in
              zip(classes, [[306, 243, 0, 0], [81, 0, 99, 0], [0, 0, 0, 287], [6, 0, 116, 279]],
                  strict=True)}
    return {"n_images": 1417, "classes": classes, "sources": sources, "mask_origin": "manifest",
            "label_source_counts": counts,
            "quarantined": [{"path": f"images/{sources[1]}/broken.png",
                             "reason": "cannot decode PNG"}]}


def _segmentation(sources: list[str]) -> dict:
    """As ``models.segment`` reports it: quality with bootstrap CIs, rows without a mask."""
    def summary(mean: float) -> dict:
        return {"mean": mean, "ci_low": mean - 0.03, "ci_high": mean + 0.02}
    per_source = {s: {"n": 10 + i, "dice": summary(0.9 - 0.05 * i), "iou": summary(0.8 - 0.05 * i)}
                  for i, s in enumerate(sources)}
    return {"source": "unet", "origin": "unet",
            "quality": {"dice": summary(0.88), "iou": summary(0.79), "per_source": per_source,
                        "n_val": 46, "measured_at": 64},
            "row_origin": {"manifest": 1085, "unet": 332}, "predicted_rows": list(range(40)),
            "rows_without_mask": [{"row": 7, "path": f"images/{sources[1]}/7.png",
                                   "reason": "no mask in the manifest"}],
            "flags": {"n_checked": 1417, "n_flagged": 0, "rows": []}}


def _provenance() -> dict:
    return {
        "versions": {"python": "3.11.9", "tensorflow": "2.21.0", "cxr-shortcut-audit": "0.1.0"},
        "hashes": {"manifest": "3f9a0c1d2e4b5a69", "models": {"mobilenetv2/raw": "a1b2c3d4"}},
        "seeds": {"run": 0, "probes": 0},
        "timings": [{"stage": "features", "seconds": 12.5, "action": "computed"},
                    {"stage": "train_head", "seconds": 3.1, "action": "reused"}],
        "config": {"data": {"source": "csv", "image_size": 224},
                   "models": {"backbones": ["mobilenetv2"], "epochs": 60}},
    }
