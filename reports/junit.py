"""``junit.xml``: one test case per check, so CI systems show the release gate natively.

Mapping (the gate has already judged each check, marked the ones that fail the verdict
``blocking`` and listed missing required checks in ``absent_required``):

- ``pass`` -> passed; ``warn`` -> passed, the warning in ``system-out``;
- ``fail`` -> ``<failure>`` with the check's summary;
- ``not_run`` -> ``<failure>`` when blocking, else ``<skipped>``;
- ``error`` -> ``<error>`` when blocking, else ``<skipped>``;
- ``underpowered`` (over threshold, p-value unable to reach alpha) -> ``<failure>`` when
  blocking, else ``<skipped>``, with the reason naming ``probes.n_permutations``;
- ``measured`` (never judged) -> ``<skipped>``;
- each of ``absent_required`` -> ``<failure>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from audit.core.io import atomic_write
from audit.core.result import AuditResult
from probes.base import CheckResult, Status
from reports.cards import UNDECIDED
from reports.formatting import format_ci, format_number, format_p

SUITE_NAME = "cxr-shortcut-audit"
# Characters XML 1.0 cannot carry (e.g. ANSI escapes in a traceback line).
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_junit(result: AuditResult, path: str | Path) -> Path:
    """Write ``result`` as JUnit XML at ``path`` atomically, replacing any old file.

    Returns:
        ``path``.
    """
    path = Path(path)
    tree = ET.ElementTree(junit_element(result))
    ET.indent(tree)
    with atomic_write(path, "wb") as handle:
        tree.write(handle, encoding="utf-8", xml_declaration=True)
    return path


def junit_element(result: AuditResult) -> ET.Element:
    """The ``<testsuites>`` element for ``result``: one suite, one case per check."""
    suite = ET.Element("testsuite", name=SUITE_NAME)
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="verdict", value=result.verdict)
    for check in result.checks:
        suite.append(_check_case(check))
    for check_id in result.absent_required:
        case = _case(check_id)
        _child(case, "failure", "required by the policy but absent from the run", "missing")
        suite.append(case)
    counts = {tag: len(suite.findall(f"testcase/{tag}")) for tag in ("failure", "error", "skipped")}
    totals = {"tests": str(len(suite.findall("testcase"))),
              "failures": str(counts["failure"]), "errors": str(counts["error"]),
              "skipped": str(counts["skipped"])}
    suite.attrib.update(totals)
    return _wrap(suite, totals)


def _wrap(suite: ET.Element, totals: dict[str, str]) -> ET.Element:
    root = ET.Element("testsuites", name=SUITE_NAME, tests=totals["tests"],
                      failures=totals["failures"], errors=totals["errors"])
    root.append(suite)
    return root


def _check_case(check: CheckResult) -> ET.Element:
    case = _case(check.check_id)
    if check.status == Status.FAIL:
        _child(case, "failure", check.summary or "check failed", "shortcut", _numbers(check))
    elif check.status == Status.NOT_RUN and check.blocking:
        _child(case, "failure", f"required check did not run: {check.reason}", "not_run")
    elif check.status == Status.UNDERPOWERED and check.blocking:
        _child(case, "failure", f"required check could not decide: {check.reason}",
               "underpowered")
    elif check.status == Status.ERROR and check.blocking:
        _child(case, "error", f"check crashed: {check.reason}", "error")
    elif check.status in UNDECIDED:
        _child(case, "skipped", f"{check.status} (not blocking the verdict): {check.reason}")
    elif check.status == Status.MEASURED:
        _child(case, "skipped", "measured but not judged by a policy")
    summary = f"WARNING: {check.summary}" if check.status == Status.WARN else check.summary
    _child(case, "system-out", text="\n".join(filter(None, [summary, _numbers(check)])))
    return case


def _case(check_id: str) -> ET.Element:
    family = check_id.split(".", 1)[0]
    return ET.Element("testcase", classname=f"cxr_audit.{family}", name=check_id, time="0")


def _child(parent: ET.Element, tag: str, message: str | None = None, kind: str | None = None,
           text: str | None = None) -> None:
    element = ET.SubElement(parent, tag)
    if message is not None:
        element.set("message", _xml_text(message))
    if kind is not None:
        element.set("type", kind)
    if text:
        element.text = _xml_text(text)


def _numbers(check: CheckResult) -> str:
    metric = f"{check.metric_name or 'metric'} = {format_number(check.metric)} {format_ci(check.ci)}"
    return (f"{metric.strip()}; p = {format_p(check.p_value)}; p (Holm) = "
            f"{format_p(check.p_adjusted)}; threshold = {format_number(check.threshold)}; "
            f"gate = {check.gate or '-'}")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
