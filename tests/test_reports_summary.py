"""reports.summary: summary.json is AuditResult.to_dict() and validates against the schema."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from jsonschema import Draft202012Validator

from audit.core.errors import InputError
from audit.core.result import SCHEMA_VERSION, AuditResult
from reports.summary import summary_schema, validate_summary, write_summary
from tests.report_fixtures import build_audit_result


def test_shipped_schema_is_valid_draft_2020_12():
    schema = summary_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_written_summary_validates_and_round_trips(tmp_path):
    result = build_audit_result(tmp_path)
    path = write_summary(result, tmp_path / "summary.json")
    data = json.loads(path.read_text())
    validate_summary(data)
    assert data["schema_version"] == SCHEMA_VERSION and data["verdict"] == "fail"
    assert [c["check_id"] for c in data["checks"]] == [c.check_id for c in result.checks]
    assert AuditResult.load_json(path).to_dict() == data  # tuples come back as lists


def test_gate_fields_round_trip(tmp_path):
    result = replace(build_audit_result(tmp_path), absent_required=("data.leakage",))
    loaded = AuditResult.load_json(write_summary(result, tmp_path / "summary.json"))
    assert loaded.absent_required == ("data.leakage",)
    assert [c.blocking for c in loaded.checks] == [c.blocking for c in result.checks]
    assert any(c.blocking for c in loaded.checks) and not all(c.blocking for c in loaded.checks)


def test_summary_of_another_schema_version_is_an_input_error_naming_the_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**build_audit_result(tmp_path).to_dict(), "schema_version": "1.0"}))
    expected = (f"{path}: summary schema version '1.0', but this cxr-audit reads version "
                f"'{SCHEMA_VERSION}'")
    with pytest.raises(InputError, match=re.escape(expected)):
        AuditResult.load_json(path)


def test_nan_metrics_are_written_as_null_and_still_validate(tmp_path):
    result = build_audit_result(tmp_path)
    broken = replace(result.checks[0], metric=float("nan"), ci=(float("nan"), 0.5))
    result = replace(result, checks=(broken, *result.checks[1:]))
    data = json.loads(write_summary(result, tmp_path / "summary.json").read_text())
    validate_summary(data)
    assert data["checks"][0]["metric"] is None and data["checks"][0]["ci"] == [None, 0.5]


def test_write_summary_replaces_an_existing_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("{}")
    write_summary(build_audit_result(tmp_path), path)
    assert json.loads(path.read_text())["verdict"] == "fail"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("verdict"), r"(?s)run\.json: does not match.*\$: 'verdict' is a required"),
    (lambda d: d["checks"][0].update(status="maybe"), r"\$\.checks\[0\]\.status: 'maybe' is not one of"),
    (lambda d: d["checks"][1].update(p_value=1.5), r"\$\.checks\[1\]\.p_value: 1\.5 is greater"),
    (lambda d: d["models"][0].pop("backbone"), r"\$\.models\[0\]: 'backbone' is a required"),
    (lambda d: d["models"][0]["metrics"].update(confusion_matrix=[[1, -2]]),
     r"\$\.models\[0\]\.metrics\.confusion_matrix\[0\]\[1\]: -2 is less than"),
    (lambda d: d.update(schema_version="1.0"), r"\$\.schema_version: '1\.0' does not match"),
    (lambda d: d["checks"][2].pop("blocking"), r"\$\.checks\[2\]: 'blocking' is a required"),
    (lambda d: d.update(absent_required="site.image"),
     r"\$\.absent_required: 'site\.image' is not of type 'array'"),
])
def test_invalid_summaries_name_the_offending_key(tmp_path, mutate, message):
    data = build_audit_result(tmp_path).to_dict()
    mutate(data)
    with pytest.raises(InputError, match=message):
        validate_summary(data, source="run.json")
