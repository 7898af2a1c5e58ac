"""Pausing Python's cyclic garbage collector around a batch of host-heavy decoding work."""

from __future__ import annotations

import gc
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector for a decode call or a batch of the component (reference
    counting still frees what the call drops): the many short-lived objects of a large batch set off
    collections that walk the whole heap, about a fifth of nlp.pipe's host time at 2048 docs per call
    (benchmarks/host_overhead.py)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
