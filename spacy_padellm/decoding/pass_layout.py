"""How one forward pass of ``StaticLM`` is laid out on the host: the shape buckets it runs at, padding to them, and
the packed layout that feeds only its real tokens.

A pass is B rows x T places over S cache columns, with M outputs to read. Under CUDA graphs every shape is rounded up
to a bucket (powers of two, finer for one row's T, and for tokens and outputs ``step_bucket``'s buckets where
``bucket_steps`` asks for them), so that few graphs are captured. A pass whose bucket of real tokens is smaller than
its B x T places runs *packed*: its projections and MLPs see the real tokens alone (and padding up to a bucket of tokens),
and attention finds each at its place in the (B, T) layout. Numpy only; nothing here touches the
device.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

__all__ = ["FINE_FROM", "bucket", "dense_inputs", "fine_bucket", "out_bucket", "pad_step", "padded_shape",
           "packed_inputs", "round_up", "step_bucket"]

FINE_FROM = 256  # above this, a single-row pass's width is rounded up to a multiple of FINE_FROM // 2, not a power of two


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` >= max(n, 1)."""
    return -(-max(int(n), 1) // multiple) * multiple


def bucket(n: int, minimum: int = 1) -> int:
    """The next power of two >= max(n, minimum)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


def step_bucket(n: int, steps: int = 1, minimum: int = 1) -> int:
    """The smallest bucket >= max(n, minimum) of at most ``steps`` a doubling: with 1 the next power of two
    (``bucket``), with 4 the multiples of a quarter of the power of two below (..., 64, 80, 96, 112, 128, 160, ...);
    below 2 * ``steps``, where a doubling holds fewer whole numbers than that, the power of two."""
    b = bucket(n, minimum)
    half = b // 2
    if steps <= 1 or half < steps:
        return b
    return min(b, half + round_up(max(int(n), minimum) - half, -(-half // steps)))


def fine_bucket(n: int, minimum: int = 1) -> int:
    """``bucket(n, minimum)`` up to FINE_FROM, then the next multiple of FINE_FROM // 2 (384, 512, 640, ...)."""
    n = max(int(n), minimum)
    if n <= FINE_FROM:
        return bucket(n)
    step = FINE_FROM // 2
    return -(-n // step) * step


def out_bucket(n: int, B: int, T: int, steps: int = 1) -> int:
    """The bucket of ``n`` wanted outputs of a pass of B rows x T places: one of ``steps`` a doubling
    (``step_bucket``), capped by T for one row (its outputs are among its T places, and T may be a finer bucket than
    a power of two), unless the row wants some place more than once."""
    b = step_bucket(n, steps)
    return min(b, T) if B <= 1 and n <= T else b


def padded_shape(B: int, T: int, S: int, O: int, cols: int) -> Tuple[int, int, int, int]:
    """The shape bucket (B, T, S, O) of a pass of B rows x T places over S of a cache's ``cols`` columns, with O
    outputs a row. One row (batch size 1) gets a finer T, since its wide first pass is mostly drafts (a pass of 359
    tokens runs at 384, not 512); S stays a power of two, so that few more CUDA graphs are captured."""
    if B <= 1:
        Tb = fine_bucket(T)
        return 1, Tb, min(bucket(S, 64), cols), out_bucket(O, 1, Tb)
    return bucket(B), bucket(T), min(bucket(S, 64), cols), bucket(O)


def pad_step(tokens, positions, slots, mask, out_idx, Bb: int, Tb: int, Sb: int, Ob: int, trash: int):
    """A step's (B, T) tokens, positions and cache slots, its (B, T, S) mask and (B, O) output places, padded to
    (Bb, Tb, Sb, Ob): added padding writes to the ``trash`` column and attends to column 0 only, so no attention row
    is empty (the caller's own padding tokens come with the trash slot and column 0 already)."""
    B, T = tokens.shape
    S, O = mask.shape[-1], out_idx.shape[1]
    t = np.zeros((Bb, Tb), dtype=np.int64)
    p = np.zeros((Bb, Tb), dtype=np.int64)
    s = np.full((Bb, Tb), trash, dtype=np.int64)
    m = np.zeros((Bb, Tb, Sb), dtype=bool)
    o = np.zeros((Bb, Ob), dtype=np.int64)
    t[:B, :T], p[:B, :T], s[:B, :T], o[:B, :O] = tokens, positions, slots, out_idx
    m[:B, :T, :S] = mask
    m[:B, T:, 0] = True
    m[B:, :, 0] = True
    return t, p, s, m, o


def packed_inputs(tokens: np.ndarray, positions: np.ndarray, flat_slots: np.ndarray, real: np.ndarray,
                  outputs: np.ndarray, L: int, trash: int) -> Tuple[List[np.ndarray], np.ndarray]:
    """The inputs of a packed pass of L tokens (its N = len(``real``) real ones first, padding after them) from a
    (B, T) layout whose real tokens are at the flat places ``real``: (token ids, positions, cache slots, cache rows,
    each token's place (padding: the spare place B * T), the place its attention output is read from (padding: 0)),
    and each of the ``outputs`` (flat places) as the index of its token."""
    B, T = tokens.shape
    N = len(real)
    where = np.zeros(B * T, dtype=np.int64)
    where[real] = np.arange(N)
    columns = [(tokens.reshape(-1)[real], 0), (positions.reshape(-1)[real], 0), (flat_slots[real], trash),
               (real // T, 0), (real, B * T), (real, 0)]
    arrays = []
    for values, fill in columns:
        a = np.full(L, fill, dtype=np.int64)
        a[:N] = values
        arrays.append(a)
    return arrays, where[outputs]


def dense_inputs(tokens: np.ndarray, positions: np.ndarray, flat_slots: np.ndarray) -> List[Optional[np.ndarray]]:
    """The inputs of a dense pass (every place of its (B, T) layout a token) in ``packed_inputs``' order: no place
    map, since token i is place i."""
    B, T = tokens.shape
    return [tokens.reshape(-1), positions.reshape(-1), flat_slots, np.repeat(np.arange(B), T), None, None]
