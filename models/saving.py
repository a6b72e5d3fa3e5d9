"""Save and load a ``TrainedModel``: ``model.keras`` plus ``metadata.json`` in one folder.

The metadata file holds the ``TrainedModel`` fields (backbone, input mode, layer names,
input size, ...) under ``"model"`` and the run metadata (weights origin, training path,
config hash, data manifest hash, split, seed, library versions, metrics) under
``"metadata"``.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from audit.core.io import atomic_write
from models.trained import TrainedModel

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
_FIELDS = ("key", "backbone", "input_mode", "classes", "last_conv_layer", "embedding_layer",
           "border_fraction", "input_size", "channels")


def library_versions() -> dict[str, str]:
    """Versions of the installed libraries a trained model depends on."""
    found = {}
    for name in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "h5py"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue  # e.g. tensorflow-cpu installed instead of tensorflow
    return found


def save_trained(model: TrainedModel, folder: str | Path) -> Path:
    """Write ``model.keras`` and ``metadata.json`` into ``folder`` (created); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.keras_model.save(folder / MODEL_FILE)
    record = {"model": {name: getattr(model, name) for name in _FIELDS},
              "metadata": model.metadata}
    record["model"]["classes"] = list(model.classes)
    with atomic_write(folder / METADATA_FILE) as handle:
        json.dump(record, handle, indent=1, default=str)
    return folder


def load_trained(folder: str | Path) -> TrainedModel:
    """Load a model saved by ``save_trained``."""
    import keras

    folder = Path(folder)
    record = json.loads((folder / METADATA_FILE).read_text())
    fields = dict(record["model"])
    fields["classes"] = tuple(fields["classes"])
    keras_model = keras.models.load_model(folder / MODEL_FILE, compile=False)
    return TrainedModel(keras_model=keras_model, metadata=record["metadata"], path=folder,
                        **fields)
