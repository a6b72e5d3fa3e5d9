"""audit.audited and the policy identity: what was audited, named by file name, run-relative
path and SHA-256, computed before the reports; no absolute path in the result."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from importlib import metadata
from types import SimpleNamespace

import pytest

from audit import audited, pipeline
from audit.core.cache import StageCache
from audit.core.config import CheckPolicy, PolicyConfig, parse_config
from audit.core.result import AuditResult
from audit.gate import judge, load_policy, policy_identity, policy_name
from reports.summary import validate_summary
from tests.test_pipeline import tiny_dataset


def _model():
    return SimpleNamespace(key="mobilenetv2/raw", identity="0123456789abcdef",
                           backbone="mobilenetv2", input_mode="raw")


def test_a_model_trained_here_is_named_relative_to_the_run_folder(tmp_path):
    model_file = tmp_path / "run" / "models" / "m-raw-seed0" / "model.keras"
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(b"weights")
    identity = audited.model_identity(_model(), model_file, tmp_path / "run")
    assert identity["file"] == "models/m-raw-seed0/model.keras"
    assert identity["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (identity["identity"], identity["trained_here"]) == ("0123456789abcdef", True)


def test_an_external_model_is_named_by_its_file_name_with_its_spec(tmp_path):
    (tmp_path / "given").mkdir()
    model_file, spec = tmp_path / "given" / "theirs.keras", tmp_path / "given" / "spec.yaml"
    model_file.write_bytes(b"w")
    spec.write_text("backbone: x\n")
    identity = audited.model_identity(_model(), model_file, tmp_path / "run", spec_file=spec)
    assert (identity["file"], identity["spec_file"]) == ("theirs.keras", "spec.yaml")
    assert identity["spec_sha256"] == hashlib.sha256(b"backbone: x\n").hexdigest()
    assert identity["trained_here"] is False


def test_data_identity_counts_used_and_excluded_rows(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n")
    identity = audited.data_identity(tiny_dataset(), manifest, synthetic=None)
    assert (identity["manifest"], identity["rows"], identity["rows_used"],
            identity["rows_excluded"]) == ("manifest.csv", 7, 6, 1)
    assert identity["sources"] == ["a", "b"]
    assert identity["sha256"] == hashlib.sha256(b"path,label\n").hexdigest()


def test_tool_identity_has_the_installed_version_and_a_commit_or_none():
    tool = audited.tool_identity()
    assert tool["version"] == metadata.version("cxr-shortcut-audit")
    assert tool["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", tool["git_commit"])


@pytest.mark.parametrize("problem", [OSError("no git"), subprocess.TimeoutExpired("git", 10)])
def test_no_git_means_no_commit_not_an_error(monkeypatch, problem):
    def fail(*args, **kwargs):
        raise problem

    monkeypatch.setattr(audited.subprocess, "run", fail)
    assert audited.tool_identity()["git_commit"] is None


def test_portable_rewrites_absolute_paths_in_values_and_text(tmp_path):
    run = tmp_path / "run"
    value = {"cache": str(run / "cache"), "models": [str(tmp_path / "elsewhere" / "w.h5")],
             "origin": f"imagenet (local file {tmp_path}/weights/mnv2.h5, sha256 ab12)",
             "ratio": "1/2", "relative": "images/a.png", "n": 3}
    assert audited.portable(value, run) == {
        "cache": "cache", "models": ["w.h5"], "origin": "imagenet (local file mnv2.h5, sha256 ab12)",
        "ratio": "1/2", "relative": "images/a.png", "n": 3}


def test_the_measured_result_holds_what_was_audited_and_no_absolute_path(tmp_path):
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label\n")
    config = parse_config({"data": {"manifest": str(manifest)},
                           "runtime": {"cache_dir": str(tmp_path / "cache")}})
    dataset = tiny_dataset()
    model = {"key": "mobilenetv2/raw", "file": "models/m/model.keras", "sha256": "a" * 64,
             "identity": "0123456789abcdef", "backbone": "mobilenetv2", "input_mode": "raw",
             "trained_here": True}
    record = {"key": "m/raw", "backbone": "m", "input_mode": "raw",
              "path": str(tmp_path / "run" / "models" / "m"),
              "weights_origin": f"imagenet (local file {tmp_path}/w/mnv2.h5, sha256 ab)"}
    measured = pipeline._audit_result(
        config, StageCache(tmp_path / "cache"), tmp_path / "run", dataset, checks=[],
        models=[record], segmentation=None,
        provenance={"config": config.model_dump(mode="json"), "cache": str(tmp_path / "cache")},
        model=model, date=audited.audit_date())
    judged = judge(measured, load_policy(), "default")
    data = judged.to_dict()
    validate_summary(data)
    assert str(tmp_path) not in json.dumps(data)
    assert data["models"][0]["path"] == "models/m"
    assert data["provenance"]["config"]["data"]["manifest"] == "manifest.csv"
    assert data["audited"]["data"]["manifest"] == "manifest.csv"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["audited"]["date"])


def test_judging_records_the_policy_name_and_the_hash_of_its_rules():
    result = AuditResult(checks=())
    default = judge(result, load_policy(), "default").audited["policy"]
    assert default == policy_identity(load_policy(), "default")
    assert re.fullmatch(r"[0-9a-f]{64}", default["sha256"])
    stricter = PolicyConfig(checks={**load_policy().checks,
                                    "site.image": CheckPolicy(gate="fail", threshold=0.01)})
    assert judge(result, stricter, "x").audited["policy"]["sha256"] != default["sha256"]
    reordered = PolicyConfig(checks=dict(reversed(list(load_policy().checks.items()))))
    assert policy_identity(reordered, "y")["sha256"] == default["sha256"]


def test_rejudging_replaces_the_policy_but_keeps_the_rest_of_what_was_audited():
    result = AuditResult(checks=(), audited={"date": "2026-12-02T06:30:00Z"})
    again = judge(judge(result, load_policy(), "default"), load_policy(), "default + s.yaml")
    assert again.audited["date"] == "2026-12-02T06:30:00Z"
    assert again.audited["policy"]["name"] == "default + s.yaml"


@pytest.mark.parametrize("path, overrides, name", [
    (None, None, "default"),
    (None, PolicyConfig(), "default"),
    ("/abs/policies/strict.yaml", None, "default + strict.yaml"),
    (None, PolicyConfig(alpha=0.1), "default + the config's policy section"),
    ("p.yaml", PolicyConfig(checks={"site.image": CheckPolicy(threshold=0.1)}),
     "default + the config's policy section + p.yaml"),
])
def test_policy_name_says_what_was_layered(path, overrides, name):
    assert policy_name(path, overrides) == name


def test_a_repository_around_an_installed_package_gives_no_commit(monkeypatch, tmp_path):
    def other_repository(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=f"{tmp_path}\n{'d' * 40}\n")

    monkeypatch.setattr(audited.subprocess, "run", other_repository)
    assert audited.tool_identity()["git_commit"] is None
