"""Paths shared by the tests (imported as ``from _shared import ...``; tests/ is on sys.path)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"


def shared_path(*parts) -> Path:
    """Path inside ../shared/data; the calling test is skipped when it is missing."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p
