"""The paper's experiments, driven by a config (``cxr-audit train CONFIG --out DIR``).

``run_training`` runs, in order:

1. **Cross-validation** of every backbone x input mode x seed with the config's settings
   (experiment 2 with Table 2 settings: per-backbone mean accuracy, per-class recall and
   summed confusion matrices over the folds). With ``models.cross_validate: false`` each
   model is trained once (first fold) and evaluated on the held-out test rows instead.
2. **Sweeps** (``models.sweep``, experiment 3): hyper-parameters examined one after the
   other, as in the paper (learning rate, then dropout, then unfreeze level): each value is
   cross-validated and the best mean validation accuracy fixes the value for the next step.
3. **Final train/test runs** (``models.final_sizes``): the best setting trained with each
   given number of images per class other than ``probes.target_class`` (which keeps all
   its rows; COVID in the paper) and evaluated on the test rows (the paper's 1000 vs
   2000). Sizes larger than the data allows are scaled down proportionally and the row
   says so in ``note``.

Every trained model is saved under ``out_dir/models/...`` with its metadata JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.core.cache import StageCache
from audit.core.progress import log
from models.metrics import classification_metrics
from models.train import ClassifierSpec, cross_validate, spec_from_config, train_classifier

if TYPE_CHECKING:
    from audit.core.config import AuditConfig
    from audit.data.dataset import Dataset, Splits

_INTEGER_PARAMS = ("unfreeze_blocks",)


def subsample_per_class(dataset: Dataset, idx: np.ndarray, sizes_per_class: dict[str, int],
                        seed: int) -> np.ndarray:
    """At most ``sizes_per_class[c]`` rows of each listed class ``c`` from ``idx``.

    Classes not listed keep all their rows. Rows are drawn without replacement by
    ``np.random.default_rng(seed)``; the result is sorted.

    Raises:
        ValueError: a listed class is not one of the dataset's classes.
    """
    idx = np.asarray(idx, dtype=np.int64)
    unknown = sorted(set(sizes_per_class) - set(dataset.classes))
    if unknown:
        raise ValueError(f"sizes_per_class: unknown class(es) {unknown}; expected some of "
                         f"{', '.join(dataset.classes)}")
    rng = np.random.default_rng(seed)
    labels = dataset.labels[idx]
    keep = []
    for k, name in enumerate(dataset.classes):
        rows = idx[labels == k]
        if name in sizes_per_class and len(rows) > sizes_per_class[name]:
            rows = rng.choice(rows, size=sizes_per_class[name], replace=False)
        keep.append(rows)
    return np.sort(np.concatenate(keep))


def scaled_class_sizes(dataset: Dataset, idx: np.ndarray, sizes: list[int],
                       fixed: str) -> tuple[list[int], str | None]:
    """Sizes per grown class (every class ``idx`` holds but ``fixed``), scaled down
    together when the data has fewer rows.

    The largest size is made to fit the smallest grown class among ``idx``; the others
    keep their ratio to it. A class the data holds no row of is not grown (on two-class
    data it would otherwise scale every size to nothing). Returns the sizes used and a
    note when they were scaled.
    """
    labels = dataset.labels[np.asarray(idx)]
    counts = [count for k, name in enumerate(dataset.classes)
              if name != fixed and (count := int(np.sum(labels == k)))]
    available = min(counts, default=max(sizes))
    if max(sizes) <= available:
        return list(sizes), None
    factor = available / max(sizes)
    scaled = [max(1, int(round(size * factor))) for size in sizes]
    note = (f"sizes per class other than {fixed} {list(sizes)} scaled to {scaled}: the "
            f"smallest of them has {available} training images")
    log.warning(note)
    return scaled, note


def _row(experiment: str, spec: ClassifierSpec, **fields: Any) -> dict[str, Any]:
    return {"experiment": experiment, "key": f"{spec.backbone}/{spec.input_mode}",
            "backbone": spec.backbone, "input_mode": spec.input_mode, "seed": spec.seed,
            "training_path": spec.path, **fields}


def _model_dir(out_dir: Path, *parts: Any) -> Path:
    return Path(out_dir) / "models" / "-".join(str(part) for part in parts)


def _cv_row(experiment: str, dataset: Dataset, splits: Splits, spec: ClassifierSpec,
            out_dir: Path, cache: StageCache | None, **fields: Any) -> dict[str, Any]:
    folder = _model_dir(out_dir, experiment, spec.backbone, spec.input_mode, f"s{spec.seed}",
                        *(f"{k}{v}" for k, v in fields.items()))
    result = cross_validate(dataset, splits, spec, cache, folder)
    log.info("%s %s/%s %s: mean CV accuracy %.3f", experiment, spec.backbone, spec.input_mode,
             fields or "", result["mean"]["accuracy"])
    return _row(experiment, spec, **fields, cv=result, accuracy=result["mean"]["accuracy"])


def _test_row(experiment: str, dataset: Dataset, splits: Splits, spec: ClassifierSpec,
              train_idx: np.ndarray, out_dir: Path, cache: StageCache | None,
              **fields: Any) -> dict[str, Any]:
    folder = _model_dir(out_dir, experiment, spec.backbone, spec.input_mode, f"s{spec.seed}",
                        *(f"{k}{v}" for k, v in fields.items() if k != "note"))
    trained = train_classifier(dataset, train_idx, splits.val, spec, cache, folder)
    metrics = classification_metrics(dataset.labels[splits.test],
                                     trained.predict_proba(dataset, splits.test),
                                     dataset.classes, seed=spec.seed)
    return _row(experiment, spec, **fields, metrics=metrics, accuracy=metrics["accuracy"],
                best_epoch=trained.metadata["best_epoch"],
                weights_origin=trained.metadata["weights_origin"], path=str(folder))


def _sweep(config: AuditConfig, dataset: Dataset, splits: Splits, spec: ClassifierSpec,
           out_dir: Path, cache: StageCache | None) -> tuple[list[dict], ClassifierSpec]:
    """Examine each sweep parameter in turn, keeping the best value for the next ones."""
    rows = []
    for step in config.models.sweep:
        cast = int if step.param in _INTEGER_PARAMS else float
        results = []
        for value in step.values:
            candidate = spec.with_settings(**{step.param: cast(value)})
            results.append((_cv_row("sweep", dataset, splits, candidate, out_dir, cache,
                                    param=step.param, value=cast(value)), candidate))
        best_row, spec = max(results, key=lambda pair: pair[0]["accuracy"])
        for row, _ in results:
            row["best"] = row is best_row
        rows += [row for row, _ in results]
    return rows, spec


def run_training(config: AuditConfig, dataset: Dataset, splits: Splits, out_dir: Path,
                 cache: StageCache | None) -> list[dict[str, Any]]:
    """Run the config's experiments (see the module docstring); one row per result.

    Rows carry ``experiment`` ("cv", "test", "sweep" or "final"), ``key``, ``backbone``,
    ``input_mode``, ``seed``, ``training_path``, ``accuracy`` and either ``cv`` (the
    ``cross_validate`` summary) or ``metrics`` (test-set metrics with CIs).
    """
    models = config.models
    rows = []
    for backbone in models.backbones:
        for mode in models.input_modes:
            for seed in models.seeds:
                spec = spec_from_config(config, backbone, mode, seed)
                if models.cross_validate:
                    rows.append(_cv_row("cv", dataset, splits, spec, out_dir, cache))
                else:
                    rows.append(_test_row("test", dataset, splits, spec, splits.fit,
                                          out_dir, cache))
                sweep_rows, best = _sweep(config, dataset, splits, spec, out_dir, cache)
                rows += sweep_rows
                rows += _final_rows(dataset, splits, best, models.final_sizes,
                                    config.probes.target_class, out_dir, cache)
    return rows


def _final_rows(dataset: Dataset, splits: Splits, spec: ClassifierSpec, sizes: list[int],
                fixed: str, out_dir: Path, cache: StageCache | None) -> list[dict[str, Any]]:
    """The paper's final models: ``fixed`` (``probes.target_class``, COVID in the paper)
    at its full size, every other class at each size."""
    if not sizes:
        return []
    used, note = scaled_class_sizes(dataset, splits.fit, sizes, fixed)
    rows = []
    for requested, size in zip(sizes, used, strict=True):
        per_class = {name: size for name in dataset.classes if name != fixed}
        train_idx = subsample_per_class(dataset, splits.fit, per_class, spec.seed)
        rows.append(_test_row("final", dataset, splits, spec, train_idx, out_dir, cache,
                              size=size, requested_size=requested, note=note,
                              n_train=len(train_idx)))
    return rows
