"""Strict test environment: float64 on; paths to shared data live in _shared.py."""

import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
jax.config.update("jax_enable_x64", True)

from _shared import REPO, SHARED_DATA, TEST_DATA, shared_path  # noqa: E402,F401
