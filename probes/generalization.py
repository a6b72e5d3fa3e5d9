"""The leave-one-source-out engine: which rows to train and test on when a source is held out.

``generalization.leave_one_source_out`` (``probes.checks.generalization_leave_one_source_out``)
trains, for each source, a model without it and tests it twice: on the internal test rows
of the remaining sources and on every image of the held-out source. A model that learned
the disease loses little; one that learned the sources (DeGrave et al. 2021: AUROC ~0.99
internal vs ~0.70 external) loses a lot. Both test sets are restricted to the labels the
held-out source shares with the training data, so the comparison is like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probes.base import ProbeContext

MIN_SHARED_LABELS = 2


@dataclass(frozen=True)
class HeldOutPlan:
    """The rows for holding one source out, or the reason it cannot be estimated."""

    source: str
    labels: list[str]  # the held-out source's labels
    shared: list[str]  # of those, the labels the remaining training rows also have
    fit: np.ndarray  # training rows without the source
    val: np.ndarray  # validation rows without the source
    internal: np.ndarray  # test rows of the remaining sources, shared labels only
    external: np.ndarray  # every row of the held-out source with a shared label
    excluded: int  # rows of the held-out source whose label is not shared
    reason: str  # why not estimable ("" when it is)


@dataclass(frozen=True)
class HeldOutScore:
    """A held-out plan's model scored: per internal and external test row, right or wrong."""

    plan: HeldOutPlan
    correct_internal: np.ndarray
    correct_external: np.ndarray


def held_out_plan(context: ProbeContext, held_out: str) -> HeldOutPlan:
    """Rows for one held-out source, or the reason it cannot be estimated."""
    data, splits = context.dataset, context.splits
    labels, sources = data.label_names, data.sources
    remaining = sources != held_out
    fit = splits.fit[remaining[splits.fit]]
    own = sorted(set(labels[~remaining]))
    shared = sorted(set(labels[~remaining]) & set(labels[fit]))
    in_shared = np.isin(labels, shared)
    internal = splits.test[remaining[splits.test] & in_shared[splits.test]]
    if len(shared) < MIN_SHARED_LABELS:
        reason = (f"holds labels {own}, of which {shared or 'none'} also "
                  f"occur in the remaining training data; needs >= {MIN_SHARED_LABELS}")
    elif not len(internal):
        reason = "no internal test rows with the shared labels"
    else:
        reason = ""
    return HeldOutPlan(source=held_out, labels=own, shared=shared, fit=fit,
                       val=splits.val[remaining[splits.val]], internal=internal,
                       external=np.flatnonzero(~remaining & in_shared),
                       excluded=int(np.sum(~remaining & ~in_shared)), reason=reason)


def accuracy_gap(correct: np.ndarray, external: np.ndarray, source: np.ndarray) -> float:
    """Mean over held-out sources of internal minus external accuracy."""
    gaps = [correct[(source == s) & ~external].mean() - correct[(source == s) & external].mean()
            for s in np.unique(source)]
    return float(np.mean(gaps))
