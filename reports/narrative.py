"""The executive summary: a few plain sentences built from the numbers already in the result.

Nothing here measures or judges: the verdict, statuses and Holm p-values are the gate's,
every number is a probe's. This module picks which finding to name first and puts the
numbers into words. First come the gate's blocking checks, then its warnings; within
those, the kind of evidence (``EVIDENCE_ORDER``: the model failing where the shortcut is
absent, then how the model reads the images, then what the data offers), then the
smallest Holm-adjusted p-value.
"""

from __future__ import annotations

import textwrap
from typing import Any

from audit.core.result import AuditResult
from probes.base import CheckResult, Status
from reports.cards import FIRED, UNDECIDED, fired_because
from reports.formatting import (
    format_ci,
    format_estimate,
    format_number,
    format_percent,
    status_words,
)

LEAVE_ONE_OUT = "generalization.leave_one_source_out"
EXTERNAL = "generalization.external"
WITHIN_SOURCE = "performance.within_source"
BORDER_SWAP = "intervention.border_swap"
SURROUND_SWAP = "intervention.surround_swap"
_LISTED = 3  # checks named in one sentence before "and N more"
_REASON_CHARS = 72  # a not-run reason in the summary; the check's card has it whole
EVIDENCE_ORDER = ("generalization.", "intervention.", "masking.", "ablation.", "site.embedding", "attention.",
                  "performance.", "site.image", "data.")
"""Check id prefixes, most direct evidence that the model takes a shortcut first: accuracy
lost on unseen sources, calls that follow a swapped-in border or surround, skill outside the lungs or from class sizes, the source in the
model's own embedding or attention; last, that the data offers a shortcut at all."""


def executive_summary(result: AuditResult) -> list[str]:
    """Three to five sentences: the verdict, the strongest evidence for a shortcut, the
    strongest against, and what could not be run or decide (each only when there is one)."""
    sentences = [_verdict(result)]
    for sentence in (_evidence_for(result), _evidence_against(result), _undecided(result)):
        if sentence:
            sentences.append(sentence)
    return sentences


def headline_caveat(result: AuditResult) -> str | None:
    """The warning next to a headline accuracy when the verdict is not a pass, else None."""
    if result.verdict == "pass":
        return None
    if result.verdict != "fail":
        return ("Accuracy on this run's test images; no policy has judged the audit yet, so "
                "do not quote it as the model's accuracy.")
    blocking = [check.title for check in result.checks if check.blocking]
    blocking += list(result.absent_required)
    return (f"Accuracy on this run's test images only. The audit found {len(blocking)} "
            f"blocking problem{'s' if len(blocking) != 1 else ''} "
            f"({_listing(blocking)}): do not quote it as the model's accuracy.")


def _verdict(result: AuditResult) -> str:
    policy = result.audited.get("policy", {}).get("name")
    under = f" under the {policy} policy" if policy else ""
    if result.verdict == "pass":
        gated = [check for check in result.checks if check.gate not in (None, "ignore")]
        return (f"Verdict PASS{under}: none of the {len(gated)} gated checks found evidence "
                f"that the model relies on a shortcut.")
    if result.verdict != "fail":
        return "Not judged yet: no policy has been applied to these measurements."
    blocking = [check.title for check in result.checks if check.blocking]
    blocking += [f"{check_id} (absent)" for check_id in result.absent_required]
    return (f"Verdict FAIL{under}: {len(blocking)} check{'s' if len(blocking) != 1 else ''} "
            f"block{'' if len(blocking) != 1 else 's'} release ({_listing(blocking)}).")


def _evidence_for(result: AuditResult) -> str | None:
    fired = sorted((check for check in result.checks if check.ran and check.status in FIRED),
                   key=lambda check: (not check.blocking, _evidence_rank(check),
                                      _p_or_zero(check)))
    if not fired:
        return None
    strongest, others = fired[0], fired[1:]
    sentence = f"Strongest evidence for a shortcut: {_finding(strongest, result)}"
    if others:
        sentence += " Also fired: " + _listing([f"{check.title} ({_decision(check, result)})"
                                                for check in others]) + "."
    return sentence


def _evidence_against(result: AuditResult) -> str | None:
    passed = [check for check in result.checks
              if check.status == Status.PASS and check.gate not in (None, "ignore")]
    if not passed:
        return None
    first = passed[0]
    said = first.summary or f"{first.metric_name or 'metric'} {format_number(first.metric)}"
    return (f"Against a shortcut: {len(passed)} gated check{'s' if len(passed) != 1 else ''} "
            f"found nothing ({_listing([check.title for check in passed])}); "
            f"for example, {first.title} ({first.check_id}): {_unstop(said)}.")


def _undecided(result: AuditResult) -> str | None:
    undecided = [check for check in result.checks if check.status in UNDECIDED
                 and check.gate != "ignore"]
    if not undecided:
        return None
    named = [f"{check.title} ({status_words(check.status)}: "
             f"{_first_clause(check.reason or 'no reason given')})" for check in undecided]
    return ("Could not be run or could not decide (each check's card says why in full): "
            + _listing(named) + ".")


def _finding(check: CheckResult, result: AuditResult) -> str:
    """The strongest finding in words, then the gate's decision: the check's own phrasing
    (``_FINDINGS``) where it has one and its numbers are there, else the probe's sentence."""
    phrase = _FINDINGS.get(check.check_id)
    said = phrase(check, result) if phrase else None
    if said:
        return f"{said} ({_decision(check, result)})."
    return (f"{check.title} ({check.check_id}): "
            f"{_unstop(check.summary or check.metric_name or 'fired')} "
            f"({_decision(check, result)}).")


def _held_out_finding(check: CheckResult, result: AuditResult) -> str | None:
    """The mean drop and the held-out source that loses most accuracy."""
    scored = [row for row in check.tables.get("by_held_out_source", []) if "drop" in row]
    if not scored:
        return None
    worst = max(scored, key=lambda row: row["drop"])
    interval = format_ci(check.ci)
    return (f"with one source at a time held out of training, accuracy falls by "
            f"{format_number(check.metric)} on average"
            f"{f' (95% CI {interval})' if interval else ''}; with "
            f"'{worst['held_out']}' held out it falls from "
            f"{format_number(worst['accuracy_internal'])} on the other sources' test "
            f"images to {format_number(worst['accuracy_external'])} on "
            f"'{worst['held_out']}'{_chance(result, str(worst['held_out']))}")


def _external_finding(check: CheckResult, result: AuditResult) -> str | None:
    """The external source with the lowest accuracy, against the internal accuracy."""
    rows = [row for row in check.tables.get("per_source", []) if row.get("accuracy") is not None]
    if not rows:
        return None
    worst = min(rows, key=lambda row: row["accuracy"])
    accuracy = {"value": worst["accuracy"],
                "ci": [worst.get("accuracy_ci_low"), worst.get("accuracy_ci_high")]}
    return (f"on the external source '{worst['source']}' accuracy is "
            f"{format_estimate(accuracy)} against {format_number(worst.get('internal_accuracy'))}"
            f" on the internal test images{_chance(result)}")


def _border_swap_finding(check: CheckResult, result: AuditResult) -> str | None:
    """The share of border-swap composites whose call follows the swapped-in band."""
    details = check.details
    if not details.get("pairs"):
        return None
    return (f"{format_percent(check.metric)} of the model's calls follow a swapped border band "
            f"({details.get('follow_border')} of {details['pairs']} composites of two test "
            f"images called differently{_interval(check.ci)}; "
            f"{format_percent(details.get('null_share'))} expected from calls that change "
            "whenever any part of the image does)")


def _surround_swap_finding(check: CheckResult, result: AuditResult) -> str | None:
    """The share of lung-swap composites following the surround, across vs within sources."""
    across, within = check.details.get("across") or {}, check.details.get("within") or {}
    if not across.get("pairs"):
        return None
    against = (f" against {format_percent(within.get('share'))} of {within['pairs']} within a "
               "source" if within.get("pairs") else "")
    return (f"with one test image's lungs put in another's surround, the model's call follows "
            f"the surround in {format_percent(across.get('share'))} of {across['pairs']} "
            f"composites across sources{against}")


def _within_source_finding(check: CheckResult, result: AuditResult) -> str | None:
    """The source-only baseline against the model, then its skill within and pooled."""
    details = check.details
    if details.get("baseline_accuracy") is None:
        return None
    skill = ""
    if details.get("within_source_skill") is not None:
        skill = (f"; within a source its skill is {format_number(details['within_source_skill'])}"
                 f" against {format_number(details.get('pooled_skill'))} on the same labels "
                 "pooled over sources")
    return (f"knowing only the hospital scores {format_number(details['baseline_accuracy'])} "
            f"accuracy; the model scores {format_number(details.get('overall_accuracy'))}"
            f"{_chance(result)}{skill}")


_FINDINGS = {LEAVE_ONE_OUT: _held_out_finding, EXTERNAL: _external_finding,
             BORDER_SWAP: _border_swap_finding, SURROUND_SWAP: _surround_swap_finding,
             WITHIN_SOURCE: _within_source_finding}
"""Check id -> its finding in words (None when the numbers it needs are missing)."""


def _interval(ci: Any) -> str:
    """``, 95% CI 25%-41%`` for a two-number share interval, else ""."""
    if not ci or len(ci) != 2 or None in ci:
        return ""
    return f", 95% CI {format_percent(ci[0])}-{format_percent(ci[1])}"


def _chance(result: AuditResult, source: str | None = None) -> str:
    """The chance level the within-source check measured (the accuracy of always answering
    the commonest label): of ``source``'s test images when its table has that source, else
    of the whole test split; "" when the check did not run."""
    for check in result.checks:
        if check.check_id != WITHIN_SOURCE or not check.ran:
            continue
        own = [row.get("chance") for row in check.tables.get("per_source", [])
               if source is not None and row.get("source") == source]
        if own and own[0] is not None:
            return (f", where chance (always answering '{source}''s commonest label) is "
                    f"{format_number(own[0])}")
        if check.details.get("chance") is not None:
            return (", where chance (always answering the commonest label) is "
                    f"{format_number(check.details['chance'])}")
    return ""


def _decision(check: CheckResult, result: AuditResult) -> str:
    """The gate's decision in the check card's words (``reports.cards.fired_because``)."""
    return fired_because(check, result.policy.get("alpha"))


def _evidence_rank(check: CheckResult) -> int:
    return next((rank for rank, prefix in enumerate(EVIDENCE_ORDER)
                 if check.check_id.startswith(prefix)), len(EVIDENCE_ORDER))


def _p_or_zero(check: CheckResult) -> float:
    # A fired check without a p-value (a count, a threshold on a metric) is as decisive
    # as one with the smallest p.
    return check.p_adjusted if check.p_adjusted is not None else 0.0


def _listing(items: list[Any]) -> str:
    items = [str(item) for item in items]
    if len(items) > _LISTED:
        return ", ".join(items[:_LISTED]) + f" and {len(items) - _LISTED} more"
    return ", ".join(items)


def _first_clause(text: str) -> str:
    """A reason's first clause (up to its first semicolon), at most ``_REASON_CHARS``."""
    clause = _unstop(text.split(";", 1)[0])
    return textwrap.shorten(clause, width=_REASON_CHARS, placeholder=" …")


def _unstop(text: str) -> str:
    """``text`` without its final full stop, to continue a sentence."""
    return text.strip().rstrip(".")
