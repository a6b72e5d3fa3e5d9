"""Keeps TensorFlow's start-up chatter off the terminal: the one place that does so.

``TF_CPP_MIN_LOG_LEVEL=1`` hides the C++ runtime's info lines (CPU instruction sets),
keeping its warnings and errors. It does not hide the lines TensorFlow 2.21 logs before
its logger is set up: on CPUs where oneDNN is on by default (AVX-512 machines) importing
TensorFlow prints ``port.cc ... oneDNN custom operations are on`` twice, each after
absl's "All log messages before absl::InitializeLog() ..." notice, whatever the level.
Those are written to file descriptor 2 by C++ code during ``import tensorflow``, so the
first import runs with that descriptor captured and everything but those info lines is
written back, in order, when the import ends (or fails).

TensorFlow's Python logger is lowered to errors: what it warns of here are
``tf.function`` retracing notices, which a new model's first call triggers by design
(``models.trained.predict_in_full_batches`` keeps the avoidable ones away).

Only the command line and its job processes call this: library code leaves a library
user's logging and descriptors alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

# An absl info line ("I0000 00:00:1796193026.064704   18529 port.cc:153] ...") and the
# notice absl prints before its first line when logging is not yet initialised.
_RUNTIME_INFO_LINE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)")


def quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up info lines in this process and the processes it spawns.

    Runs before anything imports TensorFlow (it imports nothing itself). A
    ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept, and with it set to 0 the info lines
    are shown.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" and "tensorflow" not in sys.modules \
            and not any(isinstance(finder, _QuietFirstImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFirstImport())


class _QuietFirstImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with a loader that runs its import with fd 2 captured."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _CapturedImportLoader(spec.loader)
        return spec


class _CapturedImportLoader(importlib.abc.Loader):
    """Delegates to the real loader, executing the module with the info lines dropped."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with _runtime_info_lines_dropped():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_data, is_package, ... of the real loader
        return getattr(self._loader, name)


@contextlib.contextmanager
def _runtime_info_lines_dropped() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines
                                     if not _RUNTIME_INFO_LINE.match(line)))
            sys.stderr.flush()
