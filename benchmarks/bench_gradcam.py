"""Grad-CAM throughput: our compiled ``GradCam.explain`` vs tf-keras-vis ``Gradcam``.

``explain`` gives what the attention checks use, each image's prediction and its maps for
the predicted and for the true class, from one forward pass; tf-keras-vis is timed giving
one class's maps, so ours does more work in the comparison.

MobileNetV2 (``--alpha`` 1.0 by default, or the demo's 0.35; ImageNet weights from
``../shared/weights`` when present, else random) at 224 px with the paper's head, saved and reloaded as the models layer does.
Each way is timed best-of-N on the same images in one run, the ways taking turns in every
round; the printed ratio compares those best times. Also checks that the raw maps agree (max relative difference).

Run: ``.venv/bin/python -m benchmarks.bench_gradcam [--images 64] [--repeats 3] [--alpha 0.35]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras  # imports TensorFlow first (before h5py, see notes/stack.md)
import numpy as np
import tensorflow as tf

from models.gradcam import GradCam

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "shared" / "weights"
SIZE = 224
LAYER = "out_relu"


def build_model(folder: Path, alpha: float) -> tuple[keras.Model, str]:
    """Flat MobileNetV2 + GAP/dense/dropout/softmax head, saved and reloaded."""
    file = WEIGHTS_DIR / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"
    weights = str(file) if file.exists() else None
    inputs = keras.Input((SIZE, SIZE, 3))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    base = keras.applications.MobileNetV2(input_tensor=scaled, alpha=alpha, include_top=False,
                                          weights=weights)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    return keras.models.load_model(folder / "model.keras"), "imagenet" if weights else "random"


def best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each run over ``repeats`` rounds, after one warm-up call each.

    The runs take turns within every round, so a burst of load from other processes hits
    all of them alike instead of skewing the ratio.
    """
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--single-images", type=int, default=4,
                        help="images for the slow one-at-a-time tf-keras-vis timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=1.0, choices=[0.35, 1.0],
                        help="MobileNetV2 width (0.35 is the demo's)")
    args = parser.parse_args()

    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    with tempfile.TemporaryDirectory() as folder:
        model, weights = build_model(Path(folder), args.alpha)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.images, SIZE, SIZE, 3)).astype(np.float32)
    classes = rng.integers(0, 4, args.images)
    ours = GradCam(model, LAYER, batch_size=32)
    reference = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)

    def reference_maps(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.asarray(reference(CategoricalScore(list(targets)), images, penultimate_layer=LAYER,
                                    seek_penultimate_conv_layer=False, normalize_cam=False,
                                    expand_cam=False))

    def reference_batched() -> np.ndarray:
        return np.concatenate([reference_maps(x[i : i + 16], classes[i : i + 16])
                               for i in range(0, len(x), 16)])

    def reference_single() -> None:
        for i in range(args.single_images):
            reference_maps(x[i : i + 1], classes[i : i + 1])

    # The floor: the same forward pass to the conv layer with no gradient at all, so the
    # printout says how much of the CAM time the network itself takes on this machine.
    to_maps = keras.Model(model.inputs, model.get_layer(LAYER).output)
    forward = tf.function(lambda batch: to_maps(batch, training=False))

    def forward_only() -> None:
        for i in range(0, len(x), 32):
            forward(x[i : i + 32]).numpy()

    best = best_seconds({"ours": lambda: ours.explain(x, classes), "batched": reference_batched,
                         "single": reference_single, "forward": forward_only}, args.repeats)
    ours_s, batched_s = best["ours"] / len(x), best["batched"] / len(x)
    single_s = best["single"] / args.single_images
    ours_maps, reference_maps_all = ours.explain(x, classes).cams["true"], reference_batched()
    scale = float(reference_maps_all.max())
    max_rel = float(np.abs(ours_maps - reference_maps_all).max() / scale)

    print(f"MobileNetV2 {args.alpha} @ {SIZE} px ({weights} weights), {args.images} images, "
          f"CAM {ours.resolution[0]}x{ours.resolution[1]}, best of {args.repeats}")
    print(f"  ours (explain, batch 32):       {ours_s * 1e3:7.1f} ms/img  {1 / ours_s:7.1f} CAM/s")
    print(f"  tf-keras-vis Gradcam, batch 16: {batched_s * 1e3:7.1f} ms/img  {1 / batched_s:7.1f} CAM/s")
    print(f"  tf-keras-vis Gradcam, 1 by 1:   {single_s * 1e3:7.1f} ms/img  {1 / single_s:7.1f} CAM/s")
    forward_s = best["forward"] / len(x)
    print(f"  forward pass only (no gradient):  {forward_s * 1e3:7.1f} ms/img  {1 / forward_s:7.1f} img/s"
          f"  (ours costs {ours_s / forward_s:.2f}x a bare forward pass)")
    print(f"  speed-up vs tf-keras-vis batched: {batched_s / ours_s:.1f}x, "
          f"vs one by one: {single_s / ours_s:.1f}x")
    print(f"  max |ours - tf-keras-vis| / max map: {max_rel:.2e} (max map {scale:.3g})")


if __name__ == "__main__":
    main()
