"""A pass's attention mask as the rows of its real tokens, bit-packed for the upload and laid out on the device.

A pass is laid out as B rows x T places over S cache columns, and its attention mask is (B, T, S): what each place
attends to. Most places of a wide pass are padding (they attend to column 0 only), a bool per cell is eight times
the bits it holds, and the tokens of a chain fed in one pass differ only in how much of their own chain they see.
So the host gives the mask as a ``RowMask``: the places of the real tokens, what each one's branch sees, and each
one's chain (its first and past-last cache columns). The pass's inputs carry one bit-packed row and one chain per
token it computes (a packed pass's real tokens and padding, or every place of a dense one, ``upload``), and
``unpack`` lays them out as the (B, T, S) mask on the device (inside the CUDA graph): a token sees its chain's
columns up to its own and none after it, and every place no token fills attends to column 0.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

__all__ = ["RowMask", "upload", "unpack"]


class RowMask:
    """The (B, T, S) attention mask of a pass: ``seen`` (N, S) bools, what its N real tokens' branches see, at flat
    places ``places`` (N,) = b * T + t, ascending; ``chains`` (N, 2), each token's chain as its first and past-last
    cache columns (None: each token sees what ``seen`` says, nothing added); every other place attends to column 0
    only."""

    __slots__ = ("places", "seen", "shape", "chains", "slots")

    def __init__(self, places: np.ndarray, seen: np.ndarray, shape: Tuple[int, int, int],
                 chains: Optional[np.ndarray] = None, slots: Optional[np.ndarray] = None):
        if seen.shape != (len(places), shape[2]):
            raise ValueError(f"RowMask: {seen.shape} rows for {len(places)} places of {shape[2]} columns")
        if (chains is None) != (slots is None):
            raise ValueError("RowMask: a token's chain needs its own cache column (slots)")
        self.places, self.seen, self.shape, self.chains, self.slots = places, seen, shape, chains, slots

    @classmethod
    def of(cls, mask: np.ndarray, places: np.ndarray) -> "RowMask":
        """The rows of a (B, T, S) ``mask`` at ``places``."""
        return cls(places, mask.reshape(-1, mask.shape[-1])[places], mask.shape)

    def rows(self) -> np.ndarray:
        """What each real token attends to: (N, S), its chain's causal part applied."""
        seen = self.seen
        if self.chains is None:
            return seen
        cols = np.arange(seen.shape[1])
        return _causal(seen, cols, self.chains[:, :1], self.chains[:, 1:], self.slots[:, None])

    def dense(self) -> np.ndarray:
        """The (B, T, S) mask."""
        B, T, S = self.shape
        mask = np.zeros((B * T, S), dtype=bool)
        mask[:, 0] = True
        mask[self.places] = self.rows()
        return mask.reshape(B, T, S)

    def any_last(self) -> bool:
        """Whether a token attends to the last column."""
        last = self.shape[2] - 1
        col = self.seen[:, last]
        if self.chains is not None:
            col = np.where((self.chains[:, 0] <= last) & (last < self.chains[:, 1]), last <= self.slots, col)
        return bool(col.any())


def _causal(seen, cols, start, end, slot):
    """``seen`` with the columns [start, end) of each row's chain replaced by those up to its own column ``slot``
    (numpy or torch alike)."""
    block = (cols >= start) & (cols < end)
    return (seen & ~block) | (block & (cols <= slot))


def upload(mask: RowMask, L: int, packed: bool) -> Tuple[np.ndarray, np.ndarray]:
    """The mask as a pass of L tokens computes it: each token's row bit-packed (little-endian; (L, ceil(S / 8))
    uint8) and its chain ((L, 2) int64; padding: an empty one). ``packed``: the first N tokens are the real ones, the
    rest padding (column 0); else the L = B * T places."""
    S = mask.shape[2]
    bits = np.zeros((L, (S + 7) // 8), dtype=np.uint8)
    bits[:, 0] = 1  # column 0
    chains = np.zeros((L, 2), dtype=np.int64)
    at = slice(0, len(mask.places)) if packed else mask.places
    bits[at] = np.packbits(mask.seen, axis=1, bitorder="little")
    if mask.chains is not None:
        chains[at] = mask.chains
    return bits, chains


def unpack(bits: torch.Tensor, chains: torch.Tensor, slots: torch.Tensor, scatter: Optional[torch.Tensor], B: int,
           T: int, S: int) -> torch.Tensor:
    """The (B, T, S) bool mask of a pass from its ``upload`` (on its device), ``slots`` each token's cache column: a
    dense pass's rows are its places; a packed pass's go to the places ``scatter`` names (padding tokens to the spare
    place B * T), and every place no token fills attends to column 0."""
    dev = bits.device
    rows = ((bits.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8, device=dev)) & 1).view(bits.shape[0], -1)
    cols = torch.arange(S, device=dev)
    rows = _causal(rows[:, :S].bool(), cols, chains[:, :1], chains[:, 1:], slots[:, None])
    if scatter is None:
        return rows.reshape(B, T, S)
    mask = torch.zeros((B * T + 1, S), dtype=torch.bool, device=dev)
    mask[:, 0] = True
    mask.index_copy_(0, scatter, rows)
    return mask[: B * T].view(B, T, S)
