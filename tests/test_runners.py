import os

import numpy as np
import pytest

from audit.core.config import RuntimeConfig
from audit.core.errors import InputError
from audit.runners import JobError, LocalRunner, RayRunner, get_runner, worker_threads
from tests.runner_jobs import (
    bad_input_on_odd,
    die_on_odd,
    fail_on_odd,
    seeded_draw,
    thread_settings,
)

PAYLOADS = [{"seed": s} for s in range(5)]


def values(results):
    return [(r["seed"], r["value"]) for r in results]


def test_local_in_process_keeps_order_and_runs_here():
    results = LocalRunner().map(seeded_draw, PAYLOADS)
    assert [r["seed"] for r in results] == [0, 1, 2, 3, 4]
    assert {r["pid"] for r in results} == {os.getpid()}


def test_worker_processes_give_the_same_results():
    in_process = LocalRunner().map(seeded_draw, PAYLOADS)
    pooled = LocalRunner(workers=2).map(seeded_draw, PAYLOADS)
    assert values(pooled) == values(in_process)
    assert os.getpid() not in {r["pid"] for r in pooled}


def test_pool_workers_share_the_cores_instead_of_each_taking_all_of_them(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert [worker_threads(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.undo()
    expected = worker_threads(2)
    for settings in LocalRunner(workers=2).map(thread_settings, [{}, {}]):
        assert settings["intra_op"] == settings["inter_op"] == expected
        assert settings["blas"] == [expected]


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_names_the_payload_after_all_jobs_ran(workers):
    with pytest.raises(JobError, match=r"\{'seed': 1\} failed: ValueError: odd seed 1") as caught:
        LocalRunner(workers=workers).map(fail_on_odd, PAYLOADS)
    assert caught.value.payload == {"seed": 1}


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_input_inside_a_job_surfaces_as_that_input_error(workers):
    with pytest.raises(InputError, match=r"weights-1.h5: no such weights file"):
        LocalRunner(workers=workers).map(bad_input_on_odd, PAYLOADS)


def test_a_failed_job_is_named_without_the_config_it_carries():
    payloads = [{"config": {"models": {"epochs": 60}}, "backbone": "mobilenetv2", "seed": 1}]
    with pytest.raises(JobError) as caught:
        LocalRunner().map(fail_on_odd, payloads)
    assert "'backbone': 'mobilenetv2', 'seed': 1" in str(caught.value)
    assert "epochs" not in str(caught.value)


def test_a_worker_killed_mid_job_fails_the_map_instead_of_hanging():
    with pytest.raises(JobError, match=r"failed: BrokenProcessPool") as caught:
        LocalRunner(workers=2).map(die_on_odd, [{"seed": 0}, {"seed": 1}, {"seed": 2}])
    assert caught.value.payload in ({"seed": 0}, {"seed": 1}, {"seed": 2})


def test_get_runner_follows_the_config():
    assert get_runner(RuntimeConfig()).name == "local"
    ray = get_runner(RuntimeConfig(backend="ray", workers=2))
    assert (ray.name, ray.num_cpus, ray.address) == ("ray", 2, None)
    cluster = get_runner(RuntimeConfig(backend="ray", workers=2, ray_address="ray://head:10001"))
    assert (cluster.num_cpus, cluster.address) == (None, "ray://head:10001")
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        LocalRunner(workers=0)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_matches_local(local_ray):
    results = RayRunner().map(seeded_draw, PAYLOADS)
    assert values(results) == values(LocalRunner().map(seeded_draw, PAYLOADS))


def test_ray_tasks_run_with_the_threads_of_the_cpus_they_declare(local_ray):
    for settings in RayRunner().map(thread_settings, [{}, {}, {}]):
        assert settings["intra_op"] == settings["inter_op"] == 1
        assert settings["blas"] == [1]


def test_ray_failure_names_the_payload(local_ray):
    with pytest.raises(JobError, match=r"\{'seed': 3\} failed") as caught:
        RayRunner().map(fail_on_odd, [{"seed": 0}, {"seed": 3}])
    assert caught.value.payload == {"seed": 3}


def test_ray_bad_input_inside_a_job_surfaces_as_that_input_error(local_ray):
    with pytest.raises(InputError) as caught:
        RayRunner().map(bad_input_on_odd, PAYLOADS)
    # The job's own error and message, not Ray's wrapper with the worker's traceback.
    assert type(caught.value) is InputError
    assert str(caught.value) == "weights-1.h5: no such weights file"


def test_ray_worker_death_names_the_payload(local_ray):
    with pytest.raises(JobError, match=r"\{'seed': 1\} failed") as caught:
        RayRunner().map(die_on_odd, [{"seed": 0}, {"seed": 1}])
    assert caught.value.payload == {"seed": 1}


def _tiny_training_config():
    """A config whose classifiers train in a moment: 16 phantoms at 32 px, no weights."""
    from audit.core.config import parse_config

    return parse_config({
        "data": {"synth": {"n_per_class": 2, "n_sources": 2, "image_size": 64},
                 "image_size": 32},
        "segmentation": {"source": "manifest"},
        "models": {"alpha": 0.35, "weights": "none", "epochs": 1, "dense_units": 8,
                   "augmented_views": 0}})


def _computed(jobs) -> list[str]:
    """The stages the jobs computed (trained, featurised, scored), in order."""
    return [event["stage"] for job in jobs for event in job["events"]
            if event["action"] == "computed"]


@pytest.mark.slow
def test_variant_jobs_score_their_rows_as_the_saved_classifier_does_without_loading_it(
        tmp_path, monkeypatch):
    """A variant's probabilities are the saved classifier's own on its score rows (whole
    model on the images); training and an unchanged rerun load no model, and the rerun
    computes nothing."""
    from audit.core.cache import StageCache
    from audit.jobs import prepare_data
    from audit.pipeline import _VariantTrainer
    from models.train import VariantRequest, spec_from_config, train_classifier

    def no_loading(path):
        raise AssertionError(f"loaded the classifier in {path}")

    for name in ("models.saving.load_trained", "models.train.load_trained"):
        monkeypatch.setattr(name, no_loading)
    config = _tiny_training_config()
    requests = [VariantRequest(range(12), range(12, 16), [15, 0, 13, 2], seed=0),
                VariantRequest(range(4, 16), range(4), [3, 9], "lung_masked", seed=1)]

    def scored():
        trainer = _VariantTrainer(config, StageCache(tmp_path / "cache"), LocalRunner())
        return trainer(requests), trainer.jobs

    (first, trained), (again, rerun) = scored(), scored()
    assert "classifier" in _computed(trained) and _computed(rerun) == []
    monkeypatch.undo()
    cache = StageCache(tmp_path / "cache")
    dataset, _ = prepare_data(config, cache)
    for request, proba, proba_again in zip(requests, first, again, strict=True):
        spec = spec_from_config(config, "mobilenetv2", request.input_mode, request.seed)
        saved = train_classifier(dataset, request.train_rows, request.val_rows, spec, cache)
        rows = list(request.score_rows)
        assert proba.shape == (len(rows), len(dataset.classes))
        np.testing.assert_allclose(proba, saved.predict_proba(dataset, rows), atol=1e-5)
        np.testing.assert_array_equal(proba_again, proba)
    assert [event.action for event in cache.events if event.stage == "classifier"] == [
        "reused", "reused"]  # the classifiers compared are those the jobs trained


@pytest.mark.slow
def test_ray_trains_probe_variants_into_the_shared_cache(local_ray, tmp_path):
    """Two variant jobs on Ray train and score into the cache; the same requests in this
    process then read the same probabilities back (nothing trained, loaded or scored)."""
    from audit.jobs import variant_job, variant_payload
    from models.train import VariantRequest

    config = _tiny_training_config()
    requests = [VariantRequest(range(12), range(12, 16), range(16), seed=seed)
                for seed in (0, 1)]
    payloads = [variant_payload(config, tmp_path / "cache", request) for request in requests]
    on_ray = RayRunner().map(variant_job, payloads)
    here = LocalRunner().map(variant_job, payloads)
    assert [job["proba"] for job in here] == [job["proba"] for job in on_ray]
    assert on_ray[0]["proba"] != on_ray[1]["proba"]  # two seeds, two classifiers
    assert _computed(here) == []
