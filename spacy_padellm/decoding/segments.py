"""Attention of an eager pass in segments of rows of like width: the static engine's layout on the CPU.

A pass is laid out as B rows x T places attending to S cache columns, T and S set by its widest row. On a GPU
(CUDA graphs, one kernel per layer) that padding is nearly free; on the CPU attention costs what it computes,
and in a decoding pass one document feeding all its mention tags can make T 30 times what most rows use.
So the rows are cut into contiguous segments (``plan``), each attending at its own widest row's places and
columns: one attention call per segment and layer, on views of the cache's rows (nothing copied). The
projections and MLPs run on the real tokens only, as in a packed pass.

Padding places inside a segment attend to column 0 only, as in the full layout; masked columns add nothing,
so a token's attention is the same as in the full layout up to float rounding.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SEGMENT_COST", "Segments", "plan"]

# What one more segment costs, in attention cells (a query place x a cache column, all heads): an attention
# call and its slicing per layer, measured on SmolLM2-135M on the CPU.
SEGMENT_COST = 4096


def plan(places: np.ndarray, cols: np.ndarray, cost: int = SEGMENT_COST) -> List[Tuple[int, int]]:
    """Contiguous segments [r0, r1) of the rows that feed tokens (``places[b]`` > 0) that minimise the attention
    cells computed (rows x widest places x widest columns of each segment) plus ``cost`` per segment; rows that
    feed nothing are left out where that saves cells."""
    B = len(places)
    best = np.full(B + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(B + 1, dtype=np.int64)  # the start of the last segment ending at j; -1: row j-1 is skipped
    for j in range(1, B + 1):
        if places[j - 1] == 0:
            best[j], cut[j] = best[j - 1], -1
            continue
        i = np.arange(j - 1, -1, -1)  # segment starts, nearest first
        widest = np.maximum.accumulate(places[i]) * np.maximum.accumulate(cols[i])
        total = best[i] + (j - i) * widest + cost
        k = int(np.argmin(total))
        best[j], cut[j] = total[k], i[k]
    out, j = [], B
    while j > 0:
        if cut[j] < 0:
            j -= 1
            continue
        out.append((int(cut[j]), j))
        j = int(cut[j])
    return out[::-1]


class Segments:
    """The layout of one eager pass: its real tokens, and the segments their attention runs in.

    Built on the host from the pass's (B, T) tokens and slots and its (B, T, S) mask: ``real`` are the flat
    places b * T + t of its real tokens (what the projections run on, in that order); ``rows`` each one's
    cache row. ``attend`` then computes every real token's attention output."""

    def __init__(self, slots: np.ndarray, mask: np.ndarray, trash: int, cost: int = SEGMENT_COST):
        B, T, S = mask.shape
        flat = slots.reshape(-1)
        self.real = np.flatnonzero(flat != trash)
        row, place = np.divmod(self.real, T)
        self.rows = row
        places = np.zeros(B, dtype=np.int64)
        np.maximum.at(places, row, place + 1)
        seen = mask.any(axis=1)  # (B, S): the columns a row's tokens attend to
        cols = np.where(places > 0, S - np.argmax(seen[:, ::-1], axis=1), 0)
        self.parts: List[Tuple[int, int, int, int, int]] = []  # (r0, r1, places, columns, first place)
        at = 0
        where = np.full(B, -1, dtype=np.int64)  # each row's first place in the segmented layout
        width = np.zeros(B, dtype=np.int64)
        for r0, r1 in plan(places, cols, cost):
            t, s = int(places[r0:r1].max()), int(cols[r0:r1].max())
            self.parts.append((r0, r1, t, s, at))
            where[r0:r1] = at + np.arange(r1 - r0) * t
            width[r0:r1] = t
            at += (r1 - r0) * t
        self.n_places = at
        self.place = where[row] + place  # each real token's place in the segmented layout
        self._masks = [np.ascontiguousarray(mask[r0:r1, :t, :s]) for r0, r1, t, s, _ in self.parts]
        self._tensors: Optional[Dict] = None

    @property
    def cells(self) -> int:
        """Attention cells the segments compute (places x columns)."""
        return sum((r1 - r0) * t * s for r0, r1, t, s, _ in self.parts)

    def prepare(self, device, dtype: torch.dtype, group: int, windows: Sequence[int], windowed) -> None:
        """Move the layout to ``device``: each segment's additive mask for ``group`` query heads per KV head (and
        one per sliding window, from ``windowed(mask, window)``), and the token -> place index."""
        from .static_lm import StaticLM

        masks = []
        for m in self._masks:
            m = torch.from_numpy(m).to(device)
            per = {None: StaticLM._additive(m, group, dtype)}
            for w in windows:  # a window as wide as the segment's columns keeps them all
                per[w] = per[None] if m.shape[-1] <= w else StaticLM._additive(windowed(m, w), group, dtype)
            masks.append(per)
        place = torch.from_numpy(self.place).to(device)
        self._tensors = {"masks": masks, "place": place, "group": group}

    def attend(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, window: Optional[int],
               scale: float) -> torch.Tensor:
        """Attention outputs (N, H * D) of the real tokens' queries ``q`` (N, H, D) over one layer's cache
        (rows, kv heads, columns, D)."""
        N, H, D = q.shape
        g = self._tensors["group"]
        Hkv = H // g
        place = self._tensors["place"]
        laid = q.new_zeros((self.n_places, H, D)).index_copy_(0, place, q)
        outs = []
        for (r0, r1, t, s, at), masks in zip(self.parts, self._tensors["masks"]):
            n = r1 - r0
            qs = laid[at: at + n * t].view(n, t, H, D).permute(0, 2, 1, 3).reshape(n, Hkv, g * t, D)
            o = F.scaled_dot_product_attention(qs, k_cache[r0:r1, :, :s], v_cache[r0:r1, :, :s],
                                               attn_mask=masks[window], scale=scale)
            outs.append(o.reshape(n, H, t, D).transpose(1, 2).reshape(n * t, H * D))
        o = outs[0] if len(outs) == 1 else torch.cat(outs)
        return o.index_select(0, place)
