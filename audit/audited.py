"""What was audited, named the way a reviewer can check it on another machine.

``AuditResult.audited`` holds the audited model (its file relative to the run folder, or
its file name for an external model, the file's SHA-256 and the model's identity hash),
the data (manifest file name, rows, SHA-256, sources), the tool (version, git commit when
it runs from a checkout) and the date; the gate adds the policy (``audit.gate``). Every
value is computed here, before the reports, which only show it.

``portable`` rewrites the paths a result would otherwise carry (provenance, model records,
quarantined rows) relative to a folder the reader has, or to their file names: a report or
``summary.json`` says nothing about the machine that ran it. ``config.resolved.yaml`` in
the run folder keeps the full paths for re-running.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from audit.core.cache import SHA256_HEX, hash_file

if TYPE_CHECKING:
    from audit.data.dataset import Dataset
    from models.trained import TrainedModel

TOOL = "cxr-shortcut-audit"
# An absolute POSIX path inside free text (e.g. "imagenet (local file /a/b.h5, sha256 ..)"):
# a slash not after a word character, with at least one more slash, up to a separator.
_ABSOLUTE_IN_TEXT = re.compile(r"(?<![\w.~])/(?:[^/\s,;()'\"]+/)+[^/\s,;()'\"]*")


def model_identity(model: TrainedModel, model_file: Path, run_dir: Path,
                   spec_file: Path | None = None) -> dict[str, Any]:
    """The audited model: file (run-relative or its name), file SHA-256, identity hash,
    backbone, input mode, whether it was trained here, and an external model's spec file.

    Args:
        model: The audited model as loaded.
        model_file: Its Keras file.
        run_dir: The run folder; a file inside it is named relative to it.
        spec_file: An external model's preprocessing spec. Defaults to None (trained here).
    """
    identity = {"key": model.key, "file": display_path(model_file, run_dir),
                "sha256": hash_file(model_file, SHA256_HEX), "identity": model.identity,
                "backbone": model.backbone, "input_mode": model.input_mode,
                "trained_here": spec_file is None}
    if spec_file is not None:
        identity["spec_file"] = display_path(spec_file, run_dir)
        identity["spec_sha256"] = hash_file(spec_file, SHA256_HEX)
    return identity


def data_identity(dataset: Dataset, manifest_file: Path, synthetic: str | None) -> dict[str, Any]:
    """The audited data: manifest file name, its rows (used and excluded), SHA-256, sources.

    Args:
        dataset: The loaded data.
        manifest_file: The manifest read (for synthetic data, the one generated).
        synthetic: How synthetic data was generated, None for the user's manifest.
    """
    return {"manifest": manifest_file.name, "sha256": hash_file(manifest_file, SHA256_HEX),
            "rows": len(dataset) + len(dataset.quarantined), "rows_used": len(dataset),
            "rows_excluded": len(dataset.quarantined),
            "sources": sorted(set(map(str, dataset.sources))), "synthetic": synthetic,
            "data_hash": dataset.manifest_hash}


def tool_identity() -> dict[str, str | None]:
    """This tool's installed version and the git commit of its source, each None when
    unknown (an installed wheel has no commit; git may be missing)."""
    try:
        version = metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        version = None
    return {"name": TOOL, "version": version, "git_commit": _git_commit()}


def _git_commit() -> str | None:
    """HEAD of the checkout this package runs from; None when the package folder is not
    the top of a git checkout (an installed wheel inside some other repository included)."""
    root = Path(__file__).resolve().parents[1]  # the checkout holds audit/, models/, ...
    try:
        done = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1] if re.fullmatch(r"[0-9a-f]{40}", lines[1]) else None


def audit_date() -> str:
    """Now, in UTC, ISO 8601 to the second (``2026-12-02T06:30:00Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def display_path(path: str | PurePath, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside it, else its file name."""
    path = Path(path)
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


def portable(value: Any, base: Path) -> Any:
    """``value`` (JSON-able) with every absolute path in its strings rewritten by
    ``display_path`` against ``base``; the rest unchanged."""
    if isinstance(value, dict):
        return {key: portable(item, base) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, base) for item in value]
    if isinstance(value, str):
        if Path(value).is_absolute():
            return display_path(value, base)
        return _ABSOLUTE_IN_TEXT.sub(lambda match: display_path(match.group(), base), value)
    return value
