"""Keep large XLA temporaries mapped between calls (glibc only).

XLA on CPU allocates each temporary of a jitted call afresh; glibc serves blocks above its mmap
threshold with new ``mmap`` pages and unmaps them on free, so every call pays the page faults of
first-touching its temporaries again (measured: ≈ 10 % of an energy+force call of the 1080-atom
water box, and half of an energy-only call). Raising the mmap and trim thresholds lets freed memory
be reused instead. The cost is that the process keeps its peak heap mapped.

This changes process-wide allocator settings, so the library never does it on import: the ``jnnp``
command line and the benchmark scripts call `tune_allocator`; notebook users may call it too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 4 << 30,
                   top_pad: int = 256 << 20) -> bool:
    """Set glibc's malloc thresholds [bytes]; returns False (and does nothing) where not
    applicable (not Linux/glibc, or ``JNNP_NO_ALLOCATOR_TUNING`` is set)."""
    if not sys.platform.startswith("linux") or os.environ.get("JNNP_NO_ALLOCATOR_TUNING"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))  # glibc caps this at 32 MiB on 64-bit
    ok &= mallopt(_M_TRIM_THRESHOLD, min(int(trim_threshold), 2**31 - 1))
    ok &= mallopt(_M_TOP_PAD, int(top_pad))
    return bool(ok)
