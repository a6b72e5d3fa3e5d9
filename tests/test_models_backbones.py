"""Backbones, weights resolution and the flat classifier (models.backbones, models.head)."""

from __future__ import annotations

import numpy as np
import pytest

from audit.core.errors import WeightsUnavailableError
from models.backbones import (
    BACKBONES,
    block_cut_layer,
    cam_grid,
    keras_weights_file_name,
    resolve_weights,
)
from models.head import EMBEDDING_LAYER, build_classifier
from tests.models_fixtures import MOBILENET_025, MOBILENET_V2_035, WEIGHTS_DIR

keras = pytest.importorskip("keras")
needs_weights = pytest.mark.skipif(not MOBILENET_V2_035.is_file(),
                                   reason="../shared/weights not available")


@pytest.mark.parametrize(("backbone", "alpha", "size", "name"), [
    ("mobilenet", 0.25, 224, "mobilenet_2_5_224_tf_no_top.h5"),
    ("mobilenet", 1.0, 100, "mobilenet_1_0_224_tf_no_top.h5"),
    ("mobilenetv2", 0.35, 160, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_160_no_top.h5"),
    ("mobilenetv2", 1.0, 64, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
    ("resnet50", 1.0, 224, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
])
def test_keras_cache_file_names(backbone, alpha, size, name):
    assert keras_weights_file_name(backbone, alpha, size) == name


def test_resolve_weights_none_and_missing_file(tmp_path):
    assert resolve_weights("none", "xception") == (None, "none")
    with pytest.raises(WeightsUnavailableError, match="models.weights: .*no such file"):
        resolve_weights(str(tmp_path / "absent.h5"), "mobilenetv2")
    with pytest.raises(ValueError, match="Unknown backbone 'vgg16'; expected one of mobilenet"):
        resolve_weights("none", "vgg16")


def test_resolve_imagenet_prefers_local_cache_named_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    assert resolve_weights("imagenet", "resnet50", weights_dirs=[tmp_path]) == (
        "imagenet", "imagenet (keras download)")
    local = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    local.write_bytes(b"weights")
    keras_weights, origin = resolve_weights("imagenet", "resnet50", weights_dirs=[tmp_path])
    assert keras_weights == str(local)
    assert origin.startswith(f"imagenet (local file {local}, sha256 ")


def test_failed_download_says_which_file_to_fetch(tmp_path, monkeypatch):
    """Offline, Keras fails with "URL fetch failure"; we name the file and the config keys."""
    from models import backbones

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x: None")

    monkeypatch.setattr(keras.applications, "Xception", offline)
    with pytest.raises(WeightsUnavailableError,
                       match=r"xception_weights_tf_dim_ordering_tf_kernels_notop\.h5.*"
                             r"models\.weights_dirs"):
        backbones.build_backbone("xception", 71, "imagenet")

    # A size with a file of its own: both names it is looked for under, and every folder.
    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(WeightsUnavailableError) as failed:
        backbones.build_backbone("mobilenetv2", 160, "imagenet", alpha=0.35,
                                 weights_dirs=[tmp_path / "weights"])
    message = str(failed.value)
    for size in (160, 224):
        assert keras_weights_file_name("mobilenetv2", 0.35, size) in message
    assert str(tmp_path / "weights") in message and str(tmp_path / "models") in message


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="inceptionv3 needs an input size of at least 75 pixels, got 64"):
        build_classifier("inceptionv3", 64, "none")


@needs_weights
@pytest.mark.parametrize(("backbone", "alpha", "path"), [
    ("mobilenetv2", 0.35, MOBILENET_V2_035), ("mobilenet", 0.25, MOBILENET_025)])
def test_real_imagenet_files_load_at_other_sizes(backbone, alpha, path):
    """The local file, found under its Keras cache name, gives the genuine ImageNet network."""
    model, last_conv, _, origin = build_classifier(backbone, 64, "imagenet", alpha,
                                                   weights_dirs=[WEIGHTS_DIR])
    assert origin.startswith(f"imagenet (local file {path}")
    constructor = getattr(keras.applications, BACKBONES[backbone].constructor)
    reference = constructor(input_shape=(64, 64, 3), include_top=False, alpha=alpha,
                            weights=str(path))
    preprocess = getattr(keras.applications, backbone.replace("mobilenetv2", "mobilenet_v2"))
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32)
    expected = np.asarray(reference(preprocess.preprocess_input(x.copy())))
    ours = np.asarray(keras.Model(model.inputs[0], model.get_layer(last_conv).output)(x))
    assert np.abs(ours - expected).max() < 1e-3


def test_classifier_is_flat_and_reloads_with_gradcam_reachable(tmp_path):
    model, last_conv, embedding, origin = build_classifier("mobilenetv2", 32, "none", 0.35,
                                                           dense_units=8)
    assert origin == "none" and embedding == EMBEDDING_LAYER
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert [layer.name for layer in model.layers[:2]] == ["image", "preprocess"]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(1).uniform(0, 255, size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    conv_and_output = keras.Model(loaded.inputs[0], [loaded.get_layer(last_conv).output,
                                                      loaded.output])
    maps, proba = conv_and_output(x)
    assert maps.shape[0] == 3 and proba.shape == (3, 4)


def test_unfreezing_trains_top_blocks_but_never_batchnorm():
    frozen, *_ = build_classifier("mobilenet", 32, "none", 0.25, dense_units=8)
    assert [w.name for w in frozen.trainable_weights] == ["kernel", "bias", "kernel", "bias"]
    top2, *_ = build_classifier("mobilenet", 32, "none", 0.25, dense_units=8, unfreeze_blocks=2)
    trainable = [layer.name for layer in top2.layers if layer.trainable_weights]
    assert trainable == ["conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13",
                         "head_dense", "predictions"]
    assert block_cut_layer(top2, "mobilenet", 2) == "conv_pw_11_relu"
    with pytest.raises(ValueError, match="models.unfreeze_blocks: mobilenet has 12 blocks that "
                                         "can be unfrozen, got 13"):
        block_cut_layer(top2, "mobilenet", 13)


@pytest.mark.parametrize(("backbone", "size"), [
    ("mobilenet", 97), ("mobilenetv2", 97), ("resnet50", 97), ("inceptionv3", 299),
    ("xception", 71)])
def test_cam_grid_is_the_side_of_the_last_convolution(backbone, size):
    import keras

    info = BACKBONES[backbone]
    model = getattr(keras.applications, info.constructor)(
        include_top=False, weights=None, input_shape=(size, size, 3))
    assert model.get_layer(info.last_conv_layer).output.shape[1] == cam_grid(backbone, size)


@pytest.mark.parametrize("backbone", ["mobilenetv2", "xception"])
def test_random_weights_are_the_same_on_every_build(backbone):
    """``models.weights: none`` must be reproducible: Keras' unseeded initializers draw from
    process state, which differs between two builds (and between a run and its resume)."""
    from models.backbones import backbone_info, build_backbone

    size = backbone_info(backbone).min_input_size
    first, second = (build_backbone(backbone, size, "none", 0.35)[0].get_weights()
                     for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert max(float(np.std(a)) for a in first) > 0  # drawn, not left at zero
