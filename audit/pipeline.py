"""One command from data to verdict: data -> masks -> classifiers -> probes -> report -> gate.

``run_audit`` trains the run's classifiers (every backbone x input mode x seed, plus the
cross-validation folds) as a grid of jobs on the configured runner, then runs every check
against them; the classifiers a probe retrains go to the same runner, all of that probe's
at once. ``audit_external`` audits a model someone else trained: the checks that
need retraining report ``not_run`` with the reason. Both return an ``AuditResult`` judged
by the policy, naming what was audited (``audit.audited``) without absolute paths, and
write ``report.html``, ``summary.json``, ``junit.xml`` and ``model_card.md`` to the run
folder.

Every expensive step is a stage of the run's cache (``<out>/cache`` unless
``runtime.cache_dir`` is set), probe results included, so a rerun, or a run resumed after
a crash, reuses what is finished and recomputes only what its changed settings touch. The
probes get the models layer's services through their context, cached here (frozen
features, Grad-CAMs), and return plain data; the arrays a check's figures draw are saved
with its probe stage and copied into the run folder's ``artifacts/``.
"""

from __future__ import annotations

import itertools
import json
import platform
import re
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.audited import audit_date, data_identity, model_identity, portable, tool_identity
from audit.core.cache import StageCache, hash_array, stable_hash
from audit.core.config import CLASSES, AuditConfig, dump_config
from audit.core.errors import InputError
from audit.core.io import atomic_write
from audit.core.progress import log, progress
from audit.core.result import AuditResult
from audit.data.dataset import Dataset, Splits
from audit.data.manifest import file_problem
from audit.gate import check_permutations, judge, load_policy, policy_name
from audit.jobs import (
    manifest_file,
    prepare_data,
    split_data,
    train_job,
    training_payload,
    variant_job,
    variant_payload,
)
from audit.runners import Runner, get_runner
from models.explanations import CAM_TARGETS, Explanations
from probes.base import CheckResult, ProbeContext, Status
from probes.registry import check_ids, get_check, specs

if TYPE_CHECKING:
    from models.train import VariantRequest
    from models.trained import TrainedModel

VERSIONED_PACKAGES = ("cxr-shortcut-audit", "tensorflow-cpu", "tensorflow", "keras", "numpy",
                      "scikit-learn", "statsmodels", "tf-keras-vis", "segmentation-models")
CAM_STAGE = "gradcam"
IMAGE_PREDICTION_STAGE = "image_predictions"
ARTIFACTS_DIR = "artifacts"  # in the run folder: ``<check_id>/<name>.npz`` per check artifact
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_-]+")  # an artifact's name is its file name


def run_audit(config: AuditConfig, out_dir: str | Path, runner: Runner | None = None,
              policy_path: str | Path | None = None) -> AuditResult:
    """Audit the classifiers the config describes, from data to judged verdict.

    Args:
        config: The validated run config.
        out_dir: The run folder (created); reports, models, splits and masks go here.
        runner: Where the training grid and the probes' retraining run. Defaults to None
            (``runtime`` of the config).
        policy_path: A policy YAML layered on the default policy and the config's
            ``policy`` section (``audit.gate.load_policy``). Defaults to None (none).

    Returns:
        The judged result (also written as ``summary.json`` and the reports).
    """
    from models.saving import MODEL_FILE

    started, date = time.perf_counter(), audit_date()
    check_cam_grid(config)
    check_target_class(config)
    out_dir, cache, policy = _start_run(config, out_dir, policy_path)
    dataset, segmentation = prepare_data(config, cache, masks_dir=out_dir / "masks")
    external = load_external(config, cache)
    splits = _save_splits(config, dataset, out_dir)
    runner = runner or get_runner(config.runtime)
    records = _train_grid(config, cache, out_dir, splits, runner)
    models = _load_models(config, records, dataset, cache)
    variants = _VariantTrainer(config, cache, runner)
    context = ProbeContext(
        dataset=dataset, splits=splits, models=models,
        audited=f"{config.models.backbones[0]}/raw", params=config.probes,
        seed=config.probes.seed, train_variants=variants,
        mode_features=mode_feature_service(config, dataset, cache),
        explanations=explanation_service(dataset, models, cache), external=external,
        predict_images=image_prediction_service(models, cache),
    )
    checks = run_checks(context, enabled_checks(config), cache, out_dir)
    audited = models[context.audited]
    result = _audit_result(
        config, cache, out_dir, dataset, checks=checks, models=_model_records(records),
        segmentation=segmentation,
        provenance=_provenance(config, dataset, cache, records + variants.jobs, started),
        model=model_identity(audited, Path(audited.path) / MODEL_FILE, out_dir), date=date)
    return _finish(result, policy, policy_name(policy_path, config.policy), out_dir)


def audit_external(model_path: str | Path, spec_path: str | Path, config: AuditConfig,
                   out_dir: str | Path, policy_path: str | Path | None = None) -> AuditResult:
    """Audit a model someone else trained on the config's data (the release-review case).

    Checks that need no retraining run on the external model; those that need retraining
    return ``not_run`` with the reason, and the policy decides whether that fails the gate
    (``examples/policy-external-model.yaml`` does not require them). ``policy_path`` is
    as in ``run_audit``.
    """
    from models.external import load_external_model

    started, date = time.perf_counter(), audit_date()
    out_dir, cache, policy = _start_run(config, out_dir, policy_path)
    model = load_external_model(model_path, spec_path)
    dataset, segmentation = prepare_data(config, cache, masks_dir=out_dir / "masks")
    splits = _save_splits(config, dataset, out_dir)
    models = {model.key: model}
    context = ProbeContext(
        dataset=dataset, splits=splits, models=models, audited=model.key,
        params=config.probes, seed=config.probes.seed,
        mode_features=mode_feature_service(config, dataset, cache),
        explanations=explanation_service(dataset, models, cache),
        predict_images=image_prediction_service(models, cache),
        external=load_external(config, cache),
    )
    checks = run_checks(context, enabled_checks(config), cache, out_dir)
    record = {"key": model.key, "backbone": model.backbone, "input_mode": model.input_mode,
              "path": str(model_path), "external": True, **model.metadata}
    result = _audit_result(
        config, cache, out_dir, dataset, checks=checks, models=[record],
        segmentation=segmentation, provenance=_provenance(config, dataset, cache, [], started),
        model=model_identity(model, Path(model_path), out_dir, spec_file=Path(spec_path)),
        date=date)
    return _finish(result, policy, policy_name(policy_path, config.policy), out_dir)


def _audit_result(config: AuditConfig, cache: StageCache, out_dir: Path, dataset: Dataset, *,
                  checks: list[CheckResult], models: list[dict[str, Any]],
                  segmentation: dict[str, Any] | None, provenance: dict[str, Any],
                  model: dict[str, Any], date: str) -> AuditResult:
    """The measured result, with what was audited (``audit.audited``) and no absolute
    path: the run's own files relative to ``out_dir``, images relative to the manifest's
    folder, anything else by its file name."""
    manifest = manifest_file(config, cache)
    synth = config.data.synth
    synthetic = (None if config.data.manifest is not None else
                 f"synthetic phantoms (data.synth: {synth.n_sources} sources, confounding "
                 f"{synth.confounding:g}, seed {synth.seed})")
    images = manifest.parent
    return AuditResult(
        checks=tuple(checks), models=tuple(portable(models, out_dir)),
        data=portable(summarise_data(dataset), images),
        segmentation=portable(segmentation, images), provenance=portable(provenance, out_dir),
        audited={"model": model, "data": data_identity(dataset, manifest, synthetic),
                 "tool": tool_identity(), "date": date},
    )


def _start_run(config: AuditConfig, out_dir: str | Path,
               policy_path: str | Path | None) -> tuple[Path, StageCache, Any]:
    """Validate what can be validated before any expensive step; write the resolved config.

    Raises:
        InputError: an unknown check id or policy key, a missing weights file or
            ``data.external`` manifest, or ``probes.n_permutations`` too small for the gated permutation checks to fire
            (``audit.gate.check_permutations``).
    """
    runnable = runnable_checks(config)
    check_weights(config)
    for manifest in config.data.external:  # now, not after hours of decoding and training
        if (problem := file_problem(str(manifest))) is not None:
            raise InputError(f"data.external: {manifest}: {problem}")
    policy = load_policy(policy_path, overrides=config.policy)
    check_permutations(policy, runnable, config.probes.n_permutations)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "config.resolved.yaml") as handle:
        handle.write(dump_config(config))
    cache = StageCache(config.runtime.cache_dir or out_dir / "cache", verify=config.runtime.verify)
    return out_dir, cache, policy


def runnable_checks(config: AuditConfig) -> tuple[str, ...]:
    """The enabled checks that can run with the config's inputs: without ``data.external``
    a check that needs external data is ``not_run``, so it joins no Holm family."""
    external = _external_data_checks()
    return tuple(check_id for check_id in enabled_checks(config)
                 if config.data.external or check_id not in external)


def _external_data_checks() -> set[str]:
    """The checks that read ``data.external`` (``SPEC.needs`` ``external_data``)."""
    return {spec.id for spec in specs() if "external_data" in spec.needs}


def load_external(config: AuditConfig, cache: StageCache) -> tuple[Dataset, ...]:
    """The ``data.external`` manifests as datasets, each read, validated, quarantined and
    decoded at ``data.image_size`` through the image store as the main manifest is (no lung
    masks: the audited model takes raw images).

    Raises:
        InputError: naming ``data.external`` and the manifest that cannot be read, lacks a
            required column or has no usable row.
    """
    from audit.data.images import load_dataset

    external = []
    for manifest in config.data.external:
        try:
            external.append(load_dataset(manifest, config.data.image_size, cache,
                                         dict(config.data.label_map)))
        except InputError as error:
            raise InputError(f"data.external: {error}") from None
    return tuple(external)


def check_cam_grid(config: AuditConfig) -> None:
    """Refuse a ``data.image_size`` at which a backbone's Grad-CAM is too coarse for the
    enabled attention checks (a border band of at least one cell and an interior).

    Only for the config's own backbones: an external model's grid is its own.

    Raises:
        InputError: naming ``data.image_size``, the backbone, its grid at that size and
            the smallest size that works.
    """
    from models.backbones import cam_grid
    from probes.regions import cam_grid_fits

    if not any(check_id.startswith("attention.") for check_id in enabled_checks(config)):
        return
    size, fraction = config.data.image_size, config.probes.border_fraction
    for backbone in config.models.backbones:
        if cam_grid_fits(cam_grid(backbone, size), fraction):
            continue
        works = next(side for side in itertools.count(size)  # the grid grows with the size
                     if cam_grid_fits(cam_grid(backbone, side), fraction))
        grid = cam_grid(backbone, size)
        raise InputError(
            f"data.image_size: {size} gives {backbone} a {grid}x{grid}-cell Grad-CAM, too "
            f"coarse for the attention checks (a border band of at least one cell, "
            f"probes.border_fraction {fraction:g}, and an interior); use data.image_size "
            f"{works} or larger, or leave the attention checks out of probes.checks")


def check_target_class(config: AuditConfig) -> None:
    """Refuse a ``probes.target_class`` the data holds no image of when an enabled check
    follows it (``CheckSpec.follows_target_class``): such a check could only be
    ``not_run``, and a required one fails the gate whatever the data.

    Only for a run that trains: an external model has neither the lung-masked twin nor the
    retraining those checks need. Synthetic phantoms hold every class.

    Reads the manifest's label column only: its rows and files are checked once, when
    the data is loaded.

    Raises:
        InputError: naming ``probes.target_class``, its value and the classes the
            manifest's labels map to (through ``data.label_map``); or the manifest table
            cannot be read (``audit.data.manifest.read_table``).
    """
    from audit.data.manifest import canonical_label_lookup, read_table

    enabled = enabled_checks(config)
    following = [spec.id for spec in specs() if spec.follows_target_class and spec.id in enabled]
    manifest, target = config.data.manifest, config.probes.target_class
    if manifest is None or not following:
        return
    lookup = canonical_label_lookup(dict(config.data.label_map))
    labels = {lookup.get(label.strip().lower()) for label in read_table(manifest).get("label", [])}
    found = [name for name in CLASSES if name in labels]
    if target not in found:
        raise InputError(
            f"probes.target_class: {target!r} is not a class of {manifest}, whose labels map "
            f"(through data.label_map) to {', '.join(found) or 'no class'}; set "
            f"probes.target_class to one of those: the class {_listed(following)} "
            f"{'follow' if len(following) > 1 else 'follows'}")


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def check_weights(config: AuditConfig) -> None:
    """Report the weights the config names but that are not there, before any training.

    A weights file that does not exist stops the run. A ``models.weights_dirs`` folder that
    does not exist (typically a relative path in a config copied to another folder) is a
    warning naming the ImageNet files Keras expects in it for the configured backbones:
    the run can still go on, with Keras' own download.

    Raises:
        WeightsUnavailableError: ``models.weights`` or ``segmentation.encoder_weights``
            names a file that does not exist.
    """
    from models.backbones import check_weights_file, imagenet_file_names

    models_cfg = config.models
    check_weights_file(models_cfg.weights, "models.weights")
    check_weights_file(config.segmentation.encoder_weights, "segmentation.encoder_weights")
    if models_cfg.weights != "imagenet":
        return  # no folder is searched
    expected = "; ".join(
        f"{backbone}: " + " or ".join(imagenet_file_names(backbone, models_cfg.alpha,
                                                          config.data.image_size))
        for backbone in models_cfg.backbones)
    for folder in models_cfg.weights_dirs:
        if not Path(folder).is_dir():
            log.warning("models.weights_dirs: folder %s does not exist (a relative entry is "
                        "read from the config file's folder); it is searched for Keras' "
                        "ImageNet weights of the configured backbones (%s). Without a local "
                        "copy Keras downloads them, which needs internet access.",
                        folder, expected)


def enabled_checks(config: AuditConfig) -> tuple[str, ...]:
    """The check ids ``probes.checks`` enables: every registered one when it is unset.

    Raises:
        InputError: an id that is not registered, naming the known ones.
    """
    known = check_ids()
    if config.probes.checks is None:
        return known
    unknown = sorted(set(config.probes.checks) - set(known))
    if unknown:
        raise InputError(f"probes.checks: unknown check id(s) {', '.join(unknown)}; "
                         f"known checks: {', '.join(known)}")
    return tuple(config.probes.checks)


def _save_splits(config: AuditConfig, dataset: Dataset, out_dir: Path) -> Splits:
    from audit.data.splits import save_splits

    splits = split_data(config, dataset)
    save_splits(splits, dataset, out_dir / "splits.json")
    return splits


def _train_grid(config: AuditConfig, cache: StageCache, out_dir: Path, splits: Splits,
                runner: Runner) -> list[dict[str, Any]]:
    """Every classifier of the run as one job each: backbones x input modes x seeds x
    (the run's model + the cross-validation folds when ``models.cross_validate``)."""
    folds = list(range(config.data.n_folds)) if config.models.cross_validate else []
    payloads = []
    for backbone in config.models.backbones:
        for mode in config.models.input_modes:
            for seed in config.models.seeds:
                keep = out_dir / "models" / f"{backbone}-{mode}-seed{seed}"
                payloads.append(training_payload(config, cache.root, splits, backbone, mode,
                                                 seed, None, keep))
                payloads += [training_payload(config, cache.root, splits, backbone, mode, seed,
                                              fold, None) for fold in folds]
    log.info("training %d classifiers (%s runner)", len(payloads), runner.name)
    return runner.map(train_job, payloads)


def _load_models(config: AuditConfig, records: list[dict[str, Any]], dataset: Dataset,
                 cache: StageCache) -> dict[str, TrainedModel]:
    """The first seed's model per backbone and input mode, loaded from where its grid job
    put it, scoring and embedding the dataset's rows from the features its training cached."""
    from models.saving import load_trained
    from models.train import attach_cached_rows, spec_from_config

    first_seed = config.models.seeds[0]
    return {record["key"]: attach_cached_rows(
                load_trained(record["path"]), dataset,
                spec_from_config(config, record["backbone"], record["input_mode"], first_seed),
                cache)
            for record in records if record["fold"] is None and record["seed"] == first_seed}


class _VariantTrainer:
    """``train_variants`` for the probes: each request a job on the run's runner, all of a
    probe's requests at once, so a pool or Ray trains them side by side. The jobs score
    the requested rows themselves, so this process loads none of the classifiers.

    Attributes:
        jobs: every variant job so far, as its stage events (they count in the provenance).
    """

    def __init__(self, config: AuditConfig, cache: StageCache, runner: Runner):
        self.config, self.cache, self.runner = config, cache, runner
        self.jobs: list[dict[str, Any]] = []

    def __call__(self, requests: list[VariantRequest]) -> list[np.ndarray]:
        payloads = [variant_payload(self.config, self.cache.root, request)
                    for request in requests]
        log.info("training %d variant classifiers (%s runner)", len(payloads), self.runner.name)
        results = self.runner.map(variant_job, payloads)
        self.jobs += [{"events": result["events"]} for result in results]
        return [np.asarray(result["proba"], dtype=np.float32) for result in results]


def mode_feature_service(config: AuditConfig, dataset: Dataset,
                         cache: StageCache) -> Callable[[str], np.ndarray]:
    """``mode_features`` for the probes: every row of ``dataset`` shown in an input mode,
    through the first backbone, frozen, with the run's weights, pooled.

    The stage is keyed as the cached-path classifiers' training features of that backbone
    (``models.features.FeatureSpec`` of the same settings, ``models.inputs.ModeImages`` of
    the same dataset and mode), so the raw and lung-masked features the training grid
    computed are read back, not computed again (960 forward passes in the demo). A mode's
    features are of every row, so a mode the grid does not train on also costs the rows
    without a lung mask, which the check leaves out (332 of the real set's 1,417).
    """
    from models.features import FeatureSpec, frozen_features
    from models.inputs import ModeImages

    models_cfg = config.models
    spec = FeatureSpec(models_cfg.backbones[0], models_cfg.weights, models_cfg.alpha,
                       config.data.image_size, tuple(models_cfg.weights_dirs))

    def mode_features(mode: str) -> np.ndarray:
        return frozen_features(ModeImages(dataset, mode, config.probes.border_fraction), spec,
                               cache)

    return mode_features


def explanation_service(dataset: Dataset, models: dict[str, TrainedModel],
                        cache: StageCache) -> Callable[[str, np.ndarray], Explanations]:
    """``explanations`` for the probes: Grad-CAMs of ``models[key]`` for dataset rows
    (``models.gradcam.explain_rows``), one cached ``gradcam`` stage per model and rows.

    The stage key holds the model's identity, the rows and the data and masks keys (the
    cache adds the code), so the attention checks share one computation per model and a
    rerun reuses it.
    """
    def explanations(key: str, rows: np.ndarray) -> Explanations:
        model, rows = models[key], np.asarray(rows)
        stage_inputs = {"model": model.identity, "rows": rows, "data": dataset.data_key,
                        "masks": dataset.masks_key}

        def compute(folder: Path) -> None:
            from models.gradcam import explain_rows  # TensorFlow: only when computed

            explained = explain_rows(model, dataset, rows)
            np.savez(folder / "cams.npz", predicted_class=explained.predicted_class,
                     **explained.cams)

        def load(folder: Path) -> Explanations:
            with np.load(folder / "cams.npz") as stored:
                return Explanations(predicted_class=stored["predicted_class"],
                                    cams={target: stored[target] for target in CAM_TARGETS})

        return cache.run_and_load(CAM_STAGE, stage_inputs, compute, load)

    return explanations


def image_prediction_service(
    models: dict[str, TrainedModel], cache: StageCache,
) -> Callable[[str, np.ndarray, np.ndarray | None], np.ndarray]:
    """``predict_images`` for the probes: ``models[key]``'s class probabilities for images
    that are no dataset rows (``TrainedModel.predict_images``), one cached
    ``image_predictions`` stage per model and image content.

    The key holds the model's identity and content hashes of the images and masks (the
    cache adds the code): whatever a probe built them from, the same pixels reuse the
    stage.
    """
    def predict_images(key: str, images: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        model, images = models[key], np.ascontiguousarray(images)
        masks = None if masks is None else np.ascontiguousarray(masks)
        stage_inputs = {"model": model.identity, "images": hash_array(images),
                        "masks": None if masks is None else hash_array(masks)}

        def compute(folder: Path) -> None:
            np.save(folder / "probabilities.npy", model.predict_images(images, masks))

        return cache.run_and_load(IMAGE_PREDICTION_STAGE, stage_inputs, compute,
                                  lambda folder: np.load(folder / "probabilities.npy"))

    return predict_images


def run_checks(context: ProbeContext, enabled: Sequence[str], cache: StageCache,
               run_dir: Path) -> list[CheckResult]:
    """Every known check in registry order: enabled ones run (each a cached stage; a crash
    becomes ``error`` with its message), disabled ones are ``not_run`` saying so. Raw
    p-values only: the gate Holm-adjusts the family its policy gates. Nothing is logged
    per check: the CLI reports each one once, judged, with the verdict."""
    inputs = _probe_inputs(context)
    external = _external_data_checks()
    results = []
    for check_id in progress(check_ids(), desc="checks"):
        if check_id not in enabled:
            results.append(CheckResult.not_run(check_id, check_id,
                                               "disabled in the config (probes.checks)"))
            continue
        check_inputs = {**inputs, "check": check_id}
        if check_id in external:  # only these read them
            check_inputs["external"] = [data.data_key for data in context.external]
        results.append(_run_check(check_id, context, cache, check_inputs, run_dir))
    return results


def _probe_inputs(context: ProbeContext) -> dict[str, Any]:
    """What a probe's result depends on: data, masks, splits, models and probe settings."""
    dataset = context.dataset
    return {
        "data": dataset.data_key,
        "masks": dataset.masks_key,
        "splits": stable_hash([context.splits.train, context.splits.test,
                               [list(fold) for fold in context.splits.folds]]),
        "models": {key: model.identity for key, model in context.models.items()},
        "audited": context.audited,
        "retraining": context.train_variants is not None,
        "params": context.params.model_dump(mode="json", exclude={"checks"}),
    }


def _run_check(check_id: str, context: ProbeContext, cache: StageCache, inputs: dict[str, Any],
               run_dir: Path) -> CheckResult:
    def compute(folder: Path) -> None:
        result = _save_artifacts(get_check(check_id).run(context), folder)
        with atomic_write(folder / "result.json") as handle:
            json.dump(result.to_dict(), handle)

    def load(folder: Path) -> CheckResult:
        result = CheckResult.from_dict(json.loads((folder / "result.json").read_text()))
        # Into this run's folder, also when the stage was reused from another run.
        run_artifacts = run_dir / ARTIFACTS_DIR / check_id
        for saved in sorted(folder.glob("*.npz")):
            run_artifacts.mkdir(parents=True, exist_ok=True)
            shutil.copy2(saved, run_artifacts / saved.name)
        return result

    try:
        return cache.run_and_load("probe", inputs, compute, load)
    except Exception as error:  # one broken probe must not lose the run
        log.error("%s crashed:\n%s", check_id, traceback.format_exc())
        return CheckResult(check_id=check_id, title=check_id, status=Status.ERROR,
                           reason=f"{type(error).__name__}: {error}",
                           summary=f"Crashed: {type(error).__name__}: {error}")


def _save_artifacts(result: CheckResult, folder: Path) -> CheckResult:
    """Save each of the result's artifacts as ``<name>.npz`` in the stage ``folder``; return
    the result without the arrays, each figure spec naming an artifact given its
    run-relative ``npz`` path (``artifacts/<check_id>/<name>.npz``), which the report reads."""
    for name, arrays in result.artifacts.items():
        if not _ARTIFACT_NAME.fullmatch(name):
            raise ValueError(f"{result.check_id}: artifact name {name!r} must be letters, "
                             "digits, '_' or '-' (it becomes the file name)")
        np.savez_compressed(folder / f"{name}.npz", **arrays)
    figures = {}
    for figure, spec in result.figures.items():
        if "artifact" in spec:
            if spec["artifact"] not in result.artifacts:
                raise ValueError(f"{result.check_id}: figure {figure!r} draws artifact "
                                 f"{spec['artifact']!r}; the result's artifacts are "
                                 f"{sorted(result.artifacts)}")
            spec = {**spec,
                    "npz": f"{ARTIFACTS_DIR}/{result.check_id}/{spec['artifact']}.npz"}
        figures[figure] = spec
    return replace(result, figures=figures, artifacts={})


def summarise_data(dataset: Dataset) -> dict[str, Any]:
    """Counts a reviewer needs: images, label x source table, masks, quarantined rows."""
    table = Counter(zip(dataset.manifest["label"], dataset.sources, strict=True))
    sources = sorted(set(dataset.sources))
    quarantined = dataset.quarantined
    return {
        "n_images": len(dataset),
        "image_size": dataset.image_size,
        "classes": list(dataset.classes),
        "sources": sources,
        "label_source_counts": {label: {source: table[(label, source)] for source in sources}
                                for label in dataset.classes},
        "mask_origin": dataset.mask_origin,
        "n_with_mask": int(dataset.has_mask.sum()) if dataset.has_mask is not None else 0,
        "n_quarantined": len(quarantined),
        "quarantined": quarantined.astype(str).to_dict(orient="records"),
        "manifest_hash": dataset.manifest_hash,
    }


def _model_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per trained (backbone, mode, seed) model, its folds folded in as ``cv``:
    ``{"folds": [metrics of each fold], "mean": models.metrics.fold_summary of them}``."""
    from models.metrics import fold_summary

    folds: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        if record["fold"] is not None:
            folds.setdefault((record["key"], record["seed"]), []).append(record["metrics"])
    models = []
    for record in records:
        if record["fold"] is None:
            fold_metrics = folds.get((record["key"], record["seed"]), [])
            entry = {k: v for k, v in record.items() if k not in ("events", "fold")}
            if fold_metrics:
                entry["cv"] = {"folds": fold_metrics, "mean": fold_summary(fold_metrics)}
            models.append(entry)
    return models


def _provenance(config: AuditConfig, dataset: Dataset, cache: StageCache,
                records: list[dict[str, Any]], started: float) -> dict[str, Any]:
    events = [event.__dict__ for event in cache.events]
    events += [event for record in records for event in record.get("events", [])]
    counts = Counter(event["action"] for event in events)
    by_stage: dict[str, dict[str, int]] = {}
    for event in events:
        by_stage.setdefault(event["stage"], {"reused": 0, "computed": 0})[event["action"]] += 1
    return {
        "config": config.model_dump(mode="json"),
        "versions": {"python": platform.python_version(), **_versions()},
        "data_hash": dataset.manifest_hash,
        "seeds": {"data": config.data.seed, "models": list(config.models.seeds),
                  "probes": config.probes.seed},
        "cache": str(cache.root),
        "stages": {"reused": counts["reused"], "computed": counts["computed"],
                   "by_stage": by_stage},
        "seconds": round(time.perf_counter() - started, 1),
    }


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _finish(result: AuditResult, policy: Any, name: str, out_dir: Path) -> AuditResult:
    from reports import write_reports

    judged = judge(result, policy, name)
    write_reports(judged, out_dir)
    return judged
