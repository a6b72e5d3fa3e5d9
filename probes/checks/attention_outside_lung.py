"""``attention.outside_lung``: how much of the audited model's Grad-CAM mass lies outside the
lungs, plus the pointing game. The measurement is ``probes.attention``'s."""

from __future__ import annotations

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext

SPEC = CheckSpec(
    id="attention.outside_lung",
    title="Attention outside the lungs",
    question="How much of the model's attention falls outside the lungs?",
    metric="Grad-CAM mass outside the lungs over the outside area share (1 = uniform)",
    default=Gate(level="fail", threshold=1.1),  # just above uniform, as attention.border
    order=60,
    p_value="analytic",
    needs=("masks",),
    explanation=(
        "The signs of lung disease are inside the lungs. Enrichment 1 means the area outside "
        "the lungs got the share of Grad-CAM attention its size would get; well above 1 means "
        "the model looks outside the lungs (markers, text, body outline, devices) for its "
        "decision. The pointing game says how often the single hottest point lies inside the "
        "lungs."),
    next_steps=(
        "Open the Grad-CAM gallery to see what outside the lungs draws the attention and "
        "remove it from the training images, or train on lung-masked inputs. It cannot run "
        "without lung masks (from the manifest or segmentation.source)."),
)


def run(context: ProbeContext) -> CheckResult:
    """Outside-lung enrichment of the audited model's Grad-CAM, worst class first."""
    dataset = context.dataset
    if dataset.masks is None or (dataset.has_mask is not None and not dataset.has_mask.any()):
        return SPEC.not_run("no lung masks (segmentation produced none and the manifest has none)")
    from probes.attention import outside_lung_regions, pointing_game, run_attention  # TensorFlow

    return run_attention(context, SPEC, "outside-lung enrichment",
                         lambda context, rows, resolution: outside_lung_regions(context, rows),
                         pointing_game)
