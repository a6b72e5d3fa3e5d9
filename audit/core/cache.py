"""Content-addressed, crash-safe stage cache.

Every expensive step (decoded images, masks, backbone features, a trained model, a probe
result) is a *stage*: a folder under ``<cache>/<stage>/<key>`` whose key is a hash of the
stage's inputs (data hashes, the config section that matters, the code version). A stage
is computed into a private temporary folder and renamed into place only when complete, so
a folder that exists is always whole: a run killed part-way leaves only temporary folders
behind, which are never read and are cleaned up on the next run. A file lock per key keeps
concurrent runs sharing one cache from computing the same stage twice or reading it half
written.

Usage::

    cache = StageCache(run_dir / "cache")
    folder = cache.run("features", {"images": images_key, "backbone": "mobilenetv2"},
                       compute=lambda tmp: np.save(tmp / "features.npy", extract(...)))
    features = np.load(folder / "features.npy", mmap_mode="r")
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

CODE_VERSION = "2"
"""Bumped when a change alters what any stage computes, so old cache entries are not reused."""


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return hash_array(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if hasattr(value, "model_dump"):  # pydantic config sections
        return _canonical(value.model_dump(mode="json"))
    return value


def stable_hash(value: Any, length: int = 16) -> str:
    """A short hex digest of a JSON-able value, independent of dict order."""
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def hash_array(array: np.ndarray, length: int = 16) -> str:
    digest = hashlib.sha256()
    digest.update(str((array.dtype.str, array.shape)).encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:length]


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def hash_file(path: str | Path, length: int = 16) -> str:
    """SHA-256 of the file's bytes, hex, its first ``length`` characters.

    Remembered for the process by path, size and modification time: a run puts the same
    weights file (up to 100 MB for ResNet50) into the keys of every classifier and feature
    stage, and would otherwise read it again for each.
    """
    stat = os.stat(path)
    memo_key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[memo_key] = digest.hexdigest()
    return _FILE_HASHES[memo_key][:length]


@dataclass(frozen=True)
class StageEvent:
    stage: str
    key: str
    action: str  # "reused" or "computed"
    seconds: float


class StageCache:
    """A folder of finished stages, keyed by the hash of their inputs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.events: list[StageEvent] = []

    def key(self, stage: str, inputs: Any) -> str:
        return stable_hash({"stage": stage, "code": CODE_VERSION, "inputs": inputs})

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def is_done(self, stage: str, inputs: Any) -> bool:
        return self.folder(stage, self.key(stage, inputs)).is_dir()

    def run(self, stage: str, inputs: Any, compute: Callable[[Path], None]) -> Path:
        """Return the finished folder of ``stage`` for ``inputs``, computing it if needed.

        ``compute(tmp_folder)`` writes the stage's files into ``tmp_folder``; the folder
        becomes visible under its key only after ``compute`` returned.
        """
        key = self.key(stage, inputs)
        final = self.folder(stage, key)
        if final.is_dir():
            self.events.append(StageEvent(stage, key, "reused", 0.0))
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if final.is_dir():  # another process finished it while we waited
                self.events.append(StageEvent(stage, key, "reused", 0.0))
                return final
            self._remove_stale_tmp(final)
            tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
            tmp.mkdir()
            started = time.perf_counter()
            try:
                compute(tmp)
                _fsync_tree(tmp)
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            self.events.append(StageEvent(stage, key, "computed", time.perf_counter() - started))
        return final

    @staticmethod
    def _remove_stale_tmp(final: Path) -> None:
        # Only called under the key's lock, so no live writer owns these folders.
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def summary(self) -> dict[str, int]:
        """How many stages were reused and computed in this process."""
        counts = {"reused": 0, "computed": 0}
        for event in self.events:
            counts[event.action] += 1
        return counts


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
