"""``attention.border``: how much of the audited model's Grad-CAM mass lies in the image border.

The measurement is ``probes.attention``'s (shared with ``attention.outside_lung``); this
module says which region is measured. The band's average dilutes a marker that fills one
corner; ``attention.localized`` reads the band zone by zone.
"""

from __future__ import annotations

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext

SPEC = CheckSpec(
    id="attention.border",
    title="Attention on the image border",
    question="Does the model look at the image border (labels, markers, letterboxing) "
             "instead of the chest?",
    metric="Grad-CAM mass in the border band over the band's area share (1 = uniform)",
    # Grad-CAM's coarse cells blur attention (lung-focused models measure about 0.5-0.9,
    # benchmarks/attention_thresholds.py), so the threshold sits just above uniform and
    # the p-value guards against false alarms.
    default=Gate(level="fail", threshold=1.05),
    order=50,
    p_value="analytic",
    explanation=(
        "Grad-CAM shows which parts of an image drove the model's decision. Enrichment 1 means "
        "the border band got the share of attention its area would get; well above 1 means the "
        "model's evidence sits at the image edges, where markers, text and collimation edges "
        "are, not in the lungs."),
    next_steps=(
        "Open the Grad-CAM gallery, and attention.localized's zone table to see which edge or "
        "corner draws the attention, then crop or blank that part of the training images (or train on "
        "lung-masked inputs) and re-run."),
)


def run(context: ProbeContext) -> CheckResult:
    """Border-band enrichment of the audited model's Grad-CAM, worst class first."""
    from probes.attention import border_band_regions, run_attention  # TensorFlow

    return run_attention(context, SPEC, "border enrichment", border_band_regions)
