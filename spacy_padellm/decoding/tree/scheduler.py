"""Batches: how a call's documents are cut into batches, and how several batches are kept in flight.

A batch is a job: given a KV cache (a ``StaticLM``), a generator that yields its ``TreeBatch`` whenever a
pass is queued on it and is sent that pass's outputs back. ``drive`` runs the jobs ``inflight`` at a time,
each on a cache of its own: one batch's pass is launched before another's result is waited for, so the
device runs one pass while the host lays out the next batch's (this helps when a call has several batches
and the device runs passes asynchronously). Each batch decodes exactly as it would alone.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, List, Optional, Sequence

from ..static_lm import StaticLM
from ..types import DecoderStats


def chunks(items: Sequence[int], sizes: Sequence[int], max_docs: int, max_tokens: int,
           fits: Optional[Callable[[int, int], bool]] = None) -> List[List[int]]:
    """``items`` cut, in order, into batches of at most ``max_docs`` items and ``max_tokens`` summed sizes, and,
    given ``fits(n, widest)`` (whether a batch of n items whose largest size is ``widest`` fits in memory),
    batches that fit (an item too large for any of that alone gets a batch of its own)."""
    out, cur, tokens, widest = [], [], 0, 0
    for i, size in zip(items, sizes):
        if cur and (len(cur) >= max_docs or tokens + size > max_tokens
                    or (fits is not None and not fits(len(cur) + 1, max(widest, size)))):
            out.append(cur)
            cur, tokens, widest = [], 0, 0
        cur.append(i)
        tokens += size
        widest = max(widest, size)
    if cur:
        out.append(cur)
    return out


def _send(gen, value):
    """``gen.send(value)``, or None when the generator has finished."""
    try:
        return gen.send(value)
    except StopIteration:
        return None


def drive(jobs: Iterable[Callable], cache: Callable[[int], StaticLM], inflight: int, stats: DecoderStats) -> None:
    """Run ``jobs``, ``inflight`` at a time, job j on ``cache(i)`` for a free i < ``inflight``; every pass counts
    in ``stats.forward_passes``."""
    jobs = iter(jobs)
    free = list(range(inflight))[::-1]
    flying = deque()

    def start() -> bool:
        for job in jobs:
            i = free.pop()
            gen = job(cache(i))
            tb = next(gen, None)
            if tb is None:
                free.append(i)
                continue
            flying.append((gen, tb.launch(), i))
            return True
        return False

    try:
        while free and start():
            pass
        while flying:
            gen, launched, i = flying.popleft()
            out = launched.result()
            stats.forward_passes += 1
            tb = _send(gen, out)
            if tb is None:  # the batch is done
                free.append(i)
                start()
            else:
                flying.append((gen, tb.launch(), i))
    except BaseException:
        for _, launched, _ in flying:  # a failing batch: let the others' queued passes finish before their
            try:  # caches and pinned buffers are used again
                launched.result()
            except Exception:  # noqa: BLE001 - the first error is the one raised
                pass
        raise
