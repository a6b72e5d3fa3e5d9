"""The lung U-Net shipped with the package (``segmentation.source: pretrained``).

Two package-data files, read through ``importlib.resources`` so an installed copy works
without the repository:

- ``lung_unet.weights.npz``: the U-Net's weights in ``model.get_weights()`` order, stored
  as float16 (half the size of Keras' float32 ``.weights.h5``; the held-out Dice in the
  record was measured with these float16 weights, cast back to float32).
- ``lung_unet.json``: its training record: architecture (what ``build_unet`` needs),
  data, patient split, held-out Dice per source, and the licence note of the masks it
  learned from.

``benchmarks/train_lung_segmenter.py`` writes both (``save_pretrained_weights``,
``save_pretrained_record``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.core.cache import hash_file
from audit.core.errors import WeightsUnavailableError
from audit.core.io import atomic_write
from models.unet import build_unet

if TYPE_CHECKING:
    import keras

WEIGHTS_FILE = "lung_unet.weights.npz"
RECORD_FILE = "lung_unet.json"


def _package_file(name: str) -> Path:
    path = Path(str(resources.files(__name__) / name))
    if not path.is_file():
        raise WeightsUnavailableError(
            f"segmentation.source 'pretrained': the shipped segmenter file {name} is missing "
            f"from the installed package (expected {path}); reinstall the package or set "
            "segmentation.source to 'unet' or 'manifest'"
        )
    return path


def pretrained_record() -> dict[str, Any]:
    """The shipped segmenter's training record (``lung_unet.json``)."""
    return json.loads(_package_file(RECORD_FILE).read_text())


def pretrained_key() -> str:
    """Hash of the shipped weights file, for stage keys of masks it predicted."""
    return hash_file(_package_file(WEIGHTS_FILE))


def load_pretrained_unet() -> keras.Model:
    """Build the shipped U-Net and fill it with the shipped weights.

    Returns:
        A ``build_unet`` model (float ``(n, S, S, 1)`` in 0..255 in, probabilities out;
        ``S`` is the record's ``architecture.image_size``).

    Raises:
        WeightsUnavailableError: a shipped file is missing or does not fit the architecture.
    """
    return load_unet_weights(_package_file(WEIGHTS_FILE), pretrained_record()["architecture"])


def load_unet_weights(path: Path, architecture: dict[str, Any]) -> keras.Model:
    """A ``build_unet(**architecture)`` model with the float16 weights of ``path``.

    Raises:
        WeightsUnavailableError: the file's arrays do not fit the architecture.
    """
    model = build_unet(architecture["encoder"], "none", architecture["image_size"],
                       tuple(architecture["decoder_filters"]))
    with np.load(path) as stored:
        weights = [stored[f"arr_{index}"].astype(np.float32) for index in range(len(stored.files))]
    expected = [tuple(w.shape) for w in model.get_weights()]
    if [w.shape for w in weights] != expected:
        raise WeightsUnavailableError(
            f"{path}: {len(weights)} arrays that do not fit the U-Net {architecture} "
            f"(expected {len(expected)} arrays of its shapes)"
        )
    model.set_weights(weights)
    return model


def save_pretrained_weights(model: keras.Model, out_dir: Path) -> Path:
    """Write ``model``'s weights as float16 to ``out_dir/lung_unet.weights.npz``.

    Returns:
        The weights file's path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / WEIGHTS_FILE
    np.savez_compressed(path, *[w.astype(np.float16) for w in model.get_weights()])
    return path


def save_pretrained_record(record: dict[str, Any], out_dir: Path) -> Path:
    """Write the training record to ``out_dir/lung_unet.json``."""
    path = out_dir / RECORD_FILE
    with atomic_write(path) as handle:
        json.dump(record, handle, indent=2)
    return path
