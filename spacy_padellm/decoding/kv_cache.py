"""The static KV cache of a ``StaticLM``: one (rows, kv_heads, cols, head_dim) tensor of keys and one of values per
layer, allocated ahead of a batch and kept between batches.

A row holds a tree of sequences (a document, and every label and mention branch after it); a column is one token's
keys and values. The last column is the trash column: padding tokens write there and no real token attends to it.
Sizes are powers of two (columns at least 64), so that few CUDA graphs are captured over them. Each layer is its own
tensor, so that widening copies one layer at a time.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

from .pass_layout import bucket

__all__ = ["KVCache"]


class KVCache:
    """The keys (``k``) and values (``v``) of every layer, ``rows`` x ``cols`` cells (None until ``reserve``).
    ``on_change`` is called whenever the tensors are reallocated or dropped (the StaticLM forgets its CUDA graphs,
    which captured the old ones)."""

    def __init__(self, n_layers: int, n_kv: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 on_change: Callable[[], None] = lambda: None):
        self.n_layers, self.n_kv, self.head_dim = n_layers, n_kv, head_dim
        self.dtype, self.device = dtype, device
        self.on_change = on_change
        self.k: Optional[List[torch.Tensor]] = None
        self.v: Optional[List[torch.Tensor]] = None
        self.rows = 0
        self.cols = 0
        # cells (rows x columns) that ``reserve`` keeps within when it can (None: no cap): a cache grown for one
        # batch is not kept at that size for the next if both together would pass it
        self.max_cells: Optional[int] = None

    @property
    def cell_bytes(self) -> int:
        """Bytes of one cell (a row's column): keys and values of every layer."""
        return 2 * self.n_layers * self.n_kv * self.head_dim * self.dtype.itemsize

    @property
    def trash_col(self) -> int:
        """The last column: padding tokens write there and no real token ever attends to it."""
        return self.cols - 1

    def reserve(self, rows: int, cols: int) -> None:
        """Hold at least ``rows`` x ``cols`` (one column is kept as the trash column).

        Growing reallocates the cache (its contents are dropped), so callers reserve before a batch, not during one.
        """
        rows, cols = bucket(rows), bucket(cols + 1, 64)
        if self.k is not None and rows <= self.rows and cols <= self.cols:
            return
        union = max(rows, self.rows), max(cols, self.cols)
        if self.max_cells is None or union[0] * union[1] <= self.max_cells:
            rows, cols = union
        self.k = self.v = None
        self.on_change()
        self.k, self.v = self._zeros(rows, cols), self._zeros(rows, cols)
        self.rows, self.cols = rows, cols

    def _zeros(self, rows: int, cols: int) -> List[torch.Tensor]:
        return [torch.zeros((rows, self.n_kv, cols, self.head_dim), dtype=self.dtype, device=self.device)
                for _ in range(self.n_layers)]

    def widen(self, cols: int, rows: Optional[int] = None) -> None:
        """Hold at least ``cols`` columns (one kept as the trash column), keeping what the first ``rows`` rows hold
        (default: all; the others are dropped): each layer is copied into its wider tensor in turn, so the old cache
        is never held whole next to the new one."""
        cols = bucket(cols + 1, 64)
        rows = self.rows if rows is None else min(bucket(rows), self.rows)
        if self.k is None or cols <= self.cols:
            return
        self.on_change()
        old = self.cols
        for cache in (self.k, self.v):
            for i, layer in enumerate(cache):
                wide = torch.zeros((rows, self.n_kv, cols, self.head_dim), dtype=self.dtype, device=self.device)
                wide[:, :, :old] = layer[:rows]
                cache[i] = wide
                del layer
        self.rows, self.cols = rows, cols

    def release(self) -> None:
        """Drop the tensors (the next batch reserves again)."""
        self.k = self.v = None
        self.on_change()
        self.rows = self.cols = 0

    def move_rows(self, dst: Sequence[int], src: Sequence[int], upto_col: int) -> None:
        """Row ``dst[i]`` takes what row ``src[i]`` holds (columns below ``upto_col``), for compaction; no row may be
        both a source and a destination. Only those rows are read and written."""
        idx = torch.tensor([list(dst), list(src)], dtype=torch.long)
        if self.device.type == "cuda":  # from pinned memory, queued: a pageable copy would wait for the device
            idx = idx.pin_memory().to(self.device, non_blocking=True)  # (PyTorch keeps the block until it is read)
        elif self.device.type != "cpu":
            idx = idx.to(self.device)
        for cache in (self.k, self.v):
            for layer in cache:
                part = layer[:, :, :upto_col]
                part.index_copy_(0, idx[0], part.index_select(0, idx[1]))
