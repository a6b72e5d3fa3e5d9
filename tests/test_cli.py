"""The command line surface: exit codes, messages, the gate command and the demo config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from audit import cli
from audit.core import progress
from audit.core.config import load_config
from audit.core.result import AuditResult
from audit.pipeline import enabled_checks
from probes.base import CheckResult
from probes.registry import check_ids, specs
from tests.conftest import SHARED_DIR

ROOT = cli.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``cxr-audit ARGS`` through the console entry point; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["cxr-audit", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def test_checks_lists_every_check_from_its_spec(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "checks")
    assert code == 0
    blocks = out.strip().split("\n\n")[1:]  # after the one line on the metrics' direction
    assert [block.split()[0] for block in blocks] == list(check_ids())
    for spec, block in zip(specs(), blocks, strict=True):
        lines = [line.strip() for line in block.splitlines()]
        assert lines[0] == f"{spec.id}  {spec.title}"
        assert f"question:   {spec.question}" in lines
        assert f"metric:     {spec.metric}" in lines
        required = "required" if spec.default.required else "optional"
        assert f"default:    {spec.default.level} above {spec.default.threshold:g}, {required}" in lines
        assert all(need in block for need in spec.needs)
        assert ("class:      probes.target_class" in block) == spec.follows_target_class
    masking = blocks[check_ids().index("masking.raw_vs_lung")]
    assert "needs:      masks (lung masks" in masking and "lung_masked_model (" in masking


def test_checks_json_is_the_specs(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "checks", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [entry["id"] for entry in listed] == list(check_ids())
    assert listed[0]["default"].keys() == {"level", "threshold", "required"}
    assert all(entry["question"] and entry["metric"] for entry in listed)


def test_listing_checks_does_not_import_tensorflow():
    """``cxr-audit checks`` stays fast: check modules import TensorFlow only in ``run``."""
    code = ("import sys\n"
            "from audit.cli import app\n"
            "app(['checks'], standalone_mode=False)\n"
            "from probes.registry import specs\n"
            "assert len(specs()) > 1\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_help_documents_the_exit_codes(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "--help")
    assert code == 0
    assert "2 invalid input or config" in " ".join(out.split())


def test_invalid_config_exits_2_naming_the_key(monkeypatch, capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  backbones: [resnet18]\n")
    code, _, err = run_cli(monkeypatch, capsys, "run", str(config), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "models.backbones.0" in err and "resnet18" in err
    assert not (tmp_path / "o").exists()  # nothing written before the config is valid


def test_unknown_check_in_config_exits_2_before_any_work(monkeypatch, capsys, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("probes:\n  checks: [site.imgae]\n")
    code, _, err = run_cli(monkeypatch, capsys, "run", str(config), "--out", str(tmp_path / "o"))
    assert code == 2
    assert "probes.checks: unknown check id(s) site.imgae" in err


def test_missing_command_argument_is_a_usage_error(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "gate")
    assert code == 2
    assert "RUN_DIR" in err.upper()


def test_gate_on_a_folder_without_a_run_exits_2(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "gate", str(tmp_path))
    assert code == 2
    assert "not a finished run folder (expected summary.json)" in err


def test_gate_on_a_summary_of_an_older_schema_exits_2_naming_file_and_version(
        monkeypatch, capsys, tmp_path):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({**AuditResult(checks=()).to_dict(), "schema_version": "1.0"}))
    code, _, err = run_cli(monkeypatch, capsys, "gate", str(tmp_path))
    assert code == 2
    assert f"{summary}: summary schema version '1.0'" in err


def test_gate_rejudges_a_finished_run_and_a_strict_policy_flips_it(monkeypatch, capsys,
                                                                    tmp_path):
    from audit.gate import judge, load_policy

    quiet = {cid: CheckResult(check_id=cid, title=cid, metric=0.0) for cid in check_ids()}
    quiet["site.image"] = CheckResult(check_id="site.image", title="t", metric=0.2)
    result = judge(AuditResult(checks=tuple(quiet.values())), load_policy())
    assert result.verdict == "pass"
    result.save_json(tmp_path / "summary.json")

    code, out, _ = run_cli(monkeypatch, capsys, "gate", str(tmp_path))
    assert (code, "verdict: PASS" in out) == (0, True)
    assert "policy: default" in out
    code, out, _ = run_cli(monkeypatch, capsys, "gate", str(tmp_path), "--policy",
                           str(EXAMPLES / "policy-strict.yaml"))
    assert (code, "verdict: FAIL" in out) == (1, True)
    assert f"policy: {EXAMPLES / 'policy-strict.yaml'} (sha256 " in out
    assert "site.image" in out
    rejudged = AuditResult.load_json(tmp_path / "summary.json")
    assert rejudged.verdict == "fail"
    assert rejudged.audited["policy"]["name"] == "default + policy-strict.yaml"
    assert all((tmp_path / name).is_file() for name in ("report.html", "junit.xml",
                                                         "model_card.md"))
    code, out, _ = run_cli(monkeypatch, capsys, "gate", str(tmp_path), "--policy-from-run")
    assert code == 1 and AuditResult.load_json(tmp_path / "summary.json").audited["policy"] \
        == rejudged.audited["policy"]


def test_packaged_demo_config_is_the_examples_one():
    packaged = cli.demo_config_path()
    assert packaged == EXAMPLES / "demo.yaml"
    demo = load_config(packaged)
    assert demo.data.manifest is None and demo.data.synth.confounding > 0.5
    assert demo.models.weights_dirs == [(SHARED_DIR / "weights").resolve()]  # config paths are resolved


@pytest.mark.parametrize("name", ["demo.yaml", "clean-control.yaml", "cxr-real.yaml"])
def test_example_configs_are_valid(name):
    config = load_config(EXAMPLES / name)
    assert enabled_checks(config) == check_ids()


def test_real_example_points_at_the_shared_data():
    config = load_config(EXAMPLES / "cxr-real.yaml")
    assert config.data.manifest == (SHARED_DIR / "data" / "cxr-real" / "metadata.csv").resolve()


def test_clean_control_has_no_confounding_and_no_site_traits():
    synth = load_config(EXAMPLES / "clean-control.yaml").data.synth
    assert synth.confounding == 0
    assert not any(synth.site_traits.model_dump().values())


def test_data_sub_app_is_mounted(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "data", "--help")
    assert code == 0
    assert all(name in out for name in ("import", "validate", "synth"))


def test_json_logs_are_one_object_per_line_with_no_progress_bar(capsys):
    progress.configure(json_logs=True)
    try:
        for step in progress.progress(range(3), "steps"):
            progress.log.info("step %d", step)
    finally:
        progress.configure()
    err = capsys.readouterr().err
    messages = [json.loads(line)["message"] for line in err.splitlines()]
    assert "\r" not in err
    assert [message for message in messages if message.startswith("step ")] == [
        "step 0", "step 1", "step 2"]
    assert messages[0] == "steps: 0/3" and messages[-1].startswith("steps: 3 done in ")


def test_a_crash_exits_3_saying_it_is_a_bug_with_the_traceback_in_the_run_folder(
        monkeypatch, capsys, tmp_path):
    def crash(*args, **kwargs):
        raise ZeroDivisionError("planted bug")

    monkeypatch.setattr("audit.pipeline.run_audit", crash)
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "demo", "--out", str(out))
    assert code == cli.INTERNAL_ERROR == 3
    assert "internal error (a bug in cxr-audit" in err and "planted bug" in err
    assert str(out / "crash.log") in err
    assert "ZeroDivisionError: planted bug" in (out / "crash.log").read_text()
    assert "Traceback" not in err


def test_ctrl_c_exits_130_saying_what_was_kept(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("audit.pipeline.run_audit", interrupted)
    code, _, err = run_cli(monkeypatch, capsys, "demo", "--out", str(tmp_path / "run"))
    assert code == cli.INTERRUPTED == 130
    assert "finished stage is kept" in err and "again to resume" in err


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp.joinpath("taken").write_text("x") and tmp / "taken",
     "exists and is not a folder"),
    (lambda tmp: tmp.joinpath("file").write_text("x") and tmp / "file" / "run",
     "which is a file, not a folder"),
])
def test_an_unusable_out_folder_exits_2_before_any_work(monkeypatch, capsys, tmp_path, make,
                                                        message):
    out = make(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "demo", "--out", str(out))
    assert code == 2
    assert f"--out {out}: " in err and message in err
