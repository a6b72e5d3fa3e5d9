"""Lung masks for a dataset: from the manifest, a U-Net trained on its masks, the
segmenter shipped with the package (``models.pretrained``), or manifest + shipped (``auto``).

The public face of the segmenter: ``segment_dataset`` (used by the pipeline) and
``segment_manifest`` (``cxr-audit segment``). The network lives in ``models.unet`` and its
training in ``models.unet_training``; their public functions are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.core.cache import StageCache
from audit.core.io import atomic_write, write_csv
from audit.core.progress import log
from models.pretrained import load_pretrained_unet, pretrained_key, pretrained_record
from models.unet import build_unet, dice_iou, mask_quality_flags, postprocess_mask, predict_masks
from models.unet_training import SegmenterResult, train_unet, unet_stage_inputs

if TYPE_CHECKING:
    from audit.core.config import AuditConfig, SegmentationConfig
    from audit.data.dataset import Dataset

__all__ = [
    "SegmenterResult", "build_unet", "dice_iou", "mask_quality_flags", "postprocess_mask",
    "predict_masks", "segment_dataset", "segment_manifest", "train_unet",
]


def segment_dataset(
    dataset: Dataset,
    config: SegmentationConfig,
    cache: StageCache | None,
    out_dir: Path | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Fill the dataset's lung masks as ``config.source`` says.

    - "manifest": keep the manifest's masks; rows without one stay maskless (reported).
    - "unet": U-Net masks for every row (trained on the manifest's masks).
    - "pretrained": masks of the segmenter shipped with the package for every row.
    - "auto": manifest masks where present, the shipped segmenter's elsewhere (so a data
      set without any mask still gets masks; nothing is trained).

    Args:
        dataset: The decoded data.
        config: The ``segmentation`` section.
        cache: Stage cache for the trained U-Net and its predicted masks (None: no reuse).
        out_dir: Passed to ``train_unet`` (weights and quality copied there). Defaults to None.

    Returns:
        The dataset with ``masks``/``has_mask``/``mask_origin`` set, and a report:
        ``source``, ``origin``, ``quality`` (held-out quality of the segmenter that
        predicted masks, or None), ``row_origin`` counts, ``predicted_rows``,
        ``predicted_by`` ("unet", "pretrained" or None), ``rows_without_mask``, ``flags``.

    Raises:
        InputError: the U-Net is needed but no row has a mask.
        WeightsUnavailableError: the shipped segmenter's files are missing.
    """
    has_mask = _has_mask(dataset)
    if config.source in ("unet", "pretrained"):
        predict = np.ones(len(dataset), dtype=bool)
    elif config.source == "auto":
        predict = ~has_mask
    else:
        predict = np.zeros(len(dataset), dtype=bool)
    masks = (np.zeros(dataset.images.shape, dtype=np.uint8) if dataset.masks is None
             else np.array(dataset.masks, dtype=np.uint8))
    quality, predictor = None, None
    if predict.any() and config.source == "unet":
        predictor = "unet"
        segmenter = train_unet(dataset, config, cache, out_dir)
        quality = segmenter.quality
        masks[predict] = _cached_predictions(
            "unet_masks", {"unet": unet_stage_inputs(dataset, config)},
            lambda: segmenter.model, dataset, predict, config, cache)
    elif predict.any():
        predictor = "pretrained"
        quality = _pretrained_quality()
        masks[predict] = _cached_predictions(
            "pretrained_masks", {"weights": pretrained_key(), "data": dataset.data_key},
            load_pretrained_unet, dataset, predict, config, cache)
    row_origin = np.where(predict, predictor or "none", np.where(has_mask, "manifest", "none"))
    present = row_origin != "none"
    segmented = dataset.with_masks(masks, present, _origin_name(row_origin))
    return segmented, _report(segmented, config, quality, row_origin, predictor)


def _has_mask(dataset: Dataset) -> np.ndarray:
    if dataset.masks is None or dataset.has_mask is None:
        return np.zeros(len(dataset), dtype=bool)
    return np.asarray(dataset.has_mask, dtype=bool)


def _origin_name(row_origin: np.ndarray) -> str:
    """"manifest", "unet", "pretrained", "manifest+pretrained" (auto with both) or "none"."""
    kinds = [kind for kind in ("manifest", "unet", "pretrained") if (row_origin == kind).any()]
    return "+".join(kinds) or "none"


def _pretrained_quality() -> dict[str, Any]:
    """The shipped segmenter's held-out quality from its training record, saying where it
    was measured (not on this data set)."""
    record = pretrained_record()
    return {**record["held_out_quality"], "segmenter": "pretrained (shipped with the package)",
            "measured_on": "held-out patients of the set it was trained on "
                           f"({', '.join(record['data']['sources'])}), not this data set"}


def _cached_predictions(stage: str, key: dict[str, Any], model: Callable[[], Any],
                        dataset: Dataset, rows: np.ndarray, config: SegmentationConfig,
                        cache: StageCache | None) -> np.ndarray:
    """Masks for the ``rows`` (bool) of ``dataset``; with a ``cache`` a ``stage`` keyed by
    ``key`` (what made the model), the rows and the size. ``model`` gives the Keras model
    and is called only when the masks are computed (a reused stage loads no network)."""
    def predict() -> np.ndarray:
        return predict_masks(model(), dataset.images[rows], config.batch_size)

    if cache is None:
        return predict()
    inputs = {**key, "rows": np.flatnonzero(rows).tolist(), "size": dataset.image_size}

    def compute(folder: Path) -> None:
        np.save(folder / "masks.npy", predict())

    return cache.run_and_load(stage, inputs, compute, lambda folder: np.load(folder / "masks.npy"))


def _report(dataset: Dataset, config: SegmentationConfig, quality, row_origin,
            predictor: str | None) -> dict[str, Any]:
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
        "predicted_rows": np.flatnonzero(row_origin == predictor).tolist() if predictor else [],
        "predicted_by": predictor,
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
    ``mask_from`` column: manifest/unet/pretrained/none), ``mask_quality.csv`` (lung area fraction
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

    from audit.core.config import AuditConfig, SegmentationConfig
    from audit.data.images import load_dataset

    if isinstance(config, SegmentationConfig):
        config = AuditConfig(segmentation=config)
    out_dir = Path(out_dir)
    cache = StageCache(config.runtime.cache_dir or out_dir / "cache", verify=config.runtime.verify)
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
    write_csv(quality, out_dir / "mask_quality.csv")
    write_csv(segmented.quarantined, out_dir / "quarantined.csv")
    with atomic_write(out_dir / "segmentation.json") as handle:
        json.dump(report, handle, indent=2)
    write_csv(manifest, out_dir / "manifest.csv")
    log.info("segment: %d masks written to %s", sum(map(bool, mask_paths)), out_dir / "masks")
    return out_dir / "manifest.csv"


def _row_origin(dataset: Dataset, report: dict[str, Any]) -> np.ndarray:
    origin = np.where(dataset.has_mask, "manifest", "none").astype(object)
    origin[report["predicted_rows"]] = report["predicted_by"]
    return origin

