"""Training the U-Net on the manifest's masks, and its held-out quality.

A masked-input comparison is only as good as its masks, so training ends by measuring
Dice and IoU on held-out patients, overall and per source (sources follow different mask
conventions: cohen includes the lung behind the heart, shenzhen excludes it).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from audit.core.cache import MANIFEST_FILE, StageCache, hash_array, stable_hash
from audit.core.errors import InputError
from audit.core.io import atomic_write
from audit.core.progress import log
from models._sm import import_segmentation_models
from models.unet import build_unet, dice_iou, predict_masks, resize_batch

if TYPE_CHECKING:
    import keras

    from audit.core.config import SegmentationConfig
    from audit.data.dataset import Dataset

WEIGHTS_FILE = "unet.weights.h5"
QUALITY_FILE = "quality.json"
MONITOR_FRACTION = 0.15  # share of training patients held back for early stopping
POOR_DICE = 0.7  # held-out Dice below this gets a warning: masks this poor mislead every probe


@dataclass
class SegmenterResult:
    """A trained U-Net and its held-out quality."""

    model: keras.Model
    quality: dict[str, Any]
    """``dice``/``iou`` (mean, ci_low, ci_high), ``per_source`` (same per source, plus
    ``n``), ``n_train``, ``n_val``, ``epochs_run``, ``image_size`` (the U-Net's side)."""
    val_rows: np.ndarray
    """Dataset positions of the held-out patients' rows the quality was measured on."""



def train_unet(
    dataset: Dataset,
    config: SegmentationConfig,
    cache: StageCache | None = None,
    out_dir: Path | None = None,
) -> SegmenterResult:
    """Train the U-Net on the rows that have a mask and measure it on held-out patients.

    Patients (``dataset.groups``) are split with ``GroupShuffleSplit`` (seed
    ``config.seed``) into training and held-out rows; a further share of the training
    patients drives early stopping, so the held-out quality is not tuned on. With a
    ``cache`` the trained weights and quality are a stage keyed by the config and the
    data, and a rerun reuses them.

    Args:
        dataset: Rows with ``has_mask`` are used; others are ignored here.
        config: The ``segmentation`` section.
        cache: Stage cache. Defaults to None (train in memory every time).
        out_dir: If given, the weights and ``quality.json`` are also written there.
            Defaults to None.

    Returns:
        The model, its held-out quality and the held-out row positions.

    Raises:
        InputError: no row, or too few patients, have a mask.
    """
    rows = _masked_rows(dataset)
    train_rows, val_rows = _group_split(dataset.groups, rows, config.val_fraction, config.seed)
    inputs = unet_stage_inputs(dataset, config)

    def compute(folder: Path) -> None:
        model, epochs_run = _fit(dataset, train_rows, config)
        quality = held_out_quality(model, dataset, val_rows)
        quality.update(n_train=int(train_rows.size), epochs_run=epochs_run,
                       image_size=config.image_size, encoder=config.encoder,
                       encoder_weights=config.encoder_weights)
        _save(model, quality, folder)

    def load(folder: Path) -> tuple[keras.Model, dict[str, Any]]:
        model = build_unet(config.encoder, "none", config.image_size, config.decoder_filters)
        model.load_weights(folder / WEIGHTS_FILE)
        return model, _read_json(folder / QUALITY_FILE)

    model, quality = _run_stage(cache, "unet", inputs, compute, load, out_dir)
    dice = quality["dice"]["mean"]
    log.info("U-Net held-out Dice %.3f (n=%d)", dice, quality["n_val"])
    if dice < POOR_DICE:
        log.warning("U-Net held-out Dice %.3f is below %.2f: its masks are unreliable and so "
                    "is every lung-masked result built on them. Use ImageNet encoder weights "
                    "(segmentation.encoder_weights) or more epochs.", dice, POOR_DICE)
    return SegmenterResult(model=model, quality=quality, val_rows=val_rows)


def _masked_rows(dataset: Dataset) -> np.ndarray:
    if dataset.masks is None or dataset.has_mask is None or not dataset.has_mask.any():
        raise InputError(
            "segmentation: the U-Net must be trained but no manifest row has a lung mask "
            "(expected a non-empty mask_path on some rows, got none); add masks or set "
            "segmentation.source to 'pretrained' (the shipped segmenter) or 'manifest'"
        )
    return np.flatnonzero(dataset.has_mask)


def _group_split(
    groups: np.ndarray, rows: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (train, held-out) positions with no patient in both."""
    from sklearn.model_selection import GroupShuffleSplit

    n_patients = np.unique(groups[rows]).size
    if n_patients < 2:
        raise InputError(
            f"segmentation: a patient-grouped split needs masks from at least 2 patients, "
            f"got {n_patients}"
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train, held_out = next(splitter.split(rows, groups=groups[rows]))
    return rows[train], rows[held_out]


def unet_stage_inputs(dataset: Dataset, config: SegmentationConfig) -> dict[str, Any]:
    """Stage inputs of a trained U-Net: the config fields that change the network (not
    ``source`` or the flag limits) and the data's identity."""
    unused = {"source", "min_lung_fraction", "max_lung_fraction"}
    trained_by = {k: v for k, v in config.model_dump(mode="json").items() if k not in unused}
    data = dataset.manifest_hash or stable_hash(
        [hash_array(dataset.images), hash_array(dataset.masks), hash_array(dataset.has_mask)])
    return {"config": trained_by, "data": data}


def _fit(dataset: Dataset, rows: np.ndarray, config: SegmentationConfig) -> tuple[Any, int]:
    import keras

    sm = import_segmentation_models()
    fit_rows, monitor_rows = _group_split(dataset.groups, rows, MONITOR_FRACTION, config.seed)
    size = config.image_size
    train = _augmented_batches(resize_batch(dataset.images[fit_rows], size),
                               resize_batch(dataset.masks[fit_rows], size, binary=True),
                               config.batch_size, config.seed)
    monitor = (resize_batch(dataset.images[monitor_rows], size)[..., None],
               resize_batch(dataset.masks[monitor_rows], size, binary=True)[..., None])
    keras.utils.set_random_seed(config.seed)  # the encoder's random init, when it has one
    model = build_unet(config.encoder, config.encoder_weights, size, config.decoder_filters)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=sm.losses.bce_dice_loss, metrics=[sm.metrics.f1_score],
                  jit_compile=False)  # XLA compiling the U-Net on CPU takes minutes
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                         restore_best_weights=True)
    history = model.fit(train, validation_data=monitor, epochs=config.epochs,
                        callbacks=[stop], verbose=2 if log.isEnabledFor(logging.INFO) else 0)
    return model, len(history.history["loss"])


def _augmented_batches(images: np.ndarray, masks: np.ndarray, batch_size: int, seed: int):
    """A shuffled, repeated-per-epoch tf.data stream with small joint shifts and rotations
    (same transform for image and mask) and brightness/contrast jitter on the image."""
    import keras
    import tensorflow as tf

    geometry = keras.Sequential([
        keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed),  # ~10 degrees
        keras.layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomZoom(0.08, fill_mode="constant", seed=seed + 2),
    ])
    intensity = keras.Sequential([
        keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 3),
        keras.layers.RandomContrast(0.2, seed=seed + 4),
    ])

    def augment(image, mask):
        stacked = geometry(tf.stack([image, mask * 255.0], axis=-1), training=True)
        image = tf.clip_by_value(intensity(stacked[..., :1], training=True), 0.0, 255.0)
        return image, tf.cast(stacked[..., 1:] > 127.5, tf.float32)

    data = tf.data.Dataset.from_tensor_slices((images, masks.astype(np.float32)))
    return (data.shuffle(len(images), seed=seed).batch(batch_size)
            .map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))




def _save(model: keras.Model, quality: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_weights(folder / WEIGHTS_FILE)
    with atomic_write(folder / QUALITY_FILE) as handle:
        json.dump(quality, handle, indent=2)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _run_stage(cache, stage, inputs, compute, load, out_dir: Path | None) -> Any:
    """``load`` of ``compute``'s folder, through the cache (which recomputes a stage that
    does not load) or, without one, a temporary folder; the folder's files are also copied
    into ``out_dir``."""
    if cache is not None:
        folder, loaded = cache.run_and_load(stage, inputs, compute,
                                            lambda folder: (folder, load(folder)))
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"cxr-audit-{stage}-"))
        compute(folder)
        loaded = load(folder)
    if out_dir is not None and Path(out_dir) != folder:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for item in folder.iterdir():
            if item.name != MANIFEST_FILE:  # the cache's, about the cache's copy
                shutil.copy2(item, Path(out_dir) / item.name)
    return loaded


def _summary(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean and percentile-bootstrap 95% CI (degenerate for fewer than 2 values)."""
    mean = float(np.mean(values))
    if values.size < 2 or np.ptp(values) == 0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean}
    boot = stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile",
                           rng=np.random.default_rng(seed))
    return {"mean": mean, "ci_low": float(boot.confidence_interval.low),
            "ci_high": float(boot.confidence_interval.high)}


def held_out_quality(model: keras.Model, dataset: Dataset, rows: np.ndarray) -> dict[str, Any]:
    """Dice/IoU of post-processed predictions against the manifest masks of ``rows``, at
    the data's size: mean and bootstrap 95% CI, overall and per source."""
    predicted = predict_masks(model, dataset.images[rows])
    dice, iou = dice_iou(predicted, dataset.masks[rows])
    sources = dataset.sources[rows]
    per_source = {
        source: {"n": int((sources == source).sum()),
                 "dice": _summary(dice[sources == source]),
                 "iou": _summary(iou[sources == source])}
        for source in sorted(set(sources))
    }
    return {"dice": _summary(dice), "iou": _summary(iou), "per_source": per_source,
            "n_val": int(rows.size), "measured_at": int(dataset.image_size)}

