"""`jnnp.allocator.tune_allocator`: applies on glibc, opt-out by environment variable."""

import sys

import pytest

from jnnp.allocator import tune_allocator


def test_opt_out(monkeypatch):
    monkeypatch.setenv("JNNP_NO_ALLOCATOR_TUNING", "1")
    assert tune_allocator() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_applies_on_linux(monkeypatch):
    monkeypatch.delenv("JNNP_NO_ALLOCATOR_TUNING", raising=False)
    import ctypes.util

    if "musl" in (ctypes.util.find_library("c") or ""):
        pytest.skip("not glibc")
    assert tune_allocator() is True
