"""The U-Net lung segmenter: train on the manifest's masks, predict masks, report quality.

A masked-input comparison (``masking.raw_vs_lung``, ``attention.outside_lung``) is only as
good as its masks, so the segmenter reports its own held-out Dice and IoU, overall and per
source (sources follow different mask conventions: cohen includes the lung behind the
heart, shenzhen excludes it).

The network is ``segmentation_models``' U-Net (imported through ``models._sm``). It takes
grayscale images as float ``(n, S, S, 1)`` in the uint8 range 0..255; the model itself
replicates the channel to three and rescales to [-1, 1] (MobileNetV2's ImageNet
convention), so callers never preprocess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage, stats

from audit.errors import InputError, WeightsUnavailableError
from audit.progress import log
from audit.stages import StageCache, atomic_write, hash_array, stable_hash
from models._sm import import_segmentation_models

if TYPE_CHECKING:
    import keras

    from audit.config import AuditConfig, SegmentationConfig
    from audit.data.dataset import Dataset

WEIGHTS_FILE = "unet.weights.h5"
QUALITY_FILE = "quality.json"
MONITOR_FRACTION = 0.15  # share of training patients held back for early stopping


@dataclass
class SegmenterResult:
    """A trained U-Net and its held-out quality."""

    model: keras.Model
    quality: dict[str, Any]
    """``dice``/``iou`` (mean, ci_low, ci_high), ``per_source`` (same per source, plus
    ``n``), ``n_train``, ``n_val``, ``epochs_run``, ``image_size`` (the U-Net's side)."""
    val_rows: np.ndarray
    """Dataset positions of the held-out patients' rows the quality was measured on."""


# --------------------------------------------------------------------------- model


def build_unet(
    encoder: str = "mobilenetv2", encoder_weights: str = "none", image_size: int = 256
) -> keras.Model:
    """Build a U-Net that maps grayscale images to a lung probability map.

    Args:
        encoder: A ``segmentation_models`` backbone name. Defaults to "mobilenetv2".
        encoder_weights: "none" (random), "imagenet" (``segmentation_models``' own download,
            needs internet) or the path of a local Keras ``MobileNetV2(include_top=False)``
            weights file, copied into the encoder layer by layer. Defaults to "none".
        image_size: Side of the square input in pixels (a multiple of 32).
            Defaults to 256.

    Returns:
        A Keras model taking float ``(n, S, S, 1)`` in 0..255 and giving ``(n, S, S, 1)``
        sigmoid probabilities.

    Raises:
        WeightsUnavailableError: the ImageNet download failed or the weights file is unusable.
        ValueError: ``image_size`` is not a multiple of 32.
    """
    import keras

    if image_size % 32:
        raise ValueError(f"segmentation.image_size must be a multiple of 32, got {image_size}")
    unet = _sm_unet(encoder, encoder_weights, image_size)
    if encoder_weights not in ("none", "imagenet"):
        _copy_encoder_weights(unet, encoder, Path(encoder_weights), image_size)
    gray = keras.Input((image_size, image_size, 1), name="gray")
    rgb = keras.layers.Concatenate(name="gray_to_rgb")([gray, gray, gray])
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(rgb)
    return keras.Model(gray, unet(scaled), name=f"unet_{encoder}")


def _sm_unet(encoder: str, encoder_weights: str, image_size: int) -> keras.Model:
    sm = import_segmentation_models()
    kwargs = dict(input_shape=(image_size, image_size, 3), classes=1, activation="sigmoid")
    if encoder_weights != "imagenet":
        return sm.Unet(encoder, encoder_weights=None, **kwargs)
    try:
        return sm.Unet(encoder, encoder_weights="imagenet", **kwargs)
    except Exception as error:  # offline: "URL fetch failure" within a second
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: 'imagenet' weights for encoder {encoder!r} could "
            f"not be downloaded ({error}). Offline, set segmentation.encoder_weights to the "
            "path of a local Keras weights file, e.g. "
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 for "
            "encoder 'mobilenetv2', or to 'none'."
        ) from None


def _copy_encoder_weights(unet: keras.Model, encoder: str, path: Path, image_size: int) -> int:
    """Copy a local Keras MobileNetV2 weights file into the U-Net's encoder by layer name."""
    import keras

    if encoder != "mobilenetv2":
        raise InputError(
            f"segmentation.encoder_weights: a local weights file is supported for encoder "
            f"'mobilenetv2' only, got encoder {encoder!r} with file {path}"
        )
    if not path.is_file():
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: file {path} does not exist (expected a Keras "
            "MobileNetV2 include_top=False weights file, 'imagenet' or 'none')"
        )
    try:
        source = keras.applications.MobileNetV2(
            include_top=False, weights=str(path), input_shape=(image_size, image_size, 3)
        )
    except (OSError, ValueError) as error:
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: {path} is not a MobileNetV2 (alpha 1.0, "
            f"include_top=False) Keras weights file: {error}"
        ) from None
    targets = {layer.name: layer for layer in unet.layers}
    filled = 0
    for layer in source.layers:
        if layer.weights and layer.name in targets:
            targets[layer.name].set_weights(layer.get_weights())
            filled += 1
    expected = sum(1 for layer in source.layers if layer.weights)
    if filled != expected:
        raise WeightsUnavailableError(
            f"segmentation.encoder_weights: only {filled} of {expected} MobileNetV2 layers "
            f"of {path} matched the U-Net encoder by name"
        )
    log.info("U-Net encoder: copied %d layers from %s", filled, path)
    return filled


# --------------------------------------------------------------------------- training


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
    inputs = _unet_inputs(dataset, config)

    def compute(folder: Path) -> None:
        model, epochs_run = _fit(dataset, train_rows, config)
        quality = _quality(model, dataset, val_rows)
        quality.update(n_train=int(train_rows.size), epochs_run=epochs_run,
                       image_size=config.image_size, encoder=config.encoder,
                       encoder_weights=config.encoder_weights)
        _save(model, quality, folder)

    folder = _run_stage(cache, "unet", inputs, compute, out_dir)
    model = build_unet(config.encoder, "none", config.image_size)
    model.load_weights(folder / WEIGHTS_FILE)
    quality = _read_json(folder / QUALITY_FILE)
    log.info("U-Net held-out Dice %.3f (n=%d)", quality["dice"]["mean"], quality["n_val"])
    return SegmenterResult(model=model, quality=quality, val_rows=val_rows)


def _masked_rows(dataset: Dataset) -> np.ndarray:
    if dataset.masks is None or dataset.has_mask is None or not dataset.has_mask.any():
        raise InputError(
            "segmentation: the U-Net must be trained but no manifest row has a lung mask "
            "(expected a non-empty mask_path on some rows, got none); add masks or set "
            "segmentation.source to 'manifest'"
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


def _unet_inputs(dataset: Dataset, config: SegmentationConfig) -> dict[str, Any]:
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
    train = _augmented_batches(
        _resize(dataset.images[fit_rows], size), _resize(dataset.masks[fit_rows], size, True),
        config.batch_size, config.seed,
    )
    monitor = (_resize(dataset.images[monitor_rows], size)[..., None],
               _resize(dataset.masks[monitor_rows], size, True)[..., None])
    keras.utils.set_random_seed(config.seed)  # weight init; Keras has no per-model seed
    model = build_unet(config.encoder, config.encoder_weights, size)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=sm.losses.bce_dice_loss, metrics=[sm.metrics.f1_score],
                  jit_compile=False)  # XLA compiling the U-Net on CPU takes minutes
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                         restore_best_weights=True)
    history = model.fit(train, validation_data=monitor, epochs=config.epochs,
                        callbacks=[stop], verbose=2 if log.isEnabledFor(20) else 0)
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


def _resize(arrays: np.ndarray, size: int, binary: bool = False) -> np.ndarray:
    """Resize ``(n, H, W)`` arrays to ``(n, size, size)`` float32 (bilinear; masks re-thresholded)."""
    import tensorflow as tf

    arrays = np.asarray(arrays, dtype=np.float32)
    if arrays.shape[1] != size:
        arrays = tf.image.resize(arrays[..., None], (size, size)).numpy()[..., 0]
    return (arrays > 0.5).astype(np.float32) if binary else arrays


def _save(model: keras.Model, quality: dict[str, Any], folder: Path) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    model.save_weights(folder / WEIGHTS_FILE)
    with atomic_write(folder / QUALITY_FILE) as handle:
        json.dump(quality, handle, indent=2)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


def _run_stage(cache, stage, inputs, compute, out_dir: Path | None) -> Path:
    """Run ``compute`` through the cache (or into ``out_dir``/a temp folder without one)."""
    import shutil
    import tempfile

    if cache is not None:
        folder = cache.run(stage, inputs, compute)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"cxr-audit-{stage}-"))
        compute(folder)
    if out_dir is not None and Path(out_dir) != folder:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for item in folder.iterdir():
            shutil.copy2(item, Path(out_dir) / item.name)
    return folder


# --------------------------------------------------------------------------- quality


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of binary ``(n, S, S)`` masks (1.0 when both are empty)."""
    predicted = predicted.reshape(len(predicted), -1) > 0
    truth = truth.reshape(len(truth), -1) > 0
    overlap = (predicted & truth).sum(axis=1)
    total = predicted.sum(axis=1) + truth.sum(axis=1)
    union = total - overlap
    dice = np.where(total > 0, 2 * overlap / np.maximum(total, 1), 1.0)
    iou = np.where(union > 0, overlap / np.maximum(union, 1), 1.0)
    return dice, iou


def _summary(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean and percentile-bootstrap 95% CI (degenerate for fewer than 2 values)."""
    mean = float(np.mean(values))
    if values.size < 2 or np.ptp(values) == 0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean}
    boot = stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile",
                           rng=np.random.default_rng(seed))
    return {"mean": mean, "ci_low": float(boot.confidence_interval.low),
            "ci_high": float(boot.confidence_interval.high)}


def _quality(model: keras.Model, dataset: Dataset, rows: np.ndarray) -> dict[str, Any]:
    """Dice/IoU of post-processed predictions against the manifest masks, at the data's size."""
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


# --------------------------------------------------------------------------- prediction


def predict_masks(model: keras.Model, images_uint8: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Predict post-processed lung masks for grayscale images of any square size.

    Images are resized to the U-Net's side, the probability maps back to the images' side
    (bilinear), thresholded at 0.5 and cleaned with ``postprocess_mask``.

    Args:
        model: A model from ``build_unet``.
        images_uint8: ``(N, S, S)`` grayscale images.
        batch_size: Images per forward pass. Defaults to 8.

    Returns:
        ``(N, S, S)`` uint8 masks with values 0/1.
    """
    import tensorflow as tf

    images = np.asarray(images_uint8)
    side, unet_side = images.shape[1], model.input_shape[1]
    masks = np.zeros(images.shape, dtype=np.uint8)
    for start in range(0, len(images), batch_size):
        batch = _resize(images[start : start + batch_size], unet_side)[..., None]
        probability = model(batch, training=False)
        if unet_side != side:
            probability = tf.image.resize(probability, (side, side))
        binary = np.asarray(probability)[..., 0] > 0.5
        for offset, mask in enumerate(binary):
            masks[start + offset] = postprocess_mask(mask)
    return masks


def postprocess_mask(mask: np.ndarray) -> np.ndarray:
    """Keep the two largest connected components (the lungs) and fill their holes.

    Args:
        mask: ``(S, S)`` binary mask.

    Returns:
        ``(S, S)`` uint8 mask with values 0/1.
    """
    labelled, count = ndimage.label(mask > 0)
    if count == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    sizes = ndimage.sum_labels(np.ones(mask.shape), labelled, index=np.arange(1, count + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    return ndimage.binary_fill_holes(np.isin(labelled, keep)).astype(np.uint8)


def mask_quality_flags(masks: np.ndarray, min_fraction: float, max_fraction: float) -> list[str]:
    """One flag per mask: "" when plausible, else the reason (e.g. "lung area 3% < 8%").

    Args:
        masks: ``(N, S, S)`` binary masks.
        min_fraction: Lowest plausible lung share of the image.
        max_fraction: Highest plausible lung share of the image.

    Returns:
        A list of N strings.
    """
    fractions = np.asarray(masks).reshape(len(masks), -1).astype(bool).mean(axis=1)
    flags = []
    for fraction in fractions:
        if fraction < min_fraction:
            flags.append(f"lung area {fraction:.0%} < {min_fraction:.0%}")
        elif fraction > max_fraction:
            flags.append(f"lung area {fraction:.0%} > {max_fraction:.0%}")
        else:
            flags.append("")
    return flags


# --------------------------------------------------------------------------- datasets


def segment_dataset(
    dataset: Dataset,
    config: SegmentationConfig,
    cache: StageCache | None,
    out_dir: Path | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Fill the dataset's lung masks as ``config.source`` says.

    - "manifest": keep the manifest's masks; rows without one stay maskless (reported).
    - "unet": U-Net masks for every row (trained on the manifest's masks).
    - "auto": manifest masks where present, U-Net masks elsewhere; the U-Net is trained
      only if some row lacks a mask.

    Args:
        dataset: The decoded data.
        config: The ``segmentation`` section.
        cache: Stage cache for the trained U-Net and its predicted masks (None: no reuse).
        out_dir: Passed to ``train_unet`` (weights and quality copied there). Defaults to None.

    Returns:
        The dataset with ``masks``/``has_mask``/``mask_origin`` set, and a report:
        ``source``, ``origin``, ``quality`` (U-Net held-out quality or None),
        ``row_origin`` counts, ``predicted_rows``, ``rows_without_mask``, ``flags``.

    Raises:
        InputError: the U-Net is needed but no row has a mask.
    """
    has_mask = _has_mask(dataset)
    if config.source == "unet":
        predict = np.ones(len(dataset), dtype=bool)
    elif config.source == "auto":
        predict = ~has_mask
    else:
        predict = np.zeros(len(dataset), dtype=bool)
    masks = (np.zeros(dataset.images.shape, dtype=np.uint8) if dataset.masks is None
             else np.array(dataset.masks, dtype=np.uint8))
    quality = None
    if predict.any():
        segmenter = train_unet(dataset, config, cache, out_dir)
        quality = segmenter.quality
        masks[predict] = _cached_predictions(segmenter.model, dataset, predict, config, cache)
    row_origin = np.where(predict, "unet", np.where(has_mask, "manifest", "none"))
    present = row_origin != "none"
    segmented = dataset.with_masks(masks, present, _origin_name(row_origin))
    return segmented, _report(segmented, config, quality, row_origin)


def _has_mask(dataset: Dataset) -> np.ndarray:
    if dataset.masks is None or dataset.has_mask is None:
        return np.zeros(len(dataset), dtype=bool)
    return np.asarray(dataset.has_mask, dtype=bool)


def _origin_name(row_origin: np.ndarray) -> str:
    """"manifest", "unet", "manifest+unet" (auto with both) or "none"."""
    kinds = [kind for kind in ("manifest", "unet") if (row_origin == kind).any()]
    return "+".join(kinds) or "none"


def _cached_predictions(model, dataset, rows: np.ndarray, config, cache) -> np.ndarray:
    """U-Net masks for the ``rows`` (bool) of ``dataset``, as a stage when ``cache`` is given."""
    if cache is None:
        return predict_masks(model, dataset.images[rows], config.batch_size)
    inputs = {"unet": _unet_inputs(dataset, config), "rows": np.flatnonzero(rows).tolist(),
              "size": dataset.image_size}

    def compute(folder: Path) -> None:
        np.save(folder / "masks.npy", predict_masks(model, dataset.images[rows], config.batch_size))

    return np.load(cache.run("unet_masks", inputs, compute) / "masks.npy")


def _report(dataset: Dataset, config: SegmentationConfig, quality, row_origin) -> dict[str, Any]:
    present = np.flatnonzero(row_origin != "none")
    flags = mask_quality_flags(dataset.masks[present], config.min_lung_fraction,
                               config.max_lung_fraction)
    paths = dataset.manifest["path"].astype(str).to_numpy()
    flagged = [{"row": int(row), "path": str(paths[row]), "flag": flag}
               for row, flag in zip(present, flags, strict=True) if flag]
    missing = np.flatnonzero(row_origin == "none")
    if missing.size:
        log.warning("segmentation: %d rows have no lung mask (source %r)", missing.size,
                    config.source)
    origins, counts = np.unique(row_origin, return_counts=True)
    return {
        "source": config.source,
        "origin": dataset.mask_origin,
        "quality": quality,
        "row_origin": {str(o): int(c) for o, c in zip(origins, counts, strict=True)},
        "predicted_rows": np.flatnonzero(row_origin == "unet").tolist(),
        "rows_without_mask": [
            {"row": int(row), "path": str(paths[row]),
             "reason": f"no mask in the manifest and segmentation.source is {config.source!r}"}
            for row in missing
        ],
        "flags": {"n_checked": int(present.size), "n_flagged": len(flagged), "rows": flagged},
    }


def segment_manifest(
    manifest_path: str | Path, out_dir: str | Path, config: AuditConfig | SegmentationConfig
) -> Path:
    """``cxr-audit segment``: write a lung mask for every image of a manifest.

    Images are decoded at ``config.data.image_size`` (through the image store in
    ``config.runtime.cache_dir``, default ``<out_dir>/cache``) and segmented as
    ``config.segmentation`` says. Writes under ``out_dir``: ``masks/<row>_<name>.png``
    (0/255), ``manifest.csv`` (the manifest with ``mask_path`` pointing to them and a
    ``mask_from`` column: manifest/unet/none), ``mask_quality.csv`` (lung area fraction
    and flag per row), ``segmentation.json`` (the report) and ``quarantined.csv``
    (rows that could not be used, with reasons).

    Args:
        manifest_path: CSV/Parquet manifest.
        out_dir: Output folder (created; files in it are overwritten).
        config: The whole audit config (its data, segmentation and runtime sections are
            used), or only the segmentation section (default data and runtime settings).

    Returns:
        The path of the written ``manifest.csv``.
    """
    import json

    import pandas as pd
    from PIL import Image

    from audit.config import AuditConfig, SegmentationConfig
    from audit.data.images import load_dataset

    if isinstance(config, SegmentationConfig):
        config = AuditConfig(segmentation=config)
    out_dir = Path(out_dir)
    cache = StageCache(config.runtime.cache_dir or out_dir / "cache")
    dataset = load_dataset(manifest_path, config.data.image_size, cache, config.data.label_map)
    segmented, report = segment_dataset(dataset, config.segmentation, cache, out_dir / "unet")
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    manifest = segmented.manifest.copy()
    row_origin = _row_origin(segmented, report)
    mask_paths = []
    for row, path in enumerate(manifest["path"].astype(str)):
        if row_origin[row] == "none":
            mask_paths.append("")
            continue
        target = out_dir / "masks" / f"{row:06d}_{Path(path).stem}.png"
        Image.fromarray(segmented.masks[row] * np.uint8(255)).save(target)
        mask_paths.append(str(target.resolve()))
    manifest["mask_path"], manifest["mask_from"] = mask_paths, row_origin
    flags = dict.fromkeys(range(len(manifest)), "")
    flags.update({item["row"]: item["flag"] for item in report["flags"]["rows"]})
    quality = pd.DataFrame({
        "path": manifest["path"], "source": manifest["source"], "mask_from": row_origin,
        "lung_fraction": segmented.masks.reshape(len(manifest), -1).mean(axis=1).round(4),
        "flag": [flags[row] for row in range(len(manifest))],
    })
    with atomic_write(out_dir / "mask_quality.csv") as handle:
        quality.to_csv(handle, index=False)
    with atomic_write(out_dir / "quarantined.csv") as handle:
        segmented.quarantined.to_csv(handle, index=False)
    with atomic_write(out_dir / "segmentation.json") as handle:
        json.dump(report, handle, indent=2)
    with atomic_write(out_dir / "manifest.csv") as handle:
        manifest.to_csv(handle, index=False)
    log.info("segment: %d masks written to %s", sum(map(bool, mask_paths)), out_dir / "masks")
    return out_dir / "manifest.csv"


def _row_origin(dataset: Dataset, report: dict[str, Any]) -> np.ndarray:
    origin = np.where(dataset.has_mask, "manifest", "none").astype(object)
    origin[report["predicted_rows"]] = "unet"
    return origin
