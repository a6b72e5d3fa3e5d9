"""Fixtures shared by every test module: where the read-only shared folder is.

The shared folder (real radiographs, ImageNet weights) sits next to the repository, at
``../shared``; tests that need it skip cleanly where it is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
REAL_DATA = SHARED_DIR / "data" / "cxr-real" / "metadata.csv"
WEIGHTS_DIR = SHARED_DIR / "weights"
MOBILENET_V2_035 = WEIGHTS_DIR / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
"""ImageNet MobileNetV2 0.35 (224 px file): the backbone of most trained-network tests."""


def cxr_audit(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run the ``cxr-audit`` console command (quiet) in-process; its exit code."""
    from audit import cli

    monkeypatch.setattr(sys, "argv", ["cxr-audit", "--quiet", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    return stop.value.code


@pytest.fixture
def shared_dir() -> Path:
    """The shared folder next to the repository (skips the test when it is absent)."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared folder {SHARED_DIR} not present")
    return SHARED_DIR


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``real_data`` skip when ``../shared/data/cxr-real`` is absent."""
    if REAL_DATA.is_file():
        return
    skip = pytest.mark.skip(reason=f"real data {REAL_DATA} not present")
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)
