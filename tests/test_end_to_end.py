"""The whole product on a tiny confounded synthetic set, through the console entry point:
run -> reports -> verdict and exit code; rerun reuses every stage; gate re-judges."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from audit import cli
from audit.core.config import load_config
from audit.core.result import AuditResult
from probes.base import Status
from probes.registry import check_ids
from reports import figures, validate_summary
from tests.conftest import MOBILENET_V2_035, WEIGHTS_DIR, cxr_audit

pytestmark = pytest.mark.slow


def tiny_config(confounding: float, traits: bool) -> dict:
    """A few-minute audit: 80 phantoms at 96 px, MobileNetV2 0.35 on cached features."""
    weights = {"weights": "imagenet", "weights_dirs": [str(WEIGHTS_DIR)]} \
        if MOBILENET_V2_035.is_file() else {"weights": "none"}
    return {
        "data": {"synth": {"n_per_class": 5, "image_size": 96, "confounding": confounding,
                           "site_traits": {"markers": traits, "borders": traits,
                                           "intensity": traits}},
                 "image_size": 96, "test_fraction": 0.25, "n_folds": 2},
        "segmentation": {"source": "manifest"},
        "models": {"alpha": 0.35, **weights, "epochs": 8, "augmented_views": 0,
                   "training_path": "cached"},
        "probes": {"cam_max_images": 12, "n_permutations": 480, "n_bootstrap": 50,
                   "ablation_sizes": [5, 10], "ablation_seeds": [0]},
    }


@pytest.fixture(scope="module")
def confounded_run(tmp_path_factory):
    """One tiny confounded audit (run once for the module) and its exit code."""
    folder = tmp_path_factory.mktemp("e2e")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(confounding=1.0, traits=True)))
    with pytest.MonkeyPatch.context() as patch:
        code = cxr_audit(patch, "run", str(config), "--out", str(folder / "run"))
    return config, folder / "run", code


def test_confounded_run_fails_and_names_the_planted_shortcuts(confounded_run):
    _, run, code = confounded_run
    result = AuditResult.load_json(run / "summary.json")
    assert (code, result.verdict) == (1, "fail")
    assert result.check("data.confounding").status == Status.FAIL
    assert result.verdict_reasons[0].startswith("data.confounding: Cramér's V 1 > threshold")
    # Lungs-removed images tell the sources apart (significance needs more images).
    assert result.check("site.image").metric > 0.5


def test_every_check_ran_without_crashing(confounded_run):
    _, run, _ = confounded_run
    result = AuditResult.load_json(run / "summary.json")
    assert [check.check_id for check in result.checks] == list(check_ids())
    crashed = {check.check_id: check.reason for check in result.checks
               if check.status == Status.ERROR}
    assert crashed == {}


def test_run_folder_holds_every_output_and_the_summary_matches_its_schema(confounded_run):
    config, run, _ = confounded_run
    for name in ("report.html", "summary.json", "junit.xml", "model_card.md",
                 "config.resolved.yaml", "splits.json"):
        assert (run / name).is_file(), name
    validate_summary(json.loads((run / "summary.json").read_text()))
    assert load_config(run / "config.resolved.yaml") == load_config(config)
    assert sorted(path.name for path in (run / "models").iterdir()) == [
        "mobilenetv2-lung_masked-seed0", "mobilenetv2-raw-seed0"]
    models = AuditResult.load_json(run / "summary.json").models
    assert {model["key"] for model in models} == {"mobilenetv2/raw", "mobilenetv2/lung_masked"}
    assert all("cv" in model and len(model["cv"]["folds"]) == 2 for model in models)


def test_the_run_names_what_it_audited_without_the_machines_paths(confounded_run):
    _, run, _ = confounded_run
    audited = AuditResult.load_json(run / "summary.json").audited
    model = audited["model"]
    assert (model["file"], model["trained_here"]) == (
        "models/mobilenetv2-raw-seed0/model.keras", True)
    assert model["sha256"] == hashlib.sha256((run / model["file"]).read_bytes()).hexdigest()
    assert audited["data"]["manifest"] == "manifest.csv"
    assert audited["data"]["synthetic"].startswith("synthetic phantoms")
    assert audited["data"]["rows_used"] == 80
    for name in ("summary.json", "report.html", "model_card.md"):
        assert str(run.parent) not in (run / name).read_text(encoding="utf-8"), name


def test_rerun_reuses_every_stage_and_gives_the_same_result(confounded_run, monkeypatch,
                                                           capsys):
    config, run, code = confounded_run
    before = AuditResult.load_json(run / "summary.json")
    capsys.readouterr()

    def no_grid_work(*args, **kwargs):
        raise AssertionError("an unchanged rerun loaded or trained a classifier of the grid")

    def no_drawing(*args, **kwargs):
        raise AssertionError("an unchanged rerun drew a figure again")

    monkeypatch.setattr("audit.jobs._train_and_evaluate", no_grid_work)
    monkeypatch.setattr("keras.models.load_model", no_grid_work)
    monkeypatch.setattr("reports.figures._panel_jpeg", no_drawing)
    for kind in ("heatmap", "bars", "lines", "hist", "confusion", "image_gallery"):
        monkeypatch.setitem(figures._DRAWERS, kind, no_drawing)
    report = (run / "report.html").read_text(encoding="utf-8")
    assert _images(report)  # the comparison below is of something
    assert cxr_audit(monkeypatch, "run", str(config), "--out", str(run)) == code
    assert "stages: 0 computed, " in capsys.readouterr().out
    after = AuditResult.load_json(run / "summary.json")
    assert after.provenance["stages"]["computed"] == 0
    assert [c.to_dict() for c in after.checks] == [c.to_dict() for c in before.checks]
    assert _images(report) == _images((run / "report.html").read_text(encoding="utf-8"))


def _images(page: str) -> list[str]:
    """The figures of a report page, as their data URIs in page order."""
    return re.findall(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", page)


def test_an_unchanged_rerun_imports_no_tensorflow(confounded_run):
    config, run, code = confounded_run
    script = ("import sys\nfrom audit.cli import main\n"
              f"sys.argv = ['cxr-audit', 'run', {str(config)!r}, '--out', {str(run)!r}]\n"
              "try:\n    main()\nexcept SystemExit as done:\n    code = done.code\n"
              "print('exit', code, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip().splitlines()[-1] == f"exit {code} False", done.stderr[-2000:]


def test_gate_rejudges_without_recomputing_and_a_policy_flips_the_exit_code(
        confounded_run, monkeypatch, tmp_path):
    _, run, code = confounded_run
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(yaml.safe_dump({"checks": {cid: {"gate": "ignore"} for cid in check_ids()}}))
    assert cxr_audit(monkeypatch, "gate", str(run), "--policy", str(lenient)) == 0
    assert AuditResult.load_json(run / "summary.json").verdict == "pass"
    assert cxr_audit(monkeypatch, "gate", str(run), "--policy",
                     str(cli.Path(__file__).resolve().parents[1] / "examples" /
                         "policy-strict.yaml")) == code == 1


def test_auditing_an_external_model_runs_what_needs_no_retraining(confounded_run, monkeypatch,
                                                                 tmp_path):
    config, run, _ = confounded_run
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"input_size": 96, "channels": 3, "scaling": "0-255",
                                    "classes": ["covid", "opacity", "other", "normal"]}))
    manifest = next((run / "cache" / "phantoms").glob("*/manifest.csv"))
    code = cxr_audit(monkeypatch, "audit", "--model",
                     str(run / "models" / "mobilenetv2-raw-seed0" / "model.keras"),
                     "--preprocess", str(spec), "--data", str(manifest), "--config", str(config),
                     "--out", str(tmp_path / "release"))
    result = AuditResult.load_json(tmp_path / "release" / "summary.json")
    status = {check.check_id: check.status for check in result.checks}
    retraining = ("masking.raw_vs_lung", "ablation.class_size",
                  "generalization.leave_one_source_out")
    assert {status[cid] for cid in retraining} == {Status.NOT_RUN}
    assert Status.ERROR not in status.values()
    assert result.check("site.image").ran  # a check that needs no retraining
    assert (code, result.verdict) == (1, "fail")  # required checks did not run
    model = result.audited["model"]
    assert (model["file"], model["spec_file"], model["trained_here"]) == (
        "model.keras", "spec.yaml", False)
    assert str(tmp_path) not in (tmp_path / "release" / "summary.json").read_text()
