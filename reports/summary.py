"""``summary.json``: the audit's numbers for machines, with a shipped JSON Schema.

The file is ``AuditResult.to_dict()`` (it carries ``schema_version``);
``reports/schema/summary.schema.json`` (draft 2020-12) describes it and ships as package
data, so consumers can validate a run folder without this code.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from audit.core.errors import InputError
from audit.core.result import AuditResult

SCHEMA_FILE = "summary.schema.json"
_MAX_LISTED_ERRORS = 5


def summary_schema() -> dict[str, Any]:
    """The shipped JSON Schema of ``summary.json``."""
    text = (resources.files("reports") / "schema" / SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def write_summary(result: AuditResult, path: str | Path) -> Path:
    """Write ``result`` as ``summary.json`` at ``path`` atomically, replacing any old file.

    Returns:
        ``path``.
    """
    path = Path(path)
    result.save_json(path)
    return path


def validate_summary(data: dict[str, Any], source: str = "summary.json") -> None:
    """Check a loaded ``summary.json`` against the shipped schema.

    Args:
        data: The parsed JSON.
        source: File name used in the error message. Defaults to "summary.json".

    Raises:
        InputError: naming the file, the first offending keys (as JSON paths) and what
            was expected there.
    """
    validator = Draft202012Validator(summary_schema())
    errors = sorted(validator.iter_errors(data), key=lambda error: error.json_path)
    if not errors:
        return
    lines = [f"{source}: does not match the summary schema ({len(errors)} problem(s))"]
    lines += [f"  - {error.json_path}: {error.message}" for error in errors[:_MAX_LISTED_ERRORS]]
    raise InputError("\n".join(lines))
