"""Save and load a ``TrainedModel``: ``model.keras`` plus ``metadata.json`` in one folder.

The metadata file holds the ``TrainedModel`` fields (backbone, input mode, layer names,
input size, ...) and the model's ``identity`` under ``"model"``, and the run metadata
(weights origin, training path, config hash, data manifest hash, split, seed, library
versions, metrics) under ``"metadata"``. Loading recomputes the identity from the loaded
weights and refuses a folder whose ``model.keras`` is not the model its metadata describes.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from audit.core.errors import InputError
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
    record = {"model": {name: getattr(model, name) for name in (*_FIELDS, "identity")},
              "metadata": model.metadata}
    record["model"]["classes"] = list(model.classes)
    with atomic_write(folder / METADATA_FILE) as handle:
        json.dump(record, handle, indent=1, default=str)
    return folder


def load_trained(folder: str | Path) -> TrainedModel:
    """Load a model saved by ``save_trained``.

    Raises:
        InputError: ``model.keras`` does not match the identity ``metadata.json`` records
            (one of the two files was replaced).
    """
    import keras

    folder = Path(folder)
    record = json.loads((folder / METADATA_FILE).read_text())
    fields = {name: record["model"][name] for name in _FIELDS}
    fields["classes"] = tuple(fields["classes"])
    keras_model = keras.models.load_model(folder / MODEL_FILE, compile=False)
    loaded = TrainedModel(keras_model=keras_model, metadata=record["metadata"], path=folder,
                          **fields)
    recorded = record["model"]["identity"]
    if loaded.identity != recorded:
        raise InputError(f"{folder / MODEL_FILE}: weights do not match {METADATA_FILE} "
                         f"(identity {recorded} recorded, {loaded.identity} loaded); "
                         "save the model again")
    return loaded
