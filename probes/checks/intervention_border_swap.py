"""``intervention.border_swap``: does the audited model's call follow the image's outer band?

For pairs of test images (i, j) whose target calls differ, the composite is i's image with
its outer band (``probes.border_fraction`` of the side on every edge, the band of
``models.inputs.border_band`` that the ``border_only`` input mode and ``attention.border``
read) filled from j, feathered (``probes.swap``). The band shows no disease, so a call that
follows it (equals j's) is a shortcut whether or not the band names the hospital: a marker
tied to the label within one source, text, collimation. Pairs are drawn within and across
sources alike. A marker tied to the label in one hospital steers only the composites that
carry or lose that hospital's band, so the pairs are grouped by the source of the swapped
band and each source with ``MIN_SOURCE_PAIRS`` pairs is judged on its own, besides all
pairs together: the headline is the largest band-following share among these groups, with
its Wilson interval and an exact binomial test against ``BAND_NULL_SHARE`` (the share that
calls near the decision boundary give when any part of the image changes), Holm-adjusted
over the groups. Pooled over every source alone, the share diluted one site's marker below
the threshold (real radiographs, benchmarks/README.md).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests

from models.inputs import border_band
from probes import swap
from probes.base import CheckResult, CheckSpec, Gate, ProbeContext, class_word

BAND_NULL_SHARE = 0.1  # the null's band-following share (module docstring)
MIN_SOURCE_PAIRS = 20  # pairs a band source needs to be judged on its own (from 10 pairs a
# clean control's source share reached 0.27, benchmarks/README.md)

SPEC = CheckSpec(
    id="intervention.border_swap",
    title="Decisions that follow the image border",
    question="Swap only the outer border of two images: does the model's call follow it?",
    metric="share of border-swap composites whose call follows the swapped border band",
    # Clean controls at 5 seeds measured 0.08-0.20, a real-radiograph control 0.10-0.22,
    # the demo 0.21-0.45 (benchmarks/README.md); few seeds and pairs, so a warning, and
    # not required.
    default=Gate(level="warn", threshold=0.25, required=False),
    order=66,
    p_value="analytic",
    explanation=(
        "Each composite is one test image with its outer border replaced by the border of "
        "another image that the model calls differently. The border shows no disease, so a "
        "model reading the lungs keeps its call; a call that follows the border means markers, "
        "text, collimation or letterboxing decide, even when they are tied to the label "
        "within a single hospital."),
    next_steps=(
        "Open the composites gallery to see what the border carries (a marker, bars, a "
        "wedge), then crop or blank the border of the training images, or train on "
        "lung-masked inputs, and re-audit."),
    follows_target_class=True,
)


def run(context: ProbeContext) -> CheckResult:
    """Band-following share of border-swap composites, within and across sources pooled."""
    if context.predict_images is None:
        return SPEC.not_run("no image prediction service in the probe context "
                            "(ProbeContext.predict_images)")
    dataset = context.dataset
    rows = np.asarray(context.splits.test)
    called = swap.target_calls(context, rows)
    if called.all() or not called.any():
        return SPEC.not_run(f"the model calls every one of the {len(rows)} test images "
                            f"{swap.call_word(context, bool(called[0]))}: no pair to swap")
    sources = np.asarray(dataset.sources)[rows]
    rng = np.random.default_rng(context.seed)
    base, donor = swap.draw_pairs(called, sources, "any", context.params.swap_pairs, rng)
    relation = np.where(sources[base] == sources[donor], "within", "across")
    band = border_band(dataset.image_size, context.params.border_fraction)
    pairs = swap.swap(context, rows, called, base, donor, relation, band)
    return _result(context, rows, called, pairs, band)


def _result(context, rows, called, pairs, band) -> CheckResult:
    dataset, word = context.dataset, class_word(context.params.target_class)
    follows = ~pairs.follows_base  # the band is the donor's
    labels, sources = dataset.labels[rows], np.asarray(dataset.sources)[rows]
    by_band_source = _by_band_source(follows, sources[pairs.donor])
    worst = max(by_band_source, key=lambda row: row["share"])
    hits, n, share, p_value = worst["follow_border"], worst["pairs"], worst["share"], worst["p_holm"]
    ci = (worst["ci_low"], worst["ci_high"])
    pooled = worst is by_band_source[0]  # all pairs (or the one source's)
    where = "" if pooled else f" whose border is {worst['band_source']}'s"
    groups = ("" if len(by_band_source) == 1 else
              f"; the largest share of {len(by_band_source)} groups: all pairs and each border "
              f"source with {MIN_SOURCE_PAIRS} pairs, Holm over them")
    overall = "" if pooled else f" Over all {len(follows)} pairs: {follows.mean():.0%}."
    band_class = np.array([dataset.classes[c] for c in labels[pairs.donor]])
    band_call = np.array([swap.call_word(context, not c) for c in pairs.base_called])
    by_class = swap.share_rows(follows, {"band_class": band_class})
    by_relation = swap.share_rows(follows, {"relation": pairs.relation,
                                            "band_call": band_call})
    by_source_pair = swap.share_rows(follows, {"interior_source": sources[pairs.base],
                                               "band_source": sources[pairs.donor]})
    figures, artifacts = swap.gallery(context, rows, called, pairs, follows, band,
                                      ("border", "interior", "composite"), ("border", "interior"),
                                      np.ones(len(follows), bool))
    figures["shares"] = swap.shares_figure(
        "Composites following the swapped border", by_relation,
        lambda row: f"{row['relation']}, border {row['band_call']}",
        "share following the border", reference=BAND_NULL_SHARE, reference_label="null share")
    return SPEC.result(
        metric_name="border-following share", metric=share, ci=ci, p_value=p_value,
        summary=(f"{context.audited}, {word} call: the outer "
                 f"{context.params.border_fraction:.0%} band of one test image around another "
                 f"called differently; the composite follows the band in {share:.0%} of the "
                 f"{n} pairs{where} (95% CI {ci[0]:.0%}-{ci[1]:.0%}; exact binomial p = "
                 f"{p_value:.3g} against {BAND_NULL_SHARE:.0%}{groups}).{overall}"),
        details={"target_class": context.params.target_class, "model": context.audited,
                 "band_source": worst["band_source"], "pairs": n, "follow_border": hits,
                 "p_band_source": worst["p"], "all_pairs": len(follows),
                 "all_follow_border": int(follows.sum()), "null_share": BAND_NULL_SHARE,
                 "band_area_share": float(band.mean()), "n_test_images": int(len(rows)),
                 "within_pairs": int((pairs.relation == "within").sum())},
        tables={"by_band_source": by_band_source, "by_class": by_class,
                "by_relation": by_relation, "by_source_pair": by_source_pair},
        figures=figures, artifacts=artifacts,
        notes=[f"Band {context.params.border_fraction:g} of the side on every edge "
               f"({band.mean():.0%} of the image), feathered by a Gaussian of "
               f"{swap.FEATHER_FRACTION:.0%} of the side; pairs drawn from seed {context.seed}, "
               f"at most {context.params.swap_pairs} (probes.swap_pairs), as many {word} "
               "borders as others."],
    )


def _by_band_source(follows: np.ndarray, band_sources: np.ndarray) -> list[dict]:
    """``swap.share_rows`` of all pairs, then of each band source with ``MIN_SOURCE_PAIRS``
    pairs (only the one row when there is a single source), each with its band-following
    count, exact binomial p against ``BAND_NULL_SHARE`` and its Holm adjustment over the
    rows. All pairs stay a row of their own: a band effect spread over sources too small to
    judge alone must still count."""
    names = sorted(set(band_sources))
    table = swap.share_rows(follows, {"band_source": np.full(
        len(follows), "all sources" if len(names) > 1 else names[0])})
    if len(names) > 1:
        table += [row for row in swap.share_rows(follows, {"band_source": band_sources})
                  if row["pairs"] >= MIN_SOURCE_PAIRS]
    for row in table:
        row["follow_border"] = round(row["share"] * row["pairs"])
        row["p"] = float(binomtest(row["follow_border"], row["pairs"], BAND_NULL_SHARE,
                                   alternative="greater").pvalue)
    for row, adjusted in zip(table, multipletests([row["p"] for row in table], method="holm")[1],
                             strict=True):
        row["p_holm"] = float(adjusted)
    return table
