"""The audit's grid jobs and the data preparation they share with the main process.

A training job is a module-level function of one small JSON-able payload, so any runner
backend (``audit.runners``: in-process, worker processes, Ray) can execute it. Big arrays
never travel in a payload: a job rebuilds the dataset from the config through the same
cached stages the main process used (decoded images, U-Net masks: all reused), trains
through the models layer into the stage cache and returns small metadata. The main
process then loads the trained models from that cache.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from audit.core.cache import StageCache, hash_array
from audit.core.config import AuditConfig
from audit.core.io import atomic_write
from audit.core.progress import log
from audit.data.dataset import Dataset, Splits

JOB_RESULT_FILE = "result.json"


def load_data(config: AuditConfig, cache: StageCache) -> Dataset:
    """The config's images through the image store: the manifest's, or synthetic phantoms
    rendered once as PNGs into a cache stage (so every job reopens them in a moment and
    the run's images stay inspectable)."""
    from audit.data.images import load_dataset

    manifest = config.data.manifest
    if manifest is None:
        from audit.data.phantoms import generate_phantoms

        synth = config.data.synth
        folder = cache.run("phantoms", synth, lambda tmp: generate_phantoms(synth, tmp))
        manifest = folder / "manifest.csv"
    return load_dataset(manifest, config.data.image_size, cache, dict(config.data.label_map))


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


def classifier_spec(config: AuditConfig, backbone: str, input_mode: str, seed: int) -> Any:
    """The models layer's spec for one classifier of this run."""
    from models.train import spec_from_config

    return spec_from_config(config.models, backbone, input_mode, config.data.image_size,
                            seed, config.probes.border_fraction)


def training_payload(config: AuditConfig, cache_root: Path, backbone: str, input_mode: str,
                     seed: int, fold: int | None, out_dir: Path | None) -> dict[str, Any]:
    """One job of the grid. ``fold`` None trains the run's model (first fold's fit/val rows)
    and evaluates it on the test rows; fold ``k`` trains and evaluates cross-validation
    fold ``k``."""
    return {"config": config.model_dump(mode="json"), "cache": str(cache_root),
            "backbone": backbone, "input_mode": input_mode, "seed": seed, "fold": fold,
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

    Returns:
        ``key``, ``backbone``, ``input_mode``, ``seed``, ``fold``, ``path`` (the trained
        model's folder), ``weights_origin``, ``training_path``, ``best_epoch``, ``metrics``
        (on the evaluation rows) and ``events`` (this job's stage events, so the main
        process can report what was reused and computed).
    """
    from models.train import classifier_stage_inputs

    config = AuditConfig.model_validate(payload["config"])
    cache = StageCache(payload["cache"])
    dataset, _ = prepare_data(config, cache)
    train, val, evaluate = fold_rows(split_data(config, dataset), payload["fold"])
    spec = classifier_spec(config, payload["backbone"], payload["input_mode"], payload["seed"])
    inputs = {"classifier": classifier_stage_inputs(dataset, train, val, spec, cache),
              "evaluate": hash_array(evaluate), "n_bootstrap": config.probes.n_bootstrap}

    def compute(tmp: Path) -> None:
        record = _train_and_evaluate(config, cache, dataset, (train, val, evaluate), spec,
                                     payload)
        with atomic_write(tmp / JOB_RESULT_FILE) as handle:
            json.dump(record, handle, indent=1)

    folder = cache.run("grid_job", inputs, compute)
    record = json.loads((folder / JOB_RESULT_FILE).read_text())
    if payload["out_dir"]:
        # The stage folder already holds model.keras + metadata.json: copy, do not re-save.
        shutil.copytree(record["path"], payload["out_dir"], dirs_exist_ok=True)
        record["path"] = payload["out_dir"]
    return {**record, "events": [asdict(event) for event in cache.events]}


def _train_and_evaluate(config: AuditConfig, cache: StageCache, dataset: Dataset,
                        rows: tuple[np.ndarray, np.ndarray, np.ndarray], spec: Any,
                        payload: dict[str, Any]) -> dict[str, Any]:
    from models.metrics import classification_metrics
    from models.train import train_classifier

    train, val, evaluate = rows
    model = train_classifier(dataset, train, val, spec, cache=cache)
    metrics = classification_metrics(dataset.labels[evaluate],
                                     model.predict_proba(dataset, evaluate), dataset.classes,
                                     n_bootstrap=config.probes.n_bootstrap, seed=payload["seed"])
    which = "test rows" if payload["fold"] is None else f"fold {payload['fold']}"
    log.info("%s seed %d: accuracy %.3f on %s", model.key, payload["seed"],
             metrics["accuracy"], which)
    return {"key": model.key, "backbone": model.backbone, "input_mode": model.input_mode,
            "seed": payload["seed"], "fold": payload["fold"], "path": str(model.path),
            "weights_origin": model.metadata.get("weights_origin"),
            "training_path": model.metadata.get("training_path"),
            "best_epoch": model.metadata.get("best_epoch"), "metrics": metrics}
