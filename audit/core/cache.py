"""Content-addressed, crash-safe stage cache.

Every expensive step (decoded images, masks, backbone features, a trained model, a probe
result) is a *stage*: a folder under ``<cache>/<stage>/<key>`` whose key is a hash of the
stage's inputs (data hashes, the config section that matters, a model's identity) and of
the code that computes it. A stage is computed into a private temporary folder and renamed
into place only when complete, so a folder that exists is always whole: a run killed
part-way leaves only temporary folders behind, which are never read and are cleaned up on
the next run. A file lock per key keeps concurrent runs sharing one cache from computing
the same stage twice or reading it half written.

A stage cannot lie about its files either. Before the rename, the cache writes a manifest
(``.stage.json``) listing every file of the stage with its size, modification time and
SHA-256. Reusing a stage verifies it against the manifest, cheaply: the set of files and
their sizes always; the content hash of every small file (``SMALL_FILE_BYTES``: results,
metadata, records), of every file whose modification time changed, and, with
``StageCache(verify=True)`` (``cxr-audit run --verify``), of every file. A stage that
fails, or has no manifest (written by older code), is logged by name with the bad file
and why, moved aside to ``<cache>/quarantine/<stage>-<key>-<time>`` (kept for
inspection, never deleted) and recomputed. ``run_and_load`` does the same for a stage
whose files verify but do not load.

The code in a key is the source of whole packages, not of one module or function: every
``*.py`` file of the layer whose module defines the stage's ``compute`` and of every layer
below it (``CODE_LAYERS``, the order of pyproject.toml's import contract). A stage's code
calls into its package's other modules and into the layers below (the features stage into
the backbones, the probe stage into every probe through the registry's import by name), so
hashing less would miss a change that alters the result, while the layers contract
guarantees a module reaches nothing above its layer. Any edit of those files (a comment
too) makes new keys: the cost is recomputing, never reusing a stale result. A ``compute``
defined outside these packages (a test, a script) is keyed on all of them. The sources are
read once per ``StageCache`` object.

Usage::

    cache = StageCache(run_dir / "cache")
    folder = cache.run("features", {"images": images_key, "backbone": "mobilenetv2"},
                       compute=lambda tmp: np.save(tmp / "features.npy", extract(...)))
    features = np.load(folder / "features.npy", mmap_mode="r")

    # or, recomputing a reused stage whose files do not load:
    features = cache.run_and_load("features", inputs, compute,
                                  load=lambda folder: np.load(folder / "features.npy"))
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
from typing import Any, TypeVar

import numpy as np
from filelock import FileLock

from audit.core.io import atomic_write
from audit.core.progress import log

_SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``audit``, ``models``, ``probes`` and ``reports`` packages."""
CODE_LAYERS = (("audit/core",), ("audit/data",), ("models",), ("probes",), ("reports",),
               ("audit",))
"""Source folders of each layer, bottom first, as pyproject.toml's import contract orders
them (``tests/test_stages.py`` checks they agree); the last holds the application
(``audit.pipeline``, ``audit.jobs``, ...) and, inside it, the two layers at the bottom."""
_FILE_HASH_FOLDER = "file-hashes"
"""Folder of the cache root remembering the hashes of files (``StageCache.hash_file``)."""
MANIFEST_FILE = ".stage.json"
"""In every finished stage folder: its files' sizes, modification times and hashes."""
SMALL_FILE_BYTES = 1 << 20
"""Files up to this size are hashed on every reuse (cheap); larger ones when their
modification time changed or the cache verifies everything."""
QUARANTINE_FOLDER = "quarantine"
"""Folder of the cache root where stages that failed verification or loading are moved."""
Loaded = TypeVar("Loaded")


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


SHA256_HEX = 64  # ``hash_file``'s length for the whole SHA-256


def hash_file(path: str | Path, length: int = 16) -> str:
    """SHA-256 of the file's bytes, hex, its first ``length`` characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def code_layer(module: str) -> int:
    """Index in ``CODE_LAYERS`` of the layer holding module ``module`` (dotted name); the
    top layer for a module outside the packages."""
    path = module.replace(".", "/") + "/"
    for index, folders in enumerate(CODE_LAYERS):
        if any(path.startswith(folder + "/") for folder in folders):
            return index
    return len(CODE_LAYERS) - 1


def _hash_sources(layer: int) -> str:
    """SHA-256 of every ``*.py`` file of layers ``0..layer``, by relative path and bytes."""
    files = sorted({path for folders in CODE_LAYERS[:layer + 1] for folder in folders
                    for path in (_SOURCE_ROOT / folder).rglob("*.py")})
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(_SOURCE_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class StageEvent:
    stage: str
    key: str
    action: str  # "reused" or "computed"
    seconds: float


class StageCache:
    """A folder of finished stages, keyed by the hash of their inputs and code."""

    def __init__(self, root: str | Path, verify: bool = False):
        """Open (creating) the cache at ``root``.

        Args:
            root: The cache folder.
            verify: Hash every file of a stage before reusing it, not only the small and
                the modified ones. Defaults to False.
        """
        # Absolute, so jobs and records never depend on the working directory of one process.
        self.root = Path(os.path.abspath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.verify = verify
        self.events: list[StageEvent] = []
        self._code_hashes: dict[int, str] = {}  # layer -> its sources' hash, read once
        self._verified: set[Path] = set()  # folders found sound by this object

    def code_hash(self, compute: Callable) -> str:
        """Hash of the code ``compute`` may run: its layer and the layers below (module
        docstring), read once per cache object."""
        layer = code_layer(getattr(compute, "__module__", None) or "")
        if layer not in self._code_hashes:
            self._code_hashes[layer] = _hash_sources(layer)
        return self._code_hashes[layer]

    def key(self, stage: str, inputs: Any, compute: Callable) -> str:
        """The key ``run`` files ``compute``'s result of ``inputs`` under."""
        return stable_hash({"stage": stage, "code": self.code_hash(compute), "inputs": inputs})

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def hash_file(self, path: str | Path, length: int = 16) -> str:
        """``hash_file(path, length)``, remembered in the cache by the file's path, size,
        modification time and inode.

        A run puts the same weights file (up to 100 MB for ResNet50) into the keys of every
        classifier and feature stage, in every job; remembered here, each job and each run
        sharing the cache reads it once, until it changes.
        """
        stat = os.stat(path)
        memo = self.root / _FILE_HASH_FOLDER / stable_hash(
            [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino])
        if not memo.is_file():
            with atomic_write(memo) as handle:
                handle.write(hash_file(path, length=64))
        return memo.read_text()[:length]

    def run(self, stage: str, inputs: Any, compute: Callable[[Path], None]) -> Path:
        """Return the finished, verified folder of ``stage`` for ``inputs``, computing it if
        needed.

        ``compute(tmp_folder)`` writes the stage's files into ``tmp_folder``; the folder
        becomes visible under its key only after ``compute`` returned and its manifest was
        written. A folder that fails verification is moved aside and recomputed (module
        docstring).
        """
        return self._finished(stage, self.key(stage, inputs, compute), compute)[0]

    def run_and_load(self, stage: str, inputs: Any, compute: Callable[[Path], None],
                     load: Callable[[Path], Loaded]) -> Loaded:
        """``load(run(stage, inputs, compute))``, recomputing a reused stage that does not load.

        A reused folder whose files verify but make ``load`` raise (a truncated array the
        sizes did not catch, a record pointing at a stage that is gone) is logged, moved
        aside and computed once more, then loaded again. A folder computed by this call
        that does not load is moved aside too, and the error raised: computing it again
        would write the same files.
        """
        key = self.key(stage, inputs, compute)
        folder, reused = self._finished(stage, key, compute)
        identity = os.stat(folder).st_ino
        try:
            return load(folder)
        except Exception as error:
            self._discard(stage, key, f"does not load ({type(error).__name__}: {error})",
                          identity, recompute=reused)
            if not reused:
                raise
        return load(self._finished(stage, key, compute)[0])

    def problem(self, folder: str | Path) -> str | None:
        """Why the stage folder ``folder`` cannot be trusted (missing, no or unreadable
        manifest, a file added, missing, resized or with other content), or None.

        Sizes are always compared; hashes as the module docstring says. A folder found
        sound is remembered for the life of this object, so a stage reused many times in
        one run is verified once.
        """
        folder = Path(folder)
        if folder in self._verified:
            return None
        if not folder.is_dir():
            return "missing"
        try:
            files = json.loads((folder / MANIFEST_FILE).read_text())["files"]
            if not isinstance(files, dict):
                raise TypeError(f"files is a {type(files).__name__}, not a mapping")
        except FileNotFoundError:
            return f"no {MANIFEST_FILE} (written by older code or not by the cache): unverified"
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"{MANIFEST_FILE} unreadable ({type(error).__name__}: {error})"
        present = {path.relative_to(folder).as_posix() for path in folder.rglob("*")
                   if path.is_file()} - {MANIFEST_FILE}
        if extra := sorted(present - set(files)):
            return f"{extra[0]}: not listed in {MANIFEST_FILE} (added after the stage completed)"
        for name, recorded in files.items():
            try:
                problem = (self._file_problem(folder / name, recorded) if name in present
                           else "missing")
            except OSError as error:  # removed or replaced while being checked
                problem = f"unreadable ({error.strerror})"
            except (KeyError, TypeError):
                problem = f"its {MANIFEST_FILE} entry is malformed ({recorded!r})"
            if problem is not None:
                return f"{name}: {problem}"
        self._verified.add(folder)
        return None

    def _file_problem(self, path: Path, recorded: dict[str, Any]) -> str | None:
        """How the file at ``path`` differs from its manifest entry ``recorded``, or None."""
        stat = path.stat()
        if stat.st_size != recorded["size"]:
            return f"{stat.st_size} bytes, {MANIFEST_FILE} records {recorded['size']}"
        must_hash = (self.verify or stat.st_size <= SMALL_FILE_BYTES
                     or stat.st_mtime_ns != recorded["mtime_ns"])
        if must_hash and hash_file(path, length=64) != recorded["sha256"]:
            return f"content differs from the SHA-256 {MANIFEST_FILE} records"
        return None

    def _finished(self, stage: str, key: str, compute: Callable[[Path], None]) -> tuple[Path, bool]:
        """The verified folder of ``stage``/``key`` and whether it was reused (not computed)."""
        final = self.folder(stage, key)
        if final.is_dir() and self.problem(final) is None:
            self.events.append(StageEvent(stage, key, "reused", 0.0))
            return final, True
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            # Again under the lock: another process may have finished or replaced it.
            if final.is_dir():
                problem = self.problem(final)
                if problem is None:
                    self.events.append(StageEvent(stage, key, "reused", 0.0))
                    return final, True
                self._move_aside(stage, key, problem)
            self._remove_stale_tmp(final)
            tmp = final.with_name(f".{key}.tmp-{os.getpid()}")
            tmp.mkdir()
            started = time.perf_counter()
            try:
                compute(tmp)
                _write_manifest(tmp)
                _fsync_tree(tmp)
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            self._verified.add(final)
            self.events.append(StageEvent(stage, key, "computed", time.perf_counter() - started))
        return final, False

    def _discard(self, stage: str, key: str, reason: str, identity: int,
                 recompute: bool) -> None:
        """Move the folder of ``stage``/``key`` aside, unless another process already
        replaced it (its inode is no longer ``identity``)."""
        final = self.folder(stage, key)
        with FileLock(str(final) + ".lock"):
            if final.is_dir() and os.stat(final).st_ino == identity:
                self._move_aside(stage, key, reason, recompute)

    def _move_aside(self, stage: str, key: str, reason: str, recompute: bool = True) -> None:
        """Log why the stage folder is bad and move it into the quarantine (under its lock)."""
        final = self.folder(stage, key)
        # Nanoseconds too: one stage may be moved aside twice in a second.
        stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.{time.time_ns() % 10**9:09d}"
        target = self.root / QUARANTINE_FOLDER / f"{stage}-{key}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, target)
        self._verified.discard(final)
        log.warning("cache: stage %s key %s is bad: %s; moved to %s%s", stage, key, reason,
                    target, ", recomputing it" if recompute else "")

    @staticmethod
    def _remove_stale_tmp(final: Path) -> None:
        # Only called under the key's lock, so no live writer owns these folders.
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)


def _write_manifest(folder: Path) -> None:
    """Write ``MANIFEST_FILE`` into the stage folder ``folder``: each file's size,
    modification time and SHA-256, by its path relative to the folder."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            files[path.relative_to(folder).as_posix()] = {
                "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "sha256": hash_file(path, length=64)}
    with atomic_write(folder / MANIFEST_FILE) as handle:
        json.dump({"files": files}, handle, indent=1)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
