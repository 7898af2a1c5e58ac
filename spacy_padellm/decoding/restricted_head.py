"""The LM head restricted to some tokens: a ``StaticLM``'s greedy choice made among them alone, the head's matrix
product over their rows only (``StaticLM.restrict_head``).

Eagerly the rows are gathered at their own number. Under CUDA graphs they go to a buffer of
``bucket(len(ids), HEAD_ROWS_MIN)`` rows, filled on the device in stream order (a pass in flight reads the rows it was
launched with), the rest of the buffer at -inf: graphs are captured per buffer size and serve every batch whose tokens
fit.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .pass_layout import bucket
from .quantize import head_rows

__all__ = ["HEAD_ROWS_MIN", "RestrictedHead"]

# Under CUDA graphs a restricted LM head is held in a buffer of a power of two rows, at least this many.
HEAD_ROWS_MIN = 1024


class RestrictedHead:
    """The tokens a head is restricted to: ``ids`` (their token ids, in a buffer's order), ``rows`` (the head's rows
    of them) and, in a buffer, ``pad`` (what each row adds to its logit: 0, or -inf past the tokens); all None while
    the head is whole."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ids: Optional[torch.Tensor] = None
        self.rows = None
        self.pad: Optional[torch.Tensor] = None
        self._buffers: Dict[int, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # by their rows

    @property
    def buffer_rows(self) -> int:
        """The rows of the buffer in use (0: none), a part of a CUDA graph's shape."""
        return 0 if self.pad is None else int(self.pad.shape[0])

    def restrict(self, lm_head, ids: Optional[Sequence[int]], buffered: bool) -> bool:
        """Restrict ``lm_head`` (a float tensor, or a quantized head) to ``ids`` (None: make it whole again), in a
        buffer (``buffered``: under CUDA graphs) or at their own number. Returns whether it is restricted: an int8
        head stays whole, and so does any head not a float one in a buffer, or whose buffer would be no smaller than
        the head."""
        self.ids = self.rows = self.pad = None
        if ids is None:
            return False
        index = np.array(sorted(set(ids)), dtype=np.int64)
        if buffered:
            return self._into_buffer(lm_head, index)
        index = torch.from_numpy(index).to(self.device)
        rows = head_rows(lm_head, index)
        if rows is not None:
            self.ids, self.rows = index, rows
        return rows is not None

    def _into_buffer(self, lm_head, index: np.ndarray) -> bool:
        cap, n = bucket(len(index), HEAD_ROWS_MIN), len(index)
        if not isinstance(lm_head, torch.Tensor) or cap >= lm_head.shape[0]:
            return False
        if cap not in self._buffers:
            self._buffers[cap] = (torch.zeros((cap, lm_head.shape[1]), dtype=lm_head.dtype, device=self.device),
                                  torch.zeros(cap, dtype=torch.long, device=self.device),
                                  torch.zeros(cap, dtype=torch.float32, device=self.device))
        rows, ids, pad = self._buffers[cap]
        src = torch.from_numpy(index)
        ids[:n].copy_(src.pin_memory() if self.device.type == "cuda" else src, non_blocking=True)
        ids[n:].zero_()
        torch.index_select(lm_head, 0, ids[:n], out=rows[:n])
        rows[n:].zero_()
        pad[:n] = 0.0
        pad[n:] = float("-inf")
        self.ids, self.rows, self.pad = ids, rows, pad
        return True
