"""The pipeline's own logic with stand-in probes: cached probe stages, crashes, artifacts
(saved with the stage, copied into the run folder, drawn by the report), disabled checks,
data summaries and model records (no TensorFlow, no training)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from audit import pipeline
from audit.core.cache import StageCache
from audit.core.config import ProbesConfig, parse_config
from audit.core.errors import InputError
from audit.data.dataset import Dataset, Splits
from probes.base import CheckResult, ProbeContext, Status
from probes.registry import check_ids
from reports.figures import cam_panels
from tests.probe_fixtures import probe_context


def tiny_dataset() -> Dataset:
    manifest = pd.DataFrame({
        "path": [f"/x/{i}.png" for i in range(6)],
        "label": ["covid", "covid", "normal", "normal", "other", "opacity"],
        "source": ["a", "a", "b", "b", "a", "b"],
        "patient_id": [f"p{i}" for i in range(6)],
    })
    images = np.arange(6 * 8 * 8, dtype=np.uint8).reshape(6, 8, 8)
    return Dataset(manifest=manifest, images=images, masks=np.ones_like(images),
                   has_mask=np.array([True] * 5 + [False]), mask_origin="manifest",
                   quarantined=pd.DataFrame({"path": ["/x/bad.png"], "reason": ["unreadable"]}),
                   manifest_hash="abc")


def tiny_context(tmp_path) -> ProbeContext:
    rows = np.arange(6)
    splits = Splits(train=rows[:4], test=rows[4:], folds=((rows[:2], rows[2:4]),), seed=0)
    return probe_context(tiny_dataset(), splits, audited="m/raw")


def tiny_cache(tmp_path) -> StageCache:
    return StageCache(tmp_path / "cache")


GALLERY_ARRAYS = {"images": np.arange(128, dtype=np.uint8).reshape(2, 8, 8),
                  "cams": np.arange(8.0).reshape(2, 2, 2)}


class CountingProbe:
    """Measures a fixed metric, returns one artifact its figure draws, and counts how often
    it ran."""

    calls: list[str] = []

    def __init__(self, check_id: str):
        self.check_id = check_id
        self.title = check_id

    def run(self, context: ProbeContext) -> CheckResult:
        CountingProbe.calls.append(self.check_id)
        if self.check_id == "site.image":
            raise RuntimeError("probe exploded")
        return CheckResult(check_id=self.check_id, title=self.title, metric=0.5, p_value=0.01,
                           figures={"gallery": {"kind": "cam_gallery", "artifact": "maps"}},
                           artifacts={"maps": GALLERY_ARRAYS})


@pytest.fixture
def counting_probes(monkeypatch):
    CountingProbe.calls = []
    monkeypatch.setattr(pipeline, "get_check", CountingProbe)
    return CountingProbe


def test_checks_run_once_then_come_from_the_cache(tmp_path, counting_probes):
    context = tiny_context(tmp_path)
    enabled = ["data.confounding", "attention.border", "site.image"]
    first = pipeline.run_checks(context, enabled, tiny_cache(tmp_path), tmp_path / "run")
    assert [r.check_id for r in first] == list(check_ids())
    assert counting_probes.calls == ["data.confounding", "site.image", "attention.border"]

    second = pipeline.run_checks(context, enabled, tiny_cache(tmp_path), tmp_path / "run")
    # Finished probes are reused; the crashed one is retried (a crash is never cached).
    assert counting_probes.calls[3:] == ["site.image"]
    assert [r.to_dict() for r in second] == [r.to_dict() for r in first]


def test_a_crashing_probe_becomes_an_error_and_others_still_run(tmp_path, counting_probes):
    context = tiny_context(tmp_path)
    results = pipeline.run_checks(context, ["site.image", "data.leakage"], tiny_cache(tmp_path),
                                  tmp_path / "run")
    crashed = next(r for r in results if r.check_id == "site.image")
    assert crashed.status == Status.ERROR
    assert crashed.reason == "RuntimeError: probe exploded"
    assert next(r for r in results if r.check_id == "data.leakage").status == Status.MEASURED


def test_disabled_checks_are_not_run_with_the_reason(tmp_path, counting_probes):
    context = tiny_context(tmp_path)
    results = pipeline.run_checks(context, ["data.leakage"], tiny_cache(tmp_path), tmp_path / "run")
    disabled = [r for r in results if r.check_id != "data.leakage"]
    assert {r.status for r in disabled} == {Status.NOT_RUN}
    assert all("disabled in the config (probes.checks)" in r.reason for r in disabled)


def test_run_checks_leaves_the_holm_adjustment_to_the_gate(tmp_path, counting_probes):
    context = tiny_context(tmp_path)
    results = pipeline.run_checks(context, ["data.leakage", "data.confounding"],
                                  tiny_cache(tmp_path), tmp_path / "run")
    measured = [r for r in results if r.status == Status.MEASURED]
    assert [(r.p_value, r.p_adjusted) for r in measured] == [(0.01, None), (0.01, None)]


def test_artifacts_are_saved_with_the_stage_and_the_figure_points_at_the_run_copy(tmp_path,
                                                                                  counting_probes):
    context, run_dir = tiny_context(tmp_path), tmp_path / "run"
    cache = tiny_cache(tmp_path)
    results = pipeline.run_checks(context, ["attention.border"], cache, run_dir)
    border = next(r for r in results if r.check_id == "attention.border")
    spec = border.figures["gallery"]
    assert spec == {"kind": "cam_gallery", "artifact": "maps",
                    "npz": "artifacts/attention.border/maps.npz"}
    assert border.artifacts == {} and "artifacts" not in border.to_dict()
    stage = cache.folder("probe", cache.events[-1].key)
    for saved in (stage / "maps.npz", run_dir / spec["npz"]):
        with np.load(saved) as stored:
            for name, array in GALLERY_ARRAYS.items():
                np.testing.assert_array_equal(stored[name], array)
    panels, colour_bar = cam_panels(spec, run_dir)  # what the report does with the spec
    assert len(panels) == len(GALLERY_ARRAYS["images"]) and colour_bar.startswith("data:image/")
    assert all(panel.data_uri.startswith("data:image/jpeg") for panel in panels)


def test_reused_probe_restores_its_artifacts_into_a_new_run_folder(tmp_path, counting_probes):
    context = tiny_context(tmp_path)
    pipeline.run_checks(context, ["attention.border"], tiny_cache(tmp_path), tmp_path / "run")
    pipeline.run_checks(context, ["attention.border"], tiny_cache(tmp_path), tmp_path / "other")
    assert counting_probes.calls == ["attention.border"]
    assert (tmp_path / "other" / "artifacts" / "attention.border" / "maps.npz").is_file()


@pytest.mark.parametrize(("figures", "artifacts", "message"), [
    ({"g": {"kind": "cam_gallery", "artifact": "lost"}}, {"maps": {"cams": np.zeros(1)}},
     r"attention.border: figure 'g' draws artifact 'lost'; the result's artifacts are \['maps'\]"),
    ({}, {"../maps": {"cams": np.zeros(1)}},
     r"attention.border: artifact name '../maps' must be letters, digits"),
])
def test_a_figure_without_its_artifact_or_a_bad_name_is_an_error(tmp_path, monkeypatch, figures,
                                                                  artifacts, message):
    def broken_probe(check_id):
        return type("Broken", (), {"run": lambda self, context: CheckResult(
            check_id=check_id, title=check_id, figures=figures, artifacts=artifacts)})()

    monkeypatch.setattr(pipeline, "get_check", broken_probe)
    results = pipeline.run_checks(tiny_context(tmp_path), ["attention.border"],
                                  tiny_cache(tmp_path), tmp_path / "run")
    crashed = next(r for r in results if r.check_id == "attention.border")
    assert crashed.status == Status.ERROR
    assert re.fullmatch("ValueError: " + message + ".*", crashed.reason)
    assert not (tmp_path / "run" / "artifacts").exists()


def test_probe_stage_key_changes_with_params_but_not_with_the_checks_list(tmp_path):
    context = tiny_context(tmp_path)
    base = pipeline._probe_inputs(context)
    context.params = ProbesConfig(checks=["data.leakage"])
    assert pipeline._probe_inputs(context) == base
    context.params = ProbesConfig(n_permutations=7)
    assert pipeline._probe_inputs(context) != base


def test_data_summary_counts_labels_by_source_and_quarantine():
    summary = pipeline.summarise_data(tiny_dataset())
    assert summary["n_images"] == 6
    assert summary["sources"] == ["a", "b"]
    assert summary["label_source_counts"]["covid"] == {"a": 2, "b": 0}
    assert summary["label_source_counts"]["opacity"] == {"a": 0, "b": 1}
    assert summary["n_with_mask"] == 5
    assert summary["quarantined"] == [{"path": "/x/bad.png", "reason": "unreadable"}]


def _metrics(correct: int, n: int = 5) -> dict:
    """Metrics of ``n`` covid images, ``correct`` of them called covid."""
    from models.metrics import classification_metrics

    proba = np.eye(4)[np.where(np.arange(n) < correct, 0, 1)]
    return classification_metrics(np.zeros(n, dtype=int), proba, ["covid", "opacity",
                                                                   "other", "normal"],
                                  n_bootstrap=0)


def test_model_records_fold_cross_validation_into_their_model():
    def record(fold, correct, seed=0):
        return {"key": "m/raw", "seed": seed, "fold": fold, "path": f"/c/{fold}",
                "metrics": _metrics(correct), "events": []}

    records = [record(None, 4), record(0, 3), record(1, 4), record(None, 2, seed=1)]
    models = pipeline._model_records(records)
    assert [(m["key"], m["seed"]) for m in models] == [("m/raw", 0), ("m/raw", 1)]
    assert models[0]["cv"]["mean"]["accuracy"] == pytest.approx(0.7)  # folds 0.6 and 0.8
    assert models[0]["cv"]["folds"] == [records[1]["metrics"], records[2]["metrics"]]
    assert "cv" not in models[1] and "events" not in models[0]


class RecordingRunner:
    """Runs jobs in this process and records what it was given."""

    name = "recording"

    def __init__(self, job_result):
        self.calls, self.job_result = [], job_result

    def map(self, func, payloads):
        self.calls.append((func, payloads))
        return [self.job_result(payload) for payload in payloads]


def test_variant_requests_go_to_the_runner_at_once_and_come_back_as_their_jobs_scores(
        tmp_path, monkeypatch):
    from audit.core.config import parse_config
    from models.train import VariantRequest

    config = parse_config({"models": {"backbones": ["resnet50", "mobilenetv2"]}})

    def no_loading(path):
        raise AssertionError(f"the main process loaded the variant {path}")

    monkeypatch.setattr("models.saving.load_trained", no_loading)
    # A job returns one row of probabilities per score row (here: from its seed).
    runner = RecordingRunner(lambda p: {"proba": [[p["seed"], 1 - p["seed"]]]
                                                 * len(p["score_rows"]), "events": [{"x": 1}]})
    trainer = pipeline._VariantTrainer(config, StageCache(tmp_path), runner)
    scores = trainer([VariantRequest(np.arange(3), [7], np.array([4, 5]), seed=2),
                      VariantRequest([1], [2], [0], "lung_masked", 5, backbone="mobilenetv2")])
    assert [proba.tolist() for proba in scores] == [[[2, -1], [2, -1]], [[5, -4]]]
    assert all(proba.dtype == np.float32 for proba in scores)
    ((func, payloads),) = runner.calls
    assert func is pipeline.variant_job
    assert [(p["backbone"], p["input_mode"], p["seed"], p["train_rows"], p["val_rows"],
             p["score_rows"]) for p in payloads] == [
        ("resnet50", "raw", 2, [0, 1, 2], [7], [4, 5]),
        ("mobilenetv2", "lung_masked", 5, [1], [2], [0])]
    assert [job["events"] for job in trainer.jobs] == [[{"x": 1}], [{"x": 1}]]


def test_models_are_loaded_from_the_paths_their_grid_jobs_returned(monkeypatch):
    """The first seed's run models, each reading the dataset's rows from the features of
    its own classifier spec."""
    from audit.core.config import parse_config

    monkeypatch.setattr("models.saving.load_trained", lambda path: f"model from {path}")
    monkeypatch.setattr("models.train.attach_cached_rows",
                        lambda model, dataset, spec, cache: (
                            f"{model}, rows of {dataset} from {cache}: "
                            f"{spec.backbone}/{spec.input_mode} seed {spec.seed}"))
    config = parse_config({"models": {"seeds": [3, 1]}})
    records = [{"key": "mobilenetv2/raw", "backbone": "mobilenetv2", "input_mode": "raw",
                "seed": 3, "fold": None, "path": "/runs/m-raw-seed3"},
               {"key": "mobilenetv2/raw", "backbone": "mobilenetv2", "input_mode": "raw",
                "seed": 3, "fold": 0, "path": "/cache/fold0"},
               {"key": "mobilenetv2/raw", "backbone": "mobilenetv2", "input_mode": "raw",
                "seed": 1, "fold": None, "path": "/runs/m-raw-seed1"},
               {"key": "mobilenetv2/lung_masked", "backbone": "mobilenetv2",
                "input_mode": "lung_masked", "seed": 3, "fold": None,
                "path": "/runs/m-lm-seed3"}]
    assert pipeline._load_models(config, records, "data", "cache") == {
        "mobilenetv2/raw": "model from /runs/m-raw-seed3, rows of data from cache: "
                           "mobilenetv2/raw seed 3",
        "mobilenetv2/lung_masked": "model from /runs/m-lm-seed3, rows of data from cache: "
                                   "mobilenetv2/lung_masked seed 3"}


@pytest.mark.parametrize(("settings", "message"), [
    ({"data": {"image_size": 64}},
     r"data.image_size: 64 gives mobilenetv2 a 2x2-cell Grad-CAM.* use data.image_size 65 "),
    ({"data": {"image_size": 128}, "models": {"backbones": ["inceptionv3"]}},
     r"data.image_size: 128 gives inceptionv3 a 2x2-cell Grad-CAM"),
])
def test_an_image_size_too_coarse_for_grad_cam_is_refused(settings, message):
    with pytest.raises(InputError, match=message):
        pipeline.check_cam_grid(parse_config(settings))


@pytest.mark.parametrize("settings", [
    {"data": {"image_size": 65}},
    {"data": {"image_size": 64}, "probes": {"checks": ["site.image", "data.leakage"]}},
])
def test_an_image_size_is_accepted_when_the_grid_fits_or_no_attention_check_runs(settings):
    pipeline.check_cam_grid(parse_config(settings))
