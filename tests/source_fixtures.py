"""Known models for the inference-only model checks (within-source skill, external sources).

- ``coded_dataset``: tiny images that carry their source as the intensity of the top-left
  corner (a hospital's exposure, say) and their label as the brightness of a central patch
  (the disease), with labels tied to sources as much as ``confounding`` says.
- ``ReadsSource``: predicts from the corner alone, answering the commonest training label
  of the source it recognises (the shortcut: all it knows is the hospital).
- ``ReadsDisease``: predicts from the central patch alone (reads the disease).

Both have the ``TrainedModel`` surface the checks call (``key``, ``classes``,
``predict_proba(dataset, rows)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.core.config import CLASSES, ProbesConfig
from audit.data.dataset import Dataset, Splits
from probes.base import ProbeContext
from tests.probe_fixtures import probe_context

SIZE = 16
CORNER = 4  # the corner square carrying the source, pixels
_PATCH = slice(6, 10)  # the central patch carrying the label
_SOURCE_LEVELS = (20, 60, 100, 140, 180, 220)
_LABEL_LEVELS = (40, 100, 160, 220)


def coded_dataset(n_per_source: int = 40, n_sources: int = 4, confounding: float = 0.7,
                  label_noise: float = 20.0, seed: int = 0, source_prefix: str = "site",
                  first_source: int = 0) -> Dataset:
    """``n_per_source`` images per source; a share ``confounding`` of a source's images has
    its home label (source ``i``: class ``i mod 4``), the rest cycle through all four.

    Args:
        label_noise: standard deviation of the noise on the central patch: the larger, the
            more often ``ReadsDisease`` is wrong. Defaults to 20.
        source_prefix: names of the sources, ``<prefix>0``, ... Defaults to "site".
        first_source: index of the first source's corner level (another set's sources
            take levels this set's lack). Defaults to 0.
    """
    rng = np.random.default_rng(seed)
    labels, sources, images = [], [], []
    for s in range(n_sources):
        tied = rng.random(n_per_source) < confounding
        own = np.where(tied, (first_source + s) % len(CLASSES), np.arange(n_per_source) % 4)
        for label in own:
            image = np.full((SIZE, SIZE), 80.0)
            image[:CORNER, :CORNER] = _SOURCE_LEVELS[first_source + s]
            image[_PATCH, _PATCH] = _LABEL_LEVELS[label] + rng.normal(0, label_noise)
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(CLASSES[label])
            sources.append(f"{source_prefix}{s}")
    n = len(labels)
    manifest = pd.DataFrame({"path": [f"{source_prefix}/img{i}.png" for i in range(n)],
                             "label": labels, "source": sources,
                             "patient_id": [f"{source_prefix}-p{i}" for i in range(n)],
                             "view": "PA", "mask_path": ""})
    return Dataset(manifest=manifest, images=np.stack(images),
                   manifest_hash=f"coded-{source_prefix}-{n_per_source}-{n_sources}-"
                                 f"{confounding}-{label_noise}-{seed}-{first_source}")


def _one_hot(classes: np.ndarray) -> np.ndarray:
    proba = np.full((len(classes), len(CLASSES)), 0.02)
    proba[np.arange(len(classes)), classes] = 1 - 0.02 * (len(CLASSES) - 1)
    return proba


@dataclass
class ReadsDisease:
    """Reads the central patch: the nearest label level."""

    key: str = "disease/raw"
    classes: tuple[str, ...] = CLASSES
    metadata: dict = field(default_factory=dict)

    def predict_proba(self, dataset: Dataset, rows: np.ndarray) -> np.ndarray:
        patch = dataset.images[np.asarray(rows)][:, _PATCH, _PATCH].mean(axis=(1, 2))
        return _one_hot(np.abs(patch[:, None] - np.array(_LABEL_LEVELS)).argmin(1))


@dataclass
class ReadsSource:
    """Reads the corner: the commonest training label among training images whose corner
    looks the same, and the commonest training label overall for a corner it never saw."""

    corner_labels: dict[int, int]
    fallback: int
    key: str = "source/raw"
    classes: tuple[str, ...] = CLASSES
    metadata: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, dataset: Dataset, rows: np.ndarray) -> ReadsSource:
        corners, labels = _corners(dataset, rows), dataset.labels[np.asarray(rows)]
        table = {int(c): int(np.bincount(labels[corners == c]).argmax())
                 for c in np.unique(corners)}
        return cls(corner_labels=table, fallback=int(np.bincount(labels).argmax()))

    def predict_proba(self, dataset: Dataset, rows: np.ndarray) -> np.ndarray:
        corners = _corners(dataset, rows)
        return _one_hot(np.array([self.corner_labels.get(int(c), self.fallback)
                                  for c in corners], dtype=int))


def _corners(dataset: Dataset, rows: np.ndarray) -> np.ndarray:
    return dataset.images[np.asarray(rows)][:, :CORNER, :CORNER].mean(axis=(1, 2)).round()


def audited_context(model, dataset: Dataset, splits: Splits, external: tuple = (),
                    **params) -> ProbeContext:
    """A probe context whose only and audited model is ``model``, with ``params`` as the
    probes' settings and ``external`` as the external data sets."""
    return probe_context(dataset, splits, models={model.key: model}, audited=model.key,
                         params=ProbesConfig(**params), external=tuple(external))
