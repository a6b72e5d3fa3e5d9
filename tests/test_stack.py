"""The pinned stack works under Keras 3: segmentation-models and tf-keras-vis import and run."""

from __future__ import annotations

import os

import numpy as np


def test_segmentation_models_imports_through_models_sm_and_runs_a_unet():
    from models._sm import import_segmentation_models

    sm = import_segmentation_models()
    assert os.environ["SM_FRAMEWORK"] == "tf.keras"
    unet = sm.Unet("mobilenetv2", input_shape=(64, 64, 3), classes=1, activation="sigmoid",
                   encoder_weights=None)
    output = np.asarray(unet(np.zeros((1, 64, 64, 3), dtype=np.float32)))
    assert output.shape == (1, 64, 64, 1)
    assert np.isfinite(output).all()


def test_tf_keras_vis_gradcam_runs_on_a_flat_cnn():
    import keras
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    # Seeded: with some random inits every map of this 4-channel CNN is cut to zero by the
    # ReLU, which failed one CI run.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="last_conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    cam = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)(
        CategoricalScore([0, 1]), images, penultimate_layer="last_conv", normalize_cam=False)
    assert cam.shape == (2, 32, 32)
    assert np.isfinite(cam).all() and np.abs(cam).sum() > 0
