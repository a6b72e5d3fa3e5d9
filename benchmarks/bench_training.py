"""Cached-feature training against plain Keras ``fit`` of the full frozen model.

Measured side by side in one run on the real set (``../shared/data/cxr-real``):

- **cached**: ``models.train.cross_validate`` over all folds with ``training_path: cached``
  starting from an empty cache, so the time includes building the models, computing the
  backbone features once (and the rotated views' features, with augmentation), fitting the
  head for every fold, metrics and saving.
- **plain**: Keras ``fit`` of the whole frozen classifier on images (``training_path:
  end_to_end``), timed for ``--plain-epochs`` epochs on the first fold; the fastest epoch
  is extrapolated to ``epochs x folds`` (stated in the output), so the plain figure
  leaves out model building and per-fold overhead: it is a lower bound.

- **head fit, Keras fit vs lean loop** (first, on the same cached features): per fold,
  the frozen classifier's head fitted on the cached features by Keras ``fit`` with the
  best-epoch callback and ``predict`` (``fit_best_epoch``: the cached path before the lean
  loop) and by ``fit_cached`` (the lean loop the cached path now uses), each from the same
  freshly built initial head. Prints both times (fit + validation probabilities, model
  building excluded), their ratio, and how far the two results are apart (largest
  validation-probability difference, best epochs).

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_training            # 224 px, 60 epochs, 5 folds
    .venv/bin/python -m benchmarks.bench_training --limit 300 --epochs 10 --plain-epochs 2
    .venv/bin/python -m benchmarks.bench_training --head-only  # the head comparison alone
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def load_real(data: Path, limit: int | None, n_folds: int, seed: int):
    from audit.data.images import load_dataset
    from audit.data.splits import make_splits

    dataset = load_dataset(data / "metadata.csv", image_size=256)
    if limit is not None and limit < len(dataset):
        rows = np.sort(np.random.default_rng(seed).choice(len(dataset), limit, replace=False))
        dataset = replace(dataset, manifest=dataset.manifest.iloc[rows].reset_index(drop=True),
                                 images=dataset.images[rows], masks=None, has_mask=None)
    return dataset, make_splits(dataset, test_fraction=0.15, n_folds=n_folds, seed=seed)


def time_cached(dataset, splits, spec) -> float:
    from audit.core.cache import StageCache
    from models.train import cross_validate

    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        started = time.perf_counter()
        result = cross_validate(dataset, splits, spec, cache=StageCache(tmp))
        seconds = time.perf_counter() - started
    print(f"  cached {spec.settings.augmented_views if spec.rotates else 0} views: "
          f"{seconds:.1f} s for {len(splits.folds)} folds x {spec.settings.epochs} epochs "
          f"(mean CV accuracy {result['mean']['accuracy']:.3f})")
    return seconds


def time_plain_epoch(dataset, splits, spec, plain_epochs: int) -> float:
    """Fastest epoch of plain ``fit`` of the full frozen model on fold 0."""
    from models.head import build_classifier
    from models.train import balanced_class_weights, fit_best_epoch, image_batches

    train_idx, val_idx = splits.folds[0]
    labels = dataset.labels
    settings = spec.settings
    model, *_ = build_classifier(spec.backbone, spec.image_size, settings.weights,
                                 settings.alpha, settings.dropout, settings.dense_units,
                                 weights_dirs=list(settings.weights_dirs))
    train = image_batches(dataset.images[train_idx], labels[train_idx], spec, shuffle=True,
                          rotate=spec.rotates)
    val = image_batches(dataset.images[val_idx], labels[val_idx], spec, shuffle=False,
                        rotate=False)
    timer = EpochTimer()
    fit_best_epoch(model, train, val, spec.with_settings(epochs=plain_epochs),
                   balanced_class_weights(labels[train_idx], 4), callbacks=[timer])
    print(f"  plain fit epochs: {', '.join(f'{s:.1f}' for s in timer.seconds)} s")
    return min(timer.seconds)


def time_head_fits(dataset, splits, spec) -> None:
    """Keras ``fit`` (``fit_best_epoch`` + ``predict``) vs ``fit_cached`` on each fold's
    cached features, from the same initial head."""
    from audit.core.cache import StageCache
    from models.features import POOLED, FeatureSpec, frozen_features
    from models.head import HEAD_POOL, build_classifier
    from models.inputs import ModeImages
    from models.train import array_batches, balanced_class_weights, fit_best_epoch, fit_cached

    settings = spec.settings

    def fresh_head():
        model, *_ = build_classifier(spec.backbone, spec.image_size, settings.weights,
                                     settings.alpha, settings.dropout, settings.dense_units,
                                     len(dataset.classes), weights_dirs=list(settings.weights_dirs),
                                     seed=spec.seed)
        return model, keras.Model(model.get_layer(HEAD_POOL).output, model.output)

    model, _ = fresh_head()
    extractor = keras.Model(model.inputs[0], model.get_layer(HEAD_POOL).output)
    with tempfile.TemporaryDirectory(prefix="bench-heads-") as tmp:
        started = time.perf_counter()
        features = frozen_features(
            ModeImages(dataset, "raw"),
            FeatureSpec(spec.backbone, settings.weights, settings.alpha, spec.image_size,
                        tuple(settings.weights_dirs), POOLED, lambda: extractor), StageCache(tmp))
    print(f"  features of {len(dataset)} images: {time.perf_counter() - started:.1f} s "
          "(computed once, shared by both)")
    totals = {"keras fit": 0.0, "lean loop": 0.0}
    for number, (train_idx, val_idx) in enumerate(splits.folds):
        labels = dataset.labels
        train, val = (features[train_idx], labels[train_idx]), (features[val_idx], labels[val_idx])
        class_weight = balanced_class_weights(labels[train_idx], len(dataset.classes))
        _, head = fresh_head()
        started = time.perf_counter()
        _, old_epoch = fit_best_epoch(head, array_batches(*train, spec, shuffle=True),
                                      array_batches(*val, spec, shuffle=False), spec,
                                      class_weight)
        old_proba = head.predict(array_batches(*val, spec, shuffle=False), verbose=0)
        old = time.perf_counter() - started
        _, head = fresh_head()
        started = time.perf_counter()
        _, new_epoch, new_proba = fit_cached(head, train, val, spec, class_weight)
        new = time.perf_counter() - started
        totals["keras fit"] += old
        totals["lean loop"] += new
        print(f"  fold {number}: keras fit {old:.2f} s, lean loop {new:.2f} s "
              f"({old / new:.1f}x); best epoch {old_epoch} vs {new_epoch}, largest "
              f"validation probability difference {np.abs(old_proba - new_proba).max():.1e}")
    old, new = totals["keras fit"], totals["lean loop"]
    print(f"  head fits, {len(splits.folds)} folds x {settings.epochs} epochs: keras fit "
          f"{old:.1f} s, lean loop {new:.1f} s, ratio {old / new:.1f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "cxr-real")
    parser.add_argument("--weights-dir", type=Path, default=SHARED / "weights")
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--views", type=int, default=2, help="rotated views (augmented run)")
    parser.add_argument("--plain-epochs", type=int, default=3, help="plain-fit epochs timed")
    parser.add_argument("--repeats", type=int, default=1, help="best of N cached runs")
    parser.add_argument("--limit", type=int, default=None, help="use N random images")
    parser.add_argument("--head-only", action="store_true",
                        help="only the head fits on cached features: Keras fit vs lean loop")
    args = parser.parse_args(argv)
    if not (args.data / "metadata.csv").is_file():
        raise SystemExit(f"{args.data}/metadata.csv not found: pass --data")

    from audit.core.config import ModelsConfig
    from audit.core.progress import configure
    from models.train import ClassifierSpec

    configure(quiet=True)  # no progress bars between the printed timings
    dataset, splits = load_real(args.data, args.limit, args.folds, seed=0)
    n_train = len(splits.folds[0][0])
    print(f"{args.backbone} alpha {args.alpha} at {args.size} px, {len(dataset)} images "
          f"({n_train} training images in fold 0), {args.folds} folds x {args.epochs} epochs")
    settings = ModelsConfig(weights="imagenet", weights_dirs=[args.weights_dir],
                            alpha=args.alpha, epochs=args.epochs)
    base = ClassifierSpec(settings=settings, backbone=args.backbone, input_mode="raw",
                          image_size=args.size, seed=0, border_fraction=0.1)
    print("head fit on cached features, no augmentation:")
    time_head_fits(dataset, splits, base)
    if args.head_only:
        return
    for label, views in (("no augmentation", 0), (f"rotation, {args.views} views", args.views)):
        spec = base.with_settings(augmented_views=views, rotation_degrees=10.0 if views else 0.0)
        print(f"{label}:")
        cached = min(time_cached(dataset, splits, spec.with_settings(training_path="cached"))
                     for _ in range(args.repeats))
        epoch = time_plain_epoch(dataset, splits, spec.with_settings(training_path="end_to_end"),
                                 args.plain_epochs)
        plain = epoch * args.epochs * args.folds
        print(f"  plain fit: fastest epoch {epoch:.1f} s x {args.epochs} epochs x {args.folds} "
              f"folds = {plain:.0f} s (extrapolated)")
        print(f"  speed-up ({label}): {plain / cached:.1f}x")


if __name__ == "__main__":
    main()
