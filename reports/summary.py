"""``summary.json``: the audit's numbers for machines, with a shipped JSON Schema.

The file is ``AuditResult.to_dict()`` (it carries ``schema_version``);
``reports/schema/summary.schema.json`` (draft 2020-12) describes it and ships as package
data, so consumers can validate a run folder without this code.
"""

from __future__ import annotations

import json
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from audit.core.errors import InputError
from audit.core.io import read_text
from audit.core.result import SCHEMA_VERSION, AuditResult

SCHEMA_FILE = "summary.schema.json"
_MAX_MESSAGE = 160


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


def validate_summary(data: Any, source: str = "summary.json") -> None:
    """Check a loaded ``summary.json`` against the shipped schema.

    Args:
        data: The parsed JSON.
        source: File name used in the error message. Defaults to "summary.json".

    Raises:
        InputError: one line naming the file, the first offending key (as a JSON path),
            what the schema expects there and what arrived, and how many problems follow.
    """
    validator = Draft202012Validator(summary_schema())
    errors = sorted(validator.iter_errors(data), key=lambda error: error.json_path)
    if not errors:
        return
    first = errors[0]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    # A message quotes the offending value, which can be a whole section: keep one line.
    message = textwrap.shorten(first.message, width=_MAX_MESSAGE, placeholder=" ...")
    raise InputError(f"{source}: does not match the summary schema: "
                     f"{first.json_path}: {message}{more}")


def read_summary(path: str | Path) -> AuditResult:
    """Read a run's ``summary.json``: UTF-8 JSON valid against the shipped schema.

    Raises:
        InputError: naming the file when it is missing or unreadable, is not JSON (with the
            line and column), was written with another schema version, or does not match
            the schema (``validate_summary``).
    """
    path = Path(path)
    text = read_text(path, "summary file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: "
                         f"{error.msg})") from None
    if isinstance(data, dict) and data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        # Another version's file misses the schema everywhere; from_dict says which it is.
        AuditResult.from_dict(data, source=str(path))
    validate_summary(data, source=str(path))
    return AuditResult.from_dict(data, source=str(path))
