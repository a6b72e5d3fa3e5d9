"""What Grad-CAM gives the attention checks, without TensorFlow (``models.gradcam``
computes it): the pipeline's cached ``gradcam`` stage reads back into these, so a rerun
whose checks are cached imports no TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAM_TARGETS = ("predicted", "true")
"""The classes a map explains, the keys of ``Explanations.cams``: each image's predicted
class and its true class."""


@dataclass(frozen=True)
class Explanations:
    """What ``GradCam.explain`` returns: per image, the predicted class and two raw maps."""

    predicted_class: np.ndarray  # (n,) int64
    cams: dict[str, np.ndarray]  # CAM_TARGETS -> (n, h, w) float32 raw maps

    @property
    def resolution(self) -> int:
        """Cells per side of the (square) maps."""
        return int(self.cams["predicted"].shape[1])
