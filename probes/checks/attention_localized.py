"""``attention.localized``: is one class's Grad-CAM piled up on one corner or edge of the image?

The measurement is ``probes.zone_attention``'s: the class x zone table of Grad-CAM
enrichment at the map's own resolution, headline the most enriched border cell, Holm over
the cells tested. ``attention.border`` averages the whole band; this check finds a marker
that fills one zone.
"""

from __future__ import annotations

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext

SPEC = CheckSpec(
    id="attention.localized",
    title="Attention piled up on one spot of the border",
    question="Does the model look at one corner or edge of the image (a marker, a letter, a "
             "tag) for one class?",
    metric="largest Grad-CAM enrichment of one border zone (corner or edge) in one class "
           "(1 = uniform)",
    # Clean controls (benchmarks/attention_thresholds.py --kinds control, seeds 1-10,
    # benchmarks/README.md) reach 1.91 (the 'other' class's basal effusion lies next to
    # the lower corners at 7x7 cells, p far below alpha: the threshold is the guard);
    # markers on every COVID image measure 6.2-7.8, the demo's planted "R" 2.26. A
    # warning, not required: the margin above clean controls is thin, and real signs
    # near the border (costophrenic angles) can enter a zone.
    default=Gate(level="warn", threshold=2.0, required=False),
    order=55,
    p_value="analytic",
    explanation=(
        "Grad-CAM shows which parts of an image drove the model's decision. The image border "
        "is cut into four corners and four edges, and for each class the check asks how much "
        "more attention each of them got than its size would get (1 = as much as its size). "
        "A burned-in marker or letter fills one corner, which an average over the whole "
        "border hides; a value well above 1 in one class and zone means the model reads "
        "that spot for that class, not the lungs."),
    next_steps=(
        "Open the Grad-CAM gallery and the zone heatmap: the named class and zone show where "
        "the model looks. Look at those training images' corner for a marker, text or tag, "
        "crop or blank it (or train on lung-masked inputs) and re-run."),
)


def run(context: ProbeContext) -> CheckResult:
    """The most enriched class x border-zone cell of the audited model's Grad-CAM."""
    from probes.zone_attention import run_localized  # TensorFlow

    return run_localized(context, SPEC)
