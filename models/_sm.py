"""The one place that imports ``segmentation_models``.

``segmentation_models`` picks its Keras flavour from the ``SM_FRAMEWORK`` environment
variable at import time. Without it, it tries the standalone ``keras`` package first and,
under Keras 3, dies with ``AttributeError: module 'keras.utils' has no attribute
'generic_utils'``: an ``AttributeError``, not an ``ImportError``, so its own fallback to
``tf.keras`` never runs. Setting ``SM_FRAMEWORK=tf.keras`` (which is Keras 3 under
TensorFlow 2.16+) avoids that. The variable must be set before the first import, so it is
set here, lazily, and nowhere else: every module gets segmentation_models through
``import_segmentation_models()`` and never imports it directly.
"""

from __future__ import annotations

import os
from types import ModuleType


def import_segmentation_models() -> ModuleType:
    """Import and return ``segmentation_models`` configured for ``tf.keras``.

    ``setdefault`` keeps a value the user set on purpose.

    Returns:
        The ``segmentation_models`` module.
    """
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
    import segmentation_models

    return segmentation_models
