"""Fixtures shared by every test module: where the read-only shared folder is.

The shared folder (real radiographs, ImageNet weights) sits next to the repository, at
``../shared``; tests that need it skip cleanly where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
REAL_DATA = SHARED_DIR / "data" / "cxr-real" / "metadata.csv"
WEIGHTS_DIR = SHARED_DIR / "weights"


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
