"""The check registry: discovery from ``probes.checks``, its order and errors, and a toy check
in a temporary module that flows to config, policy, pipeline, report and JUnit untouched."""

from __future__ import annotations

import importlib
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from audit import pipeline
from audit.core.cache import StageCache
from audit.core.config import CheckPolicy, parse_config
from audit.core.errors import InputError
from audit.core.result import Status
from audit.data.dataset import Dataset, Splits
from audit.gate import judge, load_policy
from probes import checks
from probes.base import CheckSpec, Gate, ProbeContext
from probes.registry import check_ids, get_check, specs
from reports import write_reports
from tests.probe_fixtures import probe_context
from tests.report_fixtures import build_audit_result

TOY_ID = "toy.corner_pixel"
TOY_QUESTION = "Is the top-left pixel of the images bright (a toy question)?"
# A check module as a contributor would write it; toy_module fills in ORDER.
TOY_MODULE = f'''
from probes.base import CheckResult, CheckSpec, Gate, ProbeContext

SPEC = CheckSpec(
    id={TOY_ID!r},
    title="Toy: corner pixel",
    question={TOY_QUESTION!r},
    metric="mean top-left pixel value over 255",
    default=Gate(level="fail", threshold=0.5, required=True),
    order=ORDER,
    explanation="A toy check written by tests/test_registry.py.",
)


def run(context: ProbeContext) -> CheckResult:
    value = float(context.dataset.images[:, 0, 0].mean() / 255)
    return SPEC.result(metric_name="corner brightness", metric=value,
                       summary=f"The top-left pixel averages {{value:.2f}} of full scale.")
'''


def toy_module(order: int) -> str:
    return TOY_MODULE.replace("ORDER", str(order))


def add_check_module(tmp_path, monkeypatch, name: str, text: str) -> None:
    """Write ``name.py`` into a new folder and put it on ``probes.checks.__path__``."""
    folder = tmp_path / f"extra_checks_{name}"
    folder.mkdir()
    (folder / f"{name}.py").write_text(text)
    monkeypatch.setattr(checks, "__path__", [*checks.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, f"{checks.__name__}.{name}", raising=False)
    importlib.invalidate_caches()


@pytest.fixture
def toy_check(tmp_path, monkeypatch):
    """A toy check module, last in the order, registered for this test only."""
    add_check_module(tmp_path, monkeypatch, "toy_corner_pixel", toy_module(1000))
    yield TOY_ID
    sys.modules.pop(f"{checks.__name__}.toy_corner_pixel", None)


def bright_corner_context(tmp_path) -> ProbeContext:
    """Six 8-px images whose top-left pixel is white: the toy check's metric is 1."""
    images = np.zeros((6, 8, 8), np.uint8)
    images[:, 0, 0] = 255
    manifest = pd.DataFrame({"path": [f"/x/{i}.png" for i in range(6)],
                             "label": ["covid", "normal"] * 3, "source": ["a", "b"] * 3,
                             "patient_id": [f"p{i}" for i in range(6)]})
    rows = np.arange(6)
    splits = Splits(train=rows[:4], test=rows[4:], folds=((rows[:2], rows[2:4]),), seed=0)
    return probe_context(Dataset(manifest=manifest, images=images, manifest_hash="toy"), splits,
                         audited="m/raw")


def test_specs_are_in_their_declared_order_data_checks_first():
    listed = specs()
    assert [(s.order, s.id) for s in listed] == sorted((s.order, s.id) for s in listed)
    assert [s.id for s in listed[:2]] == ["data.confounding", "data.leakage"]
    assert check_ids() == tuple(s.id for s in listed)
    assert len(set(check_ids())) == len(listed)


def test_every_check_module_exports_its_spec_and_run():
    for spec in specs():
        check = get_check(spec.id)
        assert check.SPEC is spec and callable(check.run)
        assert spec.question and spec.metric and spec.explanation and spec.next_steps


def test_unknown_check_id_names_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown check id 'site.imgae'; known checks: "
                                         r"data\.confounding, data\.leakage, site\.image"):
        get_check("site.imgae")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "SiteImage"}, r"check id must look like 'family.name'.*got 'SiteImage'"),
        ({"needs": ("gpu",)}, r"x\.y: unknown prerequisite\(s\) gpu; known: masks"),
        ({"default": Gate(level="fail", threshold=1.0)}, None),
    ],
)
def test_spec_validation_names_the_bad_field(fields, message):
    base = {"id": "x.y", "title": "t", "question": "q", "metric": "m", "order": 1,
            "default": Gate(level="warn", threshold=0.1)}
    if message is None:
        assert CheckSpec(**{**base, **fields}).default.level == "fail"
        return
    with pytest.raises(ValueError, match=message):
        CheckSpec(**{**base, **fields})


def test_gate_level_is_validated():
    with pytest.raises(ValueError, match=r"Gate level must be one of fail, warn, ignore; "
                                         r"got 'block'"):
        Gate(level="block", threshold=0.1)


def test_two_modules_with_one_id_are_refused(tmp_path, monkeypatch, toy_check):
    add_check_module(tmp_path, monkeypatch, "toy_again", toy_module(5))
    with pytest.raises(ValueError, match=r"check id 'toy.corner_pixel' is defined by both"):
        specs()
    sys.modules.pop(f"{checks.__name__}.toy_again", None)


def test_a_module_order_not_its_file_name_places_it(tmp_path, monkeypatch):
    add_check_module(tmp_path, monkeypatch, "aaa_toy", toy_module(15))
    try:
        assert check_ids()[:3] == ("data.confounding", TOY_ID, "data.leakage")
    finally:
        sys.modules.pop(f"{checks.__name__}.aaa_toy", None)


def test_a_toy_check_module_flows_everywhere(tmp_path, toy_check):
    # registry and config
    assert check_ids()[-1] == toy_check and get_check(toy_check).SPEC.question == TOY_QUESTION
    assert pipeline.enabled_checks(parse_config({}))[-1] == toy_check
    chosen = parse_config({"probes": {"checks": [toy_check]}})
    assert pipeline.enabled_checks(chosen) == (toy_check,)
    # default policy (and a reviewer's policy may name it)
    assert load_policy().checks[toy_check] == CheckPolicy(gate="fail", threshold=0.5,
                                                          required=True)
    reviewer = tmp_path / "policy.yaml"
    reviewer.write_text(f"checks:\n  {toy_check}:\n    threshold: 2\n")
    assert load_policy(reviewer).checks[toy_check].threshold == 2
    # the pipeline runs it (only it: the others are disabled by the config)
    context = bright_corner_context(tmp_path)
    ran = pipeline.run_checks(context, chosen.probes.checks, StageCache(tmp_path / "cache"),
                              tmp_path / "run")
    toy = next(result for result in ran if result.check_id == toy_check)
    assert (toy.status, toy.metric, toy.title) == (Status.MEASURED, 1.0, "Toy: corner pixel")
    # the gate judges it by its spec's default, the report asks its question, JUnit names it
    run_dir = tmp_path / "report"
    sample = build_audit_result(run_dir)
    judged = judge(replace(sample, checks=(*sample.checks, toy)), load_policy())
    assert judged.check(toy_check).status == Status.FAIL
    written = write_reports(judged, run_dir)
    html = written["html"].read_text()
    assert TOY_QUESTION in html and "mean top-left pixel value over 255" in html
    cases = {case.get("name"): case for case in ET.parse(written["junit"]).iter("testcase")}
    assert cases[toy_check].find("failure") is not None


def test_without_the_toy_module_nothing_knows_it():
    assert TOY_ID not in check_ids()
    with pytest.raises(InputError, match=r"probes\.checks: unknown check id\(s\) toy\.corner"):
        pipeline.enabled_checks(parse_config({"probes": {"checks": [TOY_ID]}}))
