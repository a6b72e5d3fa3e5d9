"""A judged result with what the reviewer-facing parts of the report read: the audited
identity, and per-source rows of ``performance.within_source``,
``generalization.leave_one_source_out`` and ``generalization.external`` with exactly the
keys those checks write."""

from __future__ import annotations

from dataclasses import replace

from audit.core.config import CheckPolicy, PolicyConfig
from audit.core.result import AuditResult
from audit.gate import judge
from probes.base import CheckResult
from tests.report_fixtures import REPORT_POLICY

AUDITED = {
    "model": {"key": "mobilenetv2/raw", "file": "models/mobilenetv2-raw-seed0/model.keras",
              "sha256": "a" * 64, "identity": "0123456789abcdef", "backbone": "mobilenetv2",
              "input_mode": "raw", "trained_here": True},
    "data": {"manifest": "manifest.csv", "sha256": "b" * 64, "rows": 1418, "rows_used": 1417,
             "rows_excluded": 1, "sources": ["cohen", "hannover", "kermany", "shenzhen"],
             "synthetic": None, "data_hash": "3f9a0c1d2e4b5a69"},
    "tool": {"name": "cxr-shortcut-audit", "version": "0.1.0", "git_commit": "c" * 40},
    "date": "2026-12-02T06:30:00Z",
}


def within_source(accuracy: float = 0.91, chance: float = 0.25) -> CheckResult:
    rows = [{"source": "cohen", "n": 60, "labels": 3, "accuracy": accuracy,
             "accuracy_ci_low": accuracy - 0.07, "accuracy_ci_high": accuracy + 0.05,
             "target_recall": 0.95, "baseline_accuracy": 0.61, "chance": chance},
            {"source": "kermany", "n": 33, "labels": 2, "accuracy": 0.82,
             "accuracy_ci_low": 0.7, "accuracy_ci_high": 0.9, "target_recall": None,
             "baseline_accuracy": 0.52, "chance": chance,
             "note": "33 test images, 2 label(s); needs at least 40 images and 2 labels"}]
    return CheckResult(check_id="performance.within_source", title="Accuracy within each source",
                       metric_name="baseline share", metric=0.3,
                       summary="Within each source the model beats the source-only baseline.",
                       tables={"per_source": rows},
                       details={"overall_accuracy": 0.89, "baseline_accuracy": 0.58,
                                "baseline_target_auroc": 0.7, "model_target_auroc": 0.93,
                                "chance": chance, "target_class": "opacity",
                                "within_source_skill": 0.41, "pooled_skill": 0.86,
                                "overall_skill": 0.8, "sources_measured": ["cohen"],
                                "min_images": 40})


def held_out(external: float = 0.37, internal: float = 0.89) -> CheckResult:
    rows = [{"held_out": "hannover", "labels": "covid, opacity", "shared_labels": "covid",
             "reason": None, "n_internal": 120, "n_external": 40,
             "accuracy_internal": internal, "accuracy_external": external,
             "drop": internal - external, "p_value": 0.0001},
            {"held_out": "cohen", "labels": "covid, opacity", "shared_labels": "opacity",
             "reason": None, "n_internal": 110, "n_external": 50, "accuracy_internal": 0.85,
             "accuracy_external": 0.8, "drop": 0.05, "p_value": 0.4},
            {"held_out": "shenzhen", "labels": "other", "shared_labels": "",
             "reason": "shares no label with the other sources"}]
    return CheckResult(check_id="generalization.leave_one_source_out",
                       title="Accuracy lost on a source never seen in training",
                       metric_name="mean accuracy drop", metric=0.285, ci=(0.2, 0.37),
                       p_value=0.0025, p_floor=0.0025,
                       summary="Held out one source at a time: accuracy falls by +0.29.",
                       tables={"by_held_out_source": rows})


def external_sources(accuracy: float = 0.55) -> CheckResult:
    return CheckResult(check_id="generalization.external", title="Accuracy on external sources",
                       metric_name="accuracy drop", metric=0.3, p_value=0.01,
                       summary="External sources lose accuracy.",
                       details={"internal_accuracy": 0.89, "n_internal": 40,
                                "manifests": [{"key": "data.external[0]", "n_images": 80,
                                               "n_quarantined": 2, "sources": ["padchest"]}]},
                       tables={"per_source": [
                           {"source": "padchest", "n": 80, "accuracy": accuracy,
                            "accuracy_ci_low": accuracy - 0.1, "accuracy_ci_high": accuracy + 0.1,
                            "internal_accuracy": 0.89, "p_value": 0.002}]})


GALLERY_CAPTION = "How to read the composites: the arrow gives the model's call."


def border_swap(share: float = 0.35, pairs: int = 60, npz: str | None = None) -> CheckResult:
    """``intervention.border_swap`` with the details keys and tables the check writes and,
    given the run-relative path of an image npz, its composites gallery."""
    rows = [{"relation": relation, "band_call": "COVID", "pairs": pairs // 2, "share": share,
             "ci_low": share - 0.15, "ci_high": share + 0.15} for relation in ("across", "within")]
    figures = {"composites": {"kind": "image_gallery", "artifact": "composites", "npz": npz,
                              "columns": 3, "title": "Composites of mobilenetv2/raw",
                              "captions": ["border: covid, cohen -> COVID"] * 6,
                              "caption": GALLERY_CAPTION}} if npz else {}
    return CheckResult(check_id="intervention.border_swap",
                       title="Decisions that follow the image border",
                       metric_name="border-following share", metric=share,
                       ci=(share - 0.11, share + 0.13), p_value=0.0001,
                       summary="The composite follows the band.",
                       details={"target_class": "covid", "model": "mobilenetv2/raw",
                                "band_source": "cohen", "pairs": pairs,
                                "follow_border": round(share * pairs), "p_band_source": 5e-5,
                                "all_pairs": 2 * pairs, "all_follow_border": pairs // 3,
                                "null_share": 0.1, "band_area_share": 0.19,
                                "n_test_images": 120, "within_pairs": 20},
                       tables={"by_band_source": [
                                   {"band_source": source, "pairs": pairs,
                                    "follow_border": round(value * pairs), "share": value,
                                    "ci_low": value - 0.1, "ci_high": value + 0.1,
                                    "p": p, "p_holm": 2 * p}
                                   for source, value, p in (("cohen", share, 5e-5),
                                                            ("hannover", 0.1, 0.5))],
                               "by_relation": rows}, figures=figures)


def surround_swap(share_across: float = 0.62, share_within: float = 0.3) -> CheckResult:
    """``intervention.surround_swap`` with the details keys and tables the check writes."""
    def share(name, value, n):
        return {"pairs": n, f"follow_{name}": round(value * n), "share": value,
                "ci": [value - 0.1, value + 0.1]}

    rows = [{"relation": "across", "surround_class": "covid", "pairs": 30, "share": share_across,
             "ci_low": share_across - 0.15, "ci_high": share_across + 0.12},
            {"relation": "within", "surround_class": "covid", "pairs": 30, "share": share_within,
             "ci_low": share_within - 0.12, "ci_high": share_within + 0.15}]
    return CheckResult(check_id="intervention.surround_swap",
                       title="Decisions that follow the hospital around the lungs",
                       metric_name="surround-following share, across minus within sources",
                       metric=share_across - share_within, ci=(0.1, 0.5), p_value=0.003,
                       summary="The composite follows the surround.",
                       details={"target_class": "covid", "model": "mobilenetv2/raw",
                                "baseline": "same-source pairs", "n_test_images": 120,
                                "across": share("surround", share_across, 60),
                                "within": share("surround", share_within, 60),
                                "feather_sigma_px": 0.96},
                       tables={"by_class": rows,
                               "by_source_pair": [{"lung_source": "cohen",
                                                   "surround_source": "hannover", "pairs": 12,
                                                   "share": 0.75, "ci_low": 0.47,
                                                   "ci_high": 0.91}]})


def review_result(base: AuditResult, checks: tuple[CheckResult, ...] | None = None,
                  policy: PolicyConfig = REPORT_POLICY, name: str = "default") -> AuditResult:
    """``base`` (``tests.report_fixtures.build_audit_result``, built once per module: its
    metrics take a moment) with the audited identity, its leave-one-source-out check
    measured (``held_out()``) and the within-source and external checks added, or
    ``checks`` instead of those three, judged by ``policy``."""
    kept = tuple(check for check in base.checks
                 if check.check_id != "generalization.leave_one_source_out")
    extra = checks if checks is not None else (within_source(), held_out(), external_sources())
    config = {**base.provenance["config"], "probes": {"target_class": "covid"}}
    measured = replace(base, checks=kept + extra, audited=AUDITED,
                       provenance={**base.provenance, "config": config})
    return judge(measured, policy, name)


RELAXED = PolicyConfig(alpha=0.05, checks={
    **REPORT_POLICY.checks,
    "masking.raw_vs_lung": CheckPolicy(gate="fail", threshold=0.15, required=False,
                                       reason="external model: no lung-masked twin"),
    "site.embedding": CheckPolicy(gate="ignore", threshold=None),
})
"""``REPORT_POLICY`` relaxing two checks whose defaults gate and require them."""
