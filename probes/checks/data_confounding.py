"""``data.confounding``: how strongly the label can be read off the source, before any model.

Headline metric: Cramér's V of the label x source table (0: labels spread the same way over
every source, 1: each label from its own source), with the chi-square test's p-value.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from scipy.stats import chi2_contingency
from scipy.stats.contingency import association

from probes.base import CheckResult, CheckSpec, Gate, ProbeContext

NOT_ESTIMABLE = "not estimable"

SPEC = CheckSpec(
    id="data.confounding",
    title="Label-source confounding",
    question="Could the label be guessed from which hospital or dataset an image came from, "
             "before any model is trained?",
    metric="Cramér's V between label and source (0 independent, 1 each label its own source)",
    default=Gate(level="fail", threshold=0.3),
    order=10,
    p_value="analytic",
    needs=("two_sources",),
    explanation=(
        "Cramér's V measures how much knowing an image's source tells you about its "
        "label: 0 means every source contributes the labels in the same proportions, 1 "
        "means each label comes from its own source. When it is high, a classifier can "
        "score well by recognising the hospital, scanner or dataset an image came from "
        "(markers, borders, exposure) instead of the disease, and a good test score "
        "does not show otherwise, because the test images share the same confounding."),
    next_steps=(
        "Collect each label from several sources (or drop sources that hold a single "
        "label), then re-run; until then read every model check as possibly explained by "
        "the source. It cannot run with a single source or a single label."),
)


def run(context: ProbeContext) -> CheckResult:
    """Label x source contingency table, chi-square test and Cramér's V."""
    dataset = context.dataset
    counts = pd.crosstab(dataset.label_names, dataset.sources, rownames=["label"],
                         colnames=["source"])
    known = [name for name in dataset.classes if name in counts.index]
    counts = counts.reindex(known + sorted(set(counts.index) - set(known)))  # class order
    if counts.shape[0] < 2 or counts.shape[1] < 2:
        only = "source" if counts.shape[1] < 2 else "label"
        return SPEC.not_run(
            f"the data has a single {only}, so label-source association is not defined "
            f"({counts.shape[0]} label(s), {counts.shape[1]} source(s))")
    test = chi2_contingency(counts.to_numpy())
    cramers_v = float(association(counts.to_numpy(), method="cramer"))
    per_source = _per_source_rows(counts)
    single = [row["source"] for row in per_source if row["n_labels"] == 1]
    notes = [f"Source {name!r} holds a single label: per-source metrics (accuracy within the "
             f"source, leave-one-source-out scores) are {NOT_ESTIMABLE} for it."
             for name in single]
    return SPEC.result(
        metric_name="Cramér's V",
        metric=cramers_v,
        p_value=float(test.pvalue),
        summary=(f"Label and source are associated with Cramér's V = {cramers_v:.2f} "
                 f"(chi-square {test.statistic:.1f}, {test.dof} df, p = {test.pvalue:.2g}) "
                 f"over {int(counts.to_numpy().sum())} images from {counts.shape[1]} sources; "
                 f"{len(single)} source(s) hold a single label."),
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
