"""``intervention.surround_swap``: does the audited model's call follow the lungs or the
hospital around them?

For pairs of test images (i, j) whose target calls differ, the composite is j's image with
its lung region (j's mask, feathered) filled from i: i's lungs in j's surround
(``probes.swap``). Its call follows the *surround* when it equals j's, the *lungs* when it
equals i's. The surround can carry legitimate evidence too (heart size, effusion, body
habitus), so the headline isolates the site: the surround-following share of pairs from
different sources minus that of pairs from the same source. Their difference has a Newcombe
interval and a one-sided Fisher exact test (a lungs-reading model follows the surround no
more across sources than within one).

Where fewer than ``MIN_WITHIN_PAIRS`` same-source pairs exist (each source's calls all
alike), the across-source share is compared with a coin flip: metric ``2 * share - 1`` (0
at one half, 1 when every composite follows the surround), Wilson interval rescaled the
same way, exact binomial test against one half.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from probes import swap
from probes.base import CheckResult, CheckSpec, Gate, ProbeContext, class_word
from probes.stats import difference_ci, two_proportion_test, wilson_ci

MIN_WITHIN_PAIRS = 10  # fewer same-source pairs give no usable baseline

SPEC = CheckSpec(
    id="intervention.surround_swap",
    title="Decisions that follow the hospital around the lungs",
    question="Put one patient's lungs into another hospital's image: does the model's "
             "call follow the lungs or the surround?",
    metric="share of lung-swap composites whose call follows the surround, pairs across "
           "sources minus pairs within a source",
    # Clean controls at 3 seeds measured -0.04 to 0.02, the demo 0.10-0.54
    # (benchmarks/README.md); few seeds and pairs, so a warning, and not required.
    default=Gate(level="warn", threshold=0.2, required=False),
    order=64,
    p_value="analytic",
    needs=("masks", "two_sources"),
    explanation=(
        "Each composite is one test image with its lungs replaced by another image's lungs, "
        "the two images called differently by the model. A model that reads the disease "
        "follows the lungs it is shown. Following the surround is not wrong by itself (heart "
        "size or an effusion lie there), so the check compares pairs from different sources "
        "with pairs from the same source: when the surround wins much more often across "
        "sources, what decides is the hospital around the lungs (markers, borders, exposure, "
        "positioning)."),
    next_steps=(
        "Open the composites gallery and the per-source-pair table to see which hospitals' "
        "surrounds decide, then remove what tells them apart (crop, blank or re-window the "
        "images, or train on lung-masked inputs) and re-audit. It needs lung masks and at "
        "least two sources."),
    follows_target_class=True,
)


def run(context: ProbeContext) -> CheckResult:
    """Surround-following share of lung-swap composites, across minus within sources."""
    dataset = context.dataset
    if dataset.masks is None:
        return SPEC.not_run("the dataset has no lung masks")
    if context.predict_images is None:
        return SPEC.not_run("no image prediction service in the probe context "
                            "(ProbeContext.predict_images)")
    rows = np.asarray(context.splits.test)
    if dataset.has_mask is not None:
        rows = rows[np.asarray(dataset.has_mask, dtype=bool)[rows]]
    sources = np.asarray(dataset.sources)[rows]
    if len(np.unique(sources)) < 2:
        return SPEC.not_run(f"the {len(rows)} masked test images come from one source")
    called = swap.target_calls(context, rows)
    if called.all() or not called.any():
        return SPEC.not_run(f"the model calls every one of the {len(rows)} masked test images "
                            f"{swap.call_word(context, bool(called[0]))}: no pair to swap")
    rng = np.random.default_rng(context.seed)
    half = context.params.swap_pairs // 2
    drawn = {relation: swap.draw_pairs(called, sources, relation, half, rng)
             for relation in ("within", "across")}
    if len(drawn["across"][0]) == 0:
        return SPEC.not_run("no two test images from different sources are called differently")
    base = np.concatenate([drawn["within"][0], drawn["across"][0]])
    donor = np.concatenate([drawn["within"][1], drawn["across"][1]])
    relation = np.repeat(["within", "across"], [len(drawn["within"][0]), len(drawn["across"][0])])
    regions = np.asarray(dataset.masks[rows[base]]) > 0  # the base's (j's) lungs
    pairs = swap.swap(context, rows, called, base, donor, relation, regions)
    return _result(context, rows, called, pairs, regions)


def _result(context, rows, called, pairs, regions) -> CheckResult:
    dataset, word = context.dataset, class_word(context.params.target_class)
    follows = pairs.follows_base  # the base is the surround's donor
    across, within = pairs.relation == "across", pairs.relation == "within"
    k_a, n_a, k_w, n_w = (int(follows[across].sum()), int(across.sum()),
                          int(follows[within].sum()), int(within.sum()))
    share_a = k_a / n_a
    share_w = k_w / n_w if n_w else float("nan")
    notes = [f"Composites feathered by a Gaussian of {swap.FEATHER_FRACTION:.0%} of the side; "
             f"pairs drawn from seed {context.seed}, at most {context.params.swap_pairs} "
             "(probes.swap_pairs), half within a source and half across, each half with as "
             f"many {word} surrounds as others, each image the surround of at most one pair "
             "of a kind."]
    if n_w >= MIN_WITHIN_PAIRS:
        metric = share_a - share_w
        ci = difference_ci(k_a, n_a, k_w, n_w)
        p_value = two_proportion_test(k_a, n_a, k_w, n_w)
        metric_name = "surround-following share, across minus within sources"
        baseline = "same-source pairs"
        headline = (f"{share_a:.0%} across sources ({n_a} pairs) vs {share_w:.0%} within a "
                    f"source ({n_w} pairs): difference {metric:+.2f} (95% CI {ci[0]:+.2f} to "
                    f"{ci[1]:+.2f}, Fisher exact p = {p_value:.3g})")
    else:
        metric = 2 * share_a - 1
        low, high = wilson_ci(k_a, n_a)
        ci = (2 * low - 1, 2 * high - 1)
        p_value = float(binomtest(k_a, n_a, 0.5, alternative="greater").pvalue)
        metric_name = "surround-following share across sources, 2 x share - 1"
        baseline = "a coin flip (too few same-source pairs)"
        headline = (f"{share_a:.0%} across sources ({n_a} pairs) against one half: "
                    f"{metric:+.2f} (95% CI {ci[0]:+.2f} to {ci[1]:+.2f}, binomial p = "
                    f"{p_value:.3g})")
        notes.append(f"Only {n_w} same-source pairs are called differently (fewer than "
                     f"{MIN_WITHIN_PAIRS}): the surround's legitimate share cannot be measured, "
                     "so the across-source share is compared with one half instead.")
    labels, sources = dataset.labels[rows], np.asarray(dataset.sources)[rows]
    surround_class = np.array([dataset.classes[c] for c in labels[pairs.base]])
    surround_call = np.array([swap.call_word(context, c) for c in pairs.base_called])
    by_class = swap.share_rows(follows, {"relation": pairs.relation,
                                         "surround_class": surround_class})
    by_call = swap.share_rows(follows, {"relation": pairs.relation,
                                        "surround_call": surround_call})
    by_source_pair = swap.share_rows(follows, {"lung_source": sources[pairs.donor],
                                               "surround_source": sources[pairs.base]})
    figures, artifacts = swap.gallery(context, rows, called, pairs, follows, regions,
                                      ("lungs", "surround", "composite"), ("surround", "lungs"),
                                      across)
    figures["shares"] = swap.shares_figure(
        "Composites following the surround", by_call,
        lambda row: f"{row['relation']}, surround {row['surround_call']}",
        "share following the surround")
    return SPEC.result(
        metric_name=metric_name, metric=float(metric), ci=ci, p_value=p_value,
        summary=(f"{context.audited}, {word} call: lungs of one test image in the surround of "
                 f"another called differently; the composite follows the surround in "
                 f"{headline}."),
        details={"target_class": context.params.target_class, "model": context.audited,
                 "baseline": baseline, "n_test_images": int(len(rows)),
                 "across": {"pairs": n_a, "follow_surround": k_a, "share": share_a,
                            "ci": wilson_ci(k_a, n_a)},
                 "within": {"pairs": n_w, "follow_surround": k_w, "share": share_w,
                            "ci": wilson_ci(k_w, n_w)},
                 "feather_sigma_px": swap.FEATHER_FRACTION * dataset.image_size},
        tables={"by_class": by_class, "by_call": by_call, "by_source_pair": by_source_pair},
        figures=figures, artifacts=artifacts, notes=notes,
    )
