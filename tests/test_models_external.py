"""Bringing an external Keras classifier (models.external)."""

from __future__ import annotations

import numpy as np
import pytest

from audit.core.errors import InputError
from models.external import load_external_model
from tests.models_fixtures import tiny_dataset

keras = pytest.importorskip("keras")

ROWS = np.arange(16)


def _user_model(nested: bool) -> keras.Model:
    """A small user model taking 0..1 input, outputs in the order normal/covid/opacity/other."""
    backbone_in = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="user_conv1")(backbone_in)
    y = keras.layers.Conv2D(4, 3, padding="same", name="user_conv2")(x)
    features = keras.layers.Add(name="user_add")([x, y])
    if nested:
        backbone = keras.Model(backbone_in, features, name="user_backbone")
        inputs = keras.Input((32, 32, 3))
        features = backbone(inputs)
    else:
        inputs = backbone_in
    pooled = keras.layers.GlobalAveragePooling2D(name="user_pool")(features)
    outputs = keras.layers.Dense(4, activation="softmax", name="user_out")(pooled)
    return keras.Model(inputs, outputs)


def _write(tmp_path, model, spec_text):
    model.save(tmp_path / "user.keras")
    (tmp_path / "spec.yaml").write_text(spec_text)
    return tmp_path / "user.keras", tmp_path / "spec.yaml"


SPEC = """input_size: 32
scaling: "0-1"
classes: [normal, covid, opacity, other]
"""


@pytest.mark.parametrize("nested", [False, True])
def test_external_model_is_rescaled_reordered_and_flat(tmp_path, nested):
    user = _user_model(nested)
    model_path, spec_path = _write(tmp_path, user, SPEC)
    wrapped = load_external_model(model_path, spec_path)
    dataset = tiny_dataset()
    x = wrapped.model_inputs(dataset, ROWS)
    expected = user.predict(x / 255.0, verbose=0)[:, [1, 2, 3, 0]]  # into CLASSES order
    np.testing.assert_allclose(wrapped.predict_proba(dataset, ROWS), expected, atol=1e-5)
    assert wrapped.classes == ("covid", "opacity", "other", "normal")
    assert wrapped.last_conv_layer == "user_add" and wrapped.metadata["gradcam_available"]
    assert not any(isinstance(layer, keras.Model) for layer in wrapped.keras_model.layers)
    km = wrapped.keras_model
    keras.Model(km.inputs[0], [km.get_layer(wrapped.last_conv_layer).output, km.output])


@pytest.mark.parametrize(("spec_text", "message"), [
    (SPEC.replace("classes: [normal, covid, opacity, other]", "classes: [covid, normal]"),
     "classes lists 2 classes but the model .* has 4 outputs"),
    (SPEC.replace('"0-1"', '"0-2"'), r"invalid model spec \(scaling: "),
    (SPEC + "last_conv_layer: conv9\n", "last_conv_layer 'conv9' is not a layer of"),
    (SPEC.replace("normal, covid", "covid, covid"), "classes must not repeat"),
])
def test_bad_specs_name_the_file_and_the_problem(tmp_path, spec_text, message):
    model_path, spec_path = _write(tmp_path, _user_model(False), spec_text)
    with pytest.raises(InputError, match=f"spec.yaml: {message}"):
        load_external_model(model_path, spec_path)


@pytest.mark.parametrize(("spec_text", "message"), [
    (SPEC + "channels: 1\n", r"channels: 1, but the model .*user.keras takes input of shape "
                             r"\(batch, 32, 32, 3\); set channels: 3"),
    (SPEC.replace("input_size: 32", "input_size: 48"),
     r"input_size: 48, but the model .*user.keras takes input of shape \(batch, 32, 32, 3\); "
     r"set input_size: 32"),
])
def test_a_spec_that_does_not_fit_the_model_input_is_refused(tmp_path, spec_text, message):
    model_path, spec_path = _write(tmp_path, _user_model(False), spec_text)
    with pytest.raises(InputError, match=f"spec.yaml: {message}"):
        load_external_model(model_path, spec_path)


def test_a_model_saved_for_any_size_runs_at_the_spec_size(tmp_path):
    inputs = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    user = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(pooled))
    model_path, spec_path = _write(tmp_path, user, SPEC.replace("input_size: 32", "input_size: 40"))
    wrapped = load_external_model(model_path, spec_path)
    assert wrapped.input_size == 40
    assert tuple(wrapped.keras_model.inputs[0].shape) == (None, 40, 40, 3)


def test_a_spec_that_is_not_utf8_names_the_byte(tmp_path):
    model_path, spec_path = _write(tmp_path, _user_model(False), SPEC)
    spec_path.write_bytes(SPEC.encode() + "backbone: réseau\n".encode("latin-1"))
    with pytest.raises(InputError, match=rf"spec.yaml: a model spec must be UTF-8 text; "
                                         rf"byte {len(SPEC) + len('backbone: r')} is not \(0xe9"):
        load_external_model(model_path, spec_path)


def test_unreadable_model_file(tmp_path):
    (tmp_path / "broken.keras").write_bytes(b"not a model")
    (tmp_path / "spec.yaml").write_text(SPEC)
    with pytest.raises(InputError, match="broken.keras: cannot load the Keras model"):
        load_external_model(tmp_path / "broken.keras", tmp_path / "spec.yaml")


def _load(folder, model, spec_text=SPEC):
    folder.mkdir()
    return load_external_model(*_write(folder, model, spec_text))


def _other_weights(model: keras.Model) -> keras.Model:
    other = _user_model(False)
    other.set_weights([weights + 0.5 for weights in model.get_weights()])
    return other


def test_identity_is_the_weights_and_the_spec_not_the_file(tmp_path):
    user = _user_model(False)
    first = _load(tmp_path / "a", user)
    assert _load(tmp_path / "b", user).identity == first.identity  # same model elsewhere
    assert _load(tmp_path / "c", _other_weights(user)).identity != first.identity
    rescaled = SPEC.replace('"0-1"', '"0-255"')
    assert _load(tmp_path / "d", user, rescaled).identity != first.identity


def test_a_saved_model_reloads_with_its_identity_and_a_swapped_file_is_refused(tmp_path):
    from models.saving import MODEL_FILE, load_trained, save_trained

    user = _user_model(False)
    wrapped = _load(tmp_path / "user", user)
    save_trained(wrapped, tmp_path / "saved")
    assert load_trained(tmp_path / "saved").identity == wrapped.identity
    swapped = _load(tmp_path / "other", _other_weights(user))
    swapped.keras_model.save(tmp_path / "saved" / MODEL_FILE)
    with pytest.raises(InputError, match=f"{MODEL_FILE}: weights do not match metadata.json"):
        load_trained(tmp_path / "saved")


def test_a_saved_model_reads_its_network_on_first_use_and_checks_its_identity_then(
        tmp_path, monkeypatch):
    import json

    from models.saving import METADATA_FILE, load_trained, save_trained

    wrapped = _load(tmp_path / "user", _user_model(False))
    save_trained(wrapped, tmp_path / "saved")
    reads = []
    load_model = keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model",
                        lambda *args, **kwargs: reads.append(args) or load_model(*args, **kwargs))
    loaded = load_trained(tmp_path / "saved")
    assert loaded.identity == wrapped.identity and reads == []  # named without reading
    np.testing.assert_allclose(loaded.predict_proba(tiny_dataset(), ROWS),
                               wrapped.predict_proba(tiny_dataset(), ROWS), atol=1e-6)
    assert len(reads) == 1

    metadata = tmp_path / "saved" / METADATA_FILE
    record = json.loads(metadata.read_text())
    record["model"]["identity"] = "0" * 16  # the file is the one recorded, its identity not
    metadata.write_text(json.dumps(record))
    relabelled = load_trained(tmp_path / "saved")
    with pytest.raises(InputError, match="do not match the identity recorded with it"):
        relabelled.predict_proba(tiny_dataset(), ROWS)

    del record["model"]["file_sha256"]  # as an older version saved it
    metadata.write_text(json.dumps(record))
    with pytest.raises(InputError, match="no file_sha256 .saved by an older version"):
        load_trained(tmp_path / "saved")
