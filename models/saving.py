"""Save and load a ``TrainedModel``: ``model.keras`` plus ``metadata.json`` in one folder.

The metadata file holds the ``TrainedModel`` fields (backbone, input mode, layer names,
input size, ...) and the model's ``identity`` under ``"model"``, and the run metadata
(weights origin, training path, config hash, data manifest hash, split, seed, library
versions, metrics) under ``"metadata"``, with ``model.keras``'s SHA-256. Loading refuses a
folder whose ``model.keras`` is not the file its metadata describes, and reads the network
only when it is first used (``models.trained``), checking then that its weights give the
recorded identity.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from audit.core.cache import SHA256_HEX, hash_file
from audit.core.errors import InputError
from audit.core.io import atomic_write
from models.trained import TrainedModel

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
FILE_HASH = "file_sha256"  # of ``MODEL_FILE``, in the metadata: a swapped file is refused unread
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
    record["model"][FILE_HASH] = hash_file(folder / MODEL_FILE, SHA256_HEX)
    record["model"]["classes"] = list(model.classes)
    with atomic_write(folder / METADATA_FILE) as handle:
        json.dump(record, handle, indent=1, default=str)
    return folder


def load_trained(folder: str | Path) -> TrainedModel:
    """A model saved by ``save_trained``, its Keras file read on first use of
    ``keras_model`` (``models.trained``).

    Raises:
        InputError: ``model.keras`` is not the file ``metadata.json`` records (one of the two
            files was replaced); on first use, also when its weights do not give the
            recorded identity.
    """
    folder = Path(folder)
    record = json.loads((folder / METADATA_FILE).read_text())
    fields = {name: record["model"][name] for name in _FIELDS}
    fields["classes"] = tuple(fields["classes"])
    if (recorded := record["model"].get(FILE_HASH)) is None:
        raise InputError(f"{folder / METADATA_FILE}: no {FILE_HASH} (saved by an older "
                         "version of cxr-audit); save the model again")
    found = hash_file(folder / MODEL_FILE, SHA256_HEX)
    if found != recorded:
        raise InputError(f"{folder / MODEL_FILE}: weights do not match {METADATA_FILE} "
                         f"(file SHA-256 {recorded} recorded, {found} found); "
                         "save the model again")

    def load_keras() -> keras.Model:
        import keras

        return keras.models.load_model(folder / MODEL_FILE, compile=False)

    return TrainedModel(load_keras=load_keras, metadata=record["metadata"], path=folder,
                        recorded_identity=record["model"]["identity"], **fields)
