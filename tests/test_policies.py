"""The shipped policies for the cases the default policy cannot judge (a model someone else
trained, a single-source data set), and `--policy` on `run` and `audit`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from audit import pipeline
from audit.core.config import SynthConfig, parse_config
from audit.core.result import AuditResult
from audit.data.phantoms import generate_phantoms
from audit.gate import default_policy, judge, load_policy
from probes.registry import specs
from tests.conftest import MOBILENET_V2_035, WEIGHTS_DIR, cxr_audit

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXTERNAL = EXAMPLES / "policy-external-model.yaml"
SINGLE_SOURCE = EXAMPLES / "policy-single-source.yaml"


@pytest.mark.parametrize(("path", "unavailable", "added"), [
    # what a given model cannot provide, and the evidence it can give instead
    # (policy, what its case cannot provide, {added check: the check whose gate it takes})
    (EXTERNAL, {"retraining", "lung_masked_model"},
     {"generalization.external": "generalization.leave_one_source_out"}),
    (SINGLE_SOURCE, {"two_sources"}, {}),
])
def test_a_policy_frees_exactly_the_checks_whose_needs_its_case_lacks(path, unavailable,
                                                                      added):
    """Optional: the checks whose SPEC.needs its case cannot meet; every other check stays
    as required as by default (or becomes required where the case calls for it), and gates
    and thresholds stay the default's, but an added check's gate, which is that of the
    check it stands in for."""
    policy, default = load_policy(path), default_policy()
    for spec in specs():
        rule = policy.checks[spec.id]
        wanted = default.checks[spec.id].required or spec.id in added
        assert rule.required == (wanted and not unavailable & set(spec.needs)), spec.id
        gate = default.checks[added.get(spec.id, spec.id)].gate
        assert (rule.gate, rule.threshold) == (gate, default.checks[spec.id].threshold), spec.id
    assert policy.alpha == default.alpha


def test_a_policy_file_has_the_last_word_over_the_config_policy_section(tmp_path):
    config = parse_config({"policy": {"checks": {"site.image": {"required": False},
                                                 "site.embedding": {"threshold": 0.5}}}})
    _, _, policy = pipeline._start_run(config, tmp_path / "run", EXTERNAL)
    assert policy.checks["site.image"].required  # the external policy requires it again
    assert policy.checks["site.embedding"].threshold == 0.5  # a field the file leaves alone
    assert not policy.checks["ablation.class_size"].required


def test_run_and_audit_take_a_policy_and_say_what_it_is_layered_on(monkeypatch, capsys):
    from audit import cli

    for command in ("run", "audit"):
        monkeypatch.setattr("sys.argv", ["cxr-audit", command, "--help"])
        with pytest.raises(SystemExit):
            cli.main()
        out = " ".join(re.sub("[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
        assert "--policy" in out, command
        assert "layered on the default policy and the config's policy section" in out, command


def trained_by_cxr_audit(tmp_path: Path, manifest: Path, size: int,
                         **models: object) -> tuple[Path, Path]:
    """`cxr-audit train` of one small raw-input classifier on ``manifest``: its
    ``model.keras`` and the preprocessing spec a user writes for it (the tool's
    classifiers take 0..255 RGB and output the data's classes in its order); ``models``
    overrides its models section."""
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"manifest": str(manifest), "image_size": size, "test_fraction": 0.25},
        "segmentation": {"source": "manifest"},
        "models": {"alpha": 0.35, "weights": "none", "input_modes": ["raw"], "epochs": 2,
                   "dense_units": 16, "augmented_views": 0, "cross_validate": False,
                   **models},
    }))
    with pytest.MonkeyPatch.context() as patch:
        assert cxr_audit(patch, "train", str(config), "--out", str(tmp_path / "trained")) == 0
    (row,) = json.loads((tmp_path / "trained" / "results.json").read_text())
    folder = Path(row["path"])
    classes = json.loads((folder / "metadata.json").read_text())["model"]["classes"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"input_size": size, "channels": 3, "scaling": "0-255",
                                    "classes": classes}))
    return folder / "model.keras", spec


def other_hospitals(folder: Path, n_per_class: int = 1) -> Path:
    """A manifest of phantoms from sources named apart from the audited ones: the same four
    sources' site traits, every label in every source alike (confounding 0)."""
    manifest = generate_phantoms(SynthConfig(n_per_class=n_per_class, image_size=96,
                                             confounding=0.0, seed=1), folder)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["source"] = "other_" + table["source"]
    table.to_csv(manifest, index=False)
    return manifest


def audit_with_the_external_policy(tmp_path: Path, model: Path, spec: Path, manifest: Path,
                                   external: Path) -> tuple[int, AuditResult]:
    """`cxr-audit audit --policy examples/policy-external-model.yaml` of ``model`` on
    ``manifest`` with the ``external`` manifest: its exit code and result."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"image_size": 96, "test_fraction": 0.5, "n_folds": 2},
        "segmentation": {"source": "manifest"},
        "models": {"weights": "none"},
        # 480: the fewest that let the default family's checks with a p-value fire once
        # generalization.external joins it (an external manifest is given)
        "probes": {"cam_max_images": 48, "n_permutations": 480, "n_bootstrap": 20},
    }))
    with pytest.MonkeyPatch.context() as patch:
        code = cxr_audit(patch, "audit", "--model", str(model), "--preprocess", str(spec),
                         "--data", str(manifest), "--external", str(external),
                         "--out", str(tmp_path / "run"), "--config", str(config),
                         "--policy", str(EXTERNAL))
    return code, AuditResult.load_json(tmp_path / "run" / "summary.json")


@pytest.mark.slow
def test_audit_of_an_external_model_with_its_policy_reaches_a_verdict(tmp_path):
    """`cxr-audit audit --policy examples/policy-external-model.yaml` of a model that
    `cxr-audit train` made: the retraining checks are not_run, no check blocks for not
    running, and the same result judged by the default policy is blocked by exactly those."""
    # 96 px: the smallest size whose MobileNetV2 Grad-CAM (3 x 3) the attention checks take.
    manifest = generate_phantoms(SynthConfig(n_per_class=6, image_size=96, confounding=0.0),
                                 tmp_path / "data")
    model, spec = trained_by_cxr_audit(tmp_path, manifest, 96)
    code, result = audit_with_the_external_policy(tmp_path, model, spec, manifest,
                                                  other_hospitals(tmp_path / "external"))
    assert code == (0 if result.verdict == "pass" else 1)
    not_run = {check.check_id: check.reason for check in result.checks if not check.ran}
    retraining = {spec.id for spec in specs()
                  if {"retraining", "lung_masked_model"} & set(spec.needs)}
    # Besides those, only checks optional by default may find nothing to measure (this
    # small model calls no test image COVID, so the swap checks have no pair).
    optional = {check_id for check_id, rule in default_policy().checks.items()
                if not rule.required}
    assert retraining <= set(not_run) <= retraining | optional, not_run
    assert [check.check_id for check in result.checks if check.blocking and not check.ran] == []
    assert result.check("generalization.external").details["n_external"] == 16
    by_default = judge(result, load_policy())
    assert {check.check_id for check in by_default.checks
            if check.blocking and not check.ran} == retraining


@pytest.mark.slow
@pytest.mark.skipif(not MOBILENET_V2_035.is_file(), reason="needs ../shared/weights")
def test_audit_of_a_model_trained_on_confounded_data_fails_on_what_the_model_does(tmp_path):
    """The same audit of a model `cxr-audit train` made on the demo's kind of data (labels
    confounded with sources that carry site traits; the disease signal too): the external
    policy fails it on generalization.external, evidence about this model and not only
    its data: on hospitals with the same traits and every label alike, it falls."""
    manifest = generate_phantoms(SynthConfig(n_per_class=8, image_size=96, confounding=0.8),
                                 tmp_path / "data")
    # ImageNet features: a random-weights backbone gives this small set no skill at all
    model, spec = trained_by_cxr_audit(tmp_path, manifest, 96, weights="imagenet",
                                       weights_dirs=[str(WEIGHTS_DIR)], epochs=40)
    code, result = audit_with_the_external_policy(
        tmp_path, model, spec, manifest, other_hospitals(tmp_path / "external", n_per_class=4))
    assert (code, result.verdict) == (1, "fail")
    external = result.check("generalization.external")
    assert external.blocking and str(external.status) == "fail", external.summary
    assert external.details["n_external"] == 64
    # the inference-only checks on this model fire too (warnings by default)
    for check_id in ("intervention.surround_swap", "performance.within_source"):
        assert str(result.check(check_id).status) == "warn", result.check(check_id).summary
