"""Giving freed memory back to the operating system.

glibc keeps the memory of freed tensors in its heap rather than returning it: after a model's weights are
de-quantised (many large temporary arrays) or a batch's KV cache is freed, the process's resident memory
stays where it peaked. ``trim_heap`` asks the C library to return what is free (``malloc_trim``); where the
C library has no such call (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

__all__ = ["trim_heap"]


@lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def trim_heap() -> bool:
    """Return the C heap's free memory to the operating system; whether the C library could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
