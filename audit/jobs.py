"""The audit's grid jobs and the data preparation they share with the main process.

A training job is a module-level function of one small JSON-able payload, so any runner
backend (``audit.runners``: in-process, worker processes, Ray) can execute it. Big arrays
never travel in a payload: a job rebuilds the dataset from the config through the same
cached stages the main process used (decoded images, U-Net masks: all reused) and trains
through the models layer into the stage cache. Two jobs: ``train_job`` (one classifier of
the grid, evaluated) returns small metadata with the path of the trained model, which the
main process then loads; ``variant_job`` (one classifier a probe asked for) returns the
class probabilities of the rows the probe asked about, so the main process loads no model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.core.cache import MANIFEST_FILE, StageCache, hash_array
from audit.core.config import AuditConfig
from audit.core.errors import InputError
from audit.core.io import atomic_write
from audit.core.progress import log
from audit.data.dataset import Dataset, Splits

if TYPE_CHECKING:
    from models.train import VariantRequest

JOB_RESULT_FILE = "result.json"


def load_data(config: AuditConfig, cache: StageCache) -> Dataset:
    """The config's images through the image store: the manifest's, or synthetic phantoms
    rendered once as PNGs into a cache stage (so every job reopens them in a moment and
    the run's images stay inspectable)."""
    from audit.data.images import load_dataset

    return load_dataset(manifest_file(config, cache), config.data.image_size, cache,
                        dict(config.data.label_map))


def manifest_file(config: AuditConfig, cache: StageCache) -> Path:
    """The manifest the run reads: the config's, or the synthetic phantoms' (generated into
    their cache stage once)."""
    if config.data.manifest is not None:
        return Path(config.data.manifest)
    from audit.data.phantoms import generate_phantoms

    synth = config.data.synth
    folder = cache.run("phantoms", synth, lambda tmp: generate_phantoms(synth, tmp))
    return folder / "manifest.csv"


def prepare_data(config: AuditConfig, cache: StageCache,
                 masks_dir: Path | None = None) -> tuple[Dataset, dict[str, Any] | None]:
    """The dataset with its lung masks (manifest, U-Net or both) and the U-Net report.

    Args:
        config: The run's config (``data`` and ``segmentation`` sections matter).
        cache: The run's stage cache; decoded images and masks are stages in it.
        masks_dir: Where the U-Net's weights, quality and masks are also written.
            Defaults to None (cache only).
    """
    from models.segment import segment_dataset

    dataset = load_data(config, cache)
    return segment_dataset(dataset, config.segmentation, cache, out_dir=masks_dir)


def split_data(config: AuditConfig, dataset: Dataset) -> Splits:
    """The run's patient-grouped, label-stratified splits (deterministic by seed)."""
    from audit.data.splits import make_splits

    return make_splits(dataset, config.data.test_fraction, config.data.n_folds,
                       config.data.seed)


def training_payload(config: AuditConfig, cache_root: Path, splits: Splits, backbone: str,
                     input_mode: str, seed: int, fold: int | None,
                     out_dir: Path | None) -> dict[str, Any]:
    """One job of the grid. ``fold`` None trains the run's model (first fold's fit/val rows)
    and evaluates it on the test rows; fold ``k`` trains and evaluates cross-validation
    fold ``k``. The rows travel as lists of row numbers (a few kB), so a job does not
    split the data again (a grouped stratified split takes a quarter of a second)."""
    train, val, evaluate = fold_rows(splits, fold)
    return {"config": config.model_dump(mode="json"), "cache": str(cache_root),
            "backbone": backbone, "input_mode": input_mode, "seed": seed, "fold": fold,
            "rows": [rows.tolist() for rows in (train, val, evaluate)],
            "out_dir": str(out_dir) if out_dir is not None else None}


def fold_rows(splits: Splits, fold: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, evaluation) rows: the first fold plus test, or fold ``fold`` alone."""
    if fold is None:
        return splits.fit, splits.val, splits.test
    train, val = splits.folds[fold]
    return train, val, val


def train_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one classifier of the grid into the cache; return its small metadata.

    The job's result (metrics on its evaluation rows and the model's metadata) is a stage
    of its own, keyed on the classifier's stage inputs, the evaluation rows and the
    bootstrap settings: an unchanged rerun reads it back without loading the model or
    predicting again.

    The record stores the model's folder relative to the cache root, so the same cache
    resumes from any working directory; a record whose classifier stage no longer
    verifies (deleted, moved aside) is stale and recomputed, which trains that classifier
    again.

    Returns:
        ``key``, ``backbone``, ``input_mode``, ``seed``, ``fold``, ``path`` (the trained
        model's folder: ``out_dir`` when given, else in the cache), ``weights_origin``,
        ``training_path``, ``best_epoch``, ``metrics`` (on the evaluation rows) and
        ``events`` (this job's stage events, so the main process can report what was
        reused and computed).
    """
    from models.train import classifier_stage_inputs, spec_from_config

    config, cache, dataset = _job_data(payload)
    train, val, evaluate = (np.asarray(rows, dtype=int) for rows in payload["rows"])
    spec = spec_from_config(config, payload["backbone"], payload["input_mode"], payload["seed"])
    inputs = {"classifier": classifier_stage_inputs(dataset, train, val, spec, cache),
              "evaluate": hash_array(evaluate), "n_bootstrap": config.probes.n_bootstrap}

    def compute(tmp: Path) -> None:
        record = _train_and_evaluate(config, cache, dataset, (train, val, evaluate), spec,
                                     payload)
        with atomic_write(tmp / JOB_RESULT_FILE) as handle:
            json.dump(record, handle, indent=1)

    record = cache.run_and_load("grid_job", inputs, compute,
                                lambda folder: _read_record(cache, folder))
    model_folder = cache.root / record["path"]
    if payload["out_dir"]:
        # The stage folder already holds model.keras + metadata.json: copy, do not re-save.
        shutil.copytree(model_folder, payload["out_dir"], dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(MANIFEST_FILE))
        model_folder = Path(payload["out_dir"])
    return {**record, "path": str(model_folder),
            "events": [asdict(event) for event in cache.events]}


def _read_record(cache: StageCache, folder: Path) -> dict[str, Any]:
    """A grid job's stored record, whose classifier stage must still verify.

    Raises:
        InputError: the classifier stage the record names is missing or fails
            verification (the record is stale).
    """
    record = json.loads((folder / JOB_RESULT_FILE).read_text())
    problem = cache.problem(cache.root / record["path"])
    if problem is not None:
        raise InputError(f"{folder / JOB_RESULT_FILE}: stale, its classifier stage "
                         f"{record['path']}: {problem}")
    return record


def variant_payload(config: AuditConfig, cache_root: Path,
                    request: VariantRequest) -> dict[str, Any]:
    """The job training and scoring one ``models.train.VariantRequest`` of a probe. Its
    rows travel as lists of row numbers (a few kB): the images stay in the cache."""
    return {"config": config.model_dump(mode="json"), "cache": str(cache_root),
            "backbone": request.backbone or config.models.backbones[0],
            "input_mode": request.input_mode, "seed": request.seed,
            "train_rows": list(request.train_rows), "val_rows": list(request.val_rows),
            "score_rows": list(request.score_rows)}


def variant_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Train one classifier a probe asked for into the cache (reusing cached features) and
    score the probe's rows with it, here (``models.train.train_and_score``): the main
    process gets probabilities, not a model to load.

    Returns:
        ``proba`` (the score rows' class probabilities, ``(len(score_rows), n_classes)``
        nested lists in row order) and ``events`` (this job's stage events).
    """
    from models.train import spec_from_config, train_and_score

    config, cache, dataset = _job_data(payload)
    spec = spec_from_config(config, payload["backbone"], payload["input_mode"], payload["seed"])
    proba = train_and_score(dataset, payload["train_rows"], payload["val_rows"],
                            payload["score_rows"], spec, cache)
    return {"proba": proba.tolist(), "events": [asdict(event) for event in cache.events]}


def _job_data(payload: dict[str, Any]) -> tuple[AuditConfig, StageCache, Dataset]:
    """A job's config, its own handle on the shared cache, and the run's dataset rebuilt
    from that cache."""
    config = AuditConfig.model_validate(payload["config"])
    cache = StageCache(payload["cache"], verify=config.runtime.verify)
    dataset, _ = prepare_data(config, cache)
    return config, cache, dataset


def _train_and_evaluate(config: AuditConfig, cache: StageCache, dataset: Dataset,
                        rows: tuple[np.ndarray, np.ndarray, np.ndarray], spec: Any,
                        payload: dict[str, Any]) -> dict[str, Any]:
    from models.metrics import classification_metrics
    from models.train import attach_cached_rows, train_classifier

    train, val, evaluate = rows
    model = attach_cached_rows(train_classifier(dataset, train, val, spec, cache=cache),
                               dataset, spec, cache)
    metrics = classification_metrics(dataset.labels[evaluate],
                                     model.predict_proba(dataset, evaluate),
                                     dataset.classes,
                                     n_bootstrap=config.probes.n_bootstrap, seed=payload["seed"])
    which = "test rows" if payload["fold"] is None else f"fold {payload['fold']}"
    log.info("%s seed %d: accuracy %.3f on %s", model.key, payload["seed"],
             metrics["accuracy"], which)
    return {"key": model.key, "backbone": model.backbone, "input_mode": model.input_mode,
            "seed": payload["seed"], "fold": payload["fold"],
            "path": model.path.relative_to(cache.root).as_posix(),
            "weights_origin": model.metadata.get("weights_origin"),
            "training_path": model.metadata.get("training_path"),
            "best_epoch": model.metadata.get("best_epoch"), "metrics": metrics}
