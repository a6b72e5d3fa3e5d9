"""What a release review asks, and whether this run evidences it: CLAIM 2024, TRIPOD+AI, GMLP.

``ITEMS`` is the crosswalk's data: the review topics of the Checklist for Artificial
Intelligence in Medical Imaging (CLAIM, 2024 update), TRIPOD+AI (2024) and the FDA / Health
Canada / MHRA Good Machine Learning Practice principles (2021) that this audit can speak
to, each with the checks (or report sections) that evidence it, and the topics it cannot
evidence at all. Topics are named, not numbered: item numbers differ between checklist
versions, and the reviewer fills in the checklist itself.

``crosswalk`` reads each item's checks' statuses from the result; it judges nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.core.result import AuditResult
from probes.base import Status
from reports.formatting import status_words
from reports.per_source import per_source_rows

DATA_SECTION = "data summary"  # evidence that is the run's data composition, not a check
PER_SOURCE_TABLE = "per-source table"  # evidence that is the per-source performance table


@dataclass(frozen=True)
class CrosswalkItem:
    standards: str  # which guidelines ask it
    topic: str  # the topic, in the guidelines' words
    evidence: tuple[str, ...]  # check ids (or DATA_SECTION / PER_SOURCE_TABLE); () = cannot
    how: str  # what the audit shows for it, or why it cannot


ITEMS: tuple[CrosswalkItem, ...] = (
    CrosswalkItem("CLAIM 2024; TRIPOD+AI", "Data sources",
                  (DATA_SECTION, "data.confounding"),
                  "The manifest's sources, images per label and source, and how strongly "
                  "label and source go together."),
    CrosswalkItem("CLAIM 2024; TRIPOD+AI; GMLP (training data independent of test data)",
                  "Data partitions and their disjointness", ("data.leakage",),
                  "Patients and near-duplicate images shared between training and test."),
    CrosswalkItem("CLAIM 2024; TRIPOD+AI", "External validation / performance on unseen sites",
                  ("generalization.leave_one_source_out", "generalization.external"),
                  "Accuracy on a source held out of training, or on external sources."),
    CrosswalkItem("CLAIM 2024; TRIPOD+AI", "Robustness or sensitivity analysis",
                  ("masking.raw_vs_lung", "ablation.class_size", "intervention.border_swap",
                   "intervention.surround_swap", "site.image", "site.embedding"),
                  "Skill lost when only the lungs are shown; recall against class sizes; "
                  "predictions when another source's border or surroundings are swapped in; "
                  "the source read off the images and the model's embedding."),
    CrosswalkItem("CLAIM 2024", "Explainability or interpretability methods",
                  ("attention.border", "attention.outside_lung", "attention.localized"),
                  "Grad-CAM mass on the image border, outside the lungs and on local "
                  "hot spots."),
    CrosswalkItem("CLAIM 2024; TRIPOD+AI", "Performance per subgroup with confidence intervals",
                  (PER_SOURCE_TABLE, "performance.within_source"),
                  "Accuracy per source with 95% CIs, next to the source-only baseline and "
                  "chance (subgroup = image source), and the skill kept within each source."),
    CrosswalkItem("CLAIM 2024; TRIPOD+AI", "Reference standard (ground truth) and its quality",
                  (), "Outside this audit: it takes the manifest's labels as given."),
    CrosswalkItem("TRIPOD+AI; GMLP (representative of the intended population)",
                  "Intended population, demographics and fairness across patient groups", (),
                  "Outside this audit: the manifest carries sources, not patient "
                  "demographics."),
    CrosswalkItem("CLAIM 2024; TRIPOD+AI", "Sample size justification", (),
                  "Outside this audit; checks that lack the images to decide say so "
                  "(underpowered or not run)."),
)


@dataclass(frozen=True)
class CrosswalkRow:
    item: CrosswalkItem
    evidenced: bool
    found: str  # which check said what in this run, or why nothing does


def crosswalk(result: AuditResult) -> list[CrosswalkRow]:
    """Each of ``ITEMS`` with whether this run evidences it and by which check's status."""
    return [_row(item, result) for item in ITEMS]


def _row(item: CrosswalkItem, result: AuditResult) -> CrosswalkRow:
    if not item.evidence:
        return CrosswalkRow(item, False, "cannot be evidenced by this tool")
    checks = {check.check_id: check for check in result.checks}
    found, absent, evidenced = [], [], False
    for name in item.evidence:
        if name == DATA_SECTION:
            sources = result.data.get("sources") or []
            evidenced |= bool(sources)
            found.append(f"{DATA_SECTION}: {len(sources)} sources" if sources
                         else f"{DATA_SECTION}: not available")
        elif name == PER_SOURCE_TABLE:
            rows = per_source_rows(result)
            evidenced |= bool(rows)
            found.append(f"{PER_SOURCE_TABLE}: {len(rows)} rows" if rows
                         else f"{PER_SOURCE_TABLE}: no check measured accuracy per source")
        elif name in checks:
            check = checks[name]
            decided = check.ran and check.status != Status.UNDERPOWERED
            evidenced |= decided
            found.append(f"{name}: {status_words(check.status)}")
        else:
            absent.append(name)
    if not found:  # the checks a run lacks are named only when it has none of them
        found.append(f"not in this run: {', '.join(absent)}")
    return CrosswalkRow(item, evidenced, "; ".join(found))
