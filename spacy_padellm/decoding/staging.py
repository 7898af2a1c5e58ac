"""A pass's trip between host and device: its inputs staged in one buffer and uploaded in one copy, its result read
back in one, and, under CUDA graphs, the pass captured once per shape bucket and replayed.

Every copy is queued on the device's stream from pinned host memory, so the host never waits for a pass it launches:
``Pending.result()`` is where it waits. The pinned buffers are reused pass after pass (``HostBuffers``), which is
why a ``StaticLM``'s next launch must come after the last one's ``result()``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np
import torch

from .pass_layout import bucket

if TYPE_CHECKING:
    from .static_lm import StaticLM

__all__ = ["CapturedPass", "HostBuffers", "Inputs", "Pending"]

# the inputs of a pass, in ``Inputs`` order: (token ids, positions, cache slots, cache rows, places, gathers,
# the mask's bit-packed rows, outputs, chains)
N_INPUTS = 9


class Inputs:
    """A pass's inputs on the device as views of one byte buffer (``staging``), filled by a single copy from pinned
    host memory (``HostBuffers.upload``): int64 ones first (8-byte aligned), the mask's bit-packed rows last
    (``row_mask``). ``key``: the pass's (packed, L, B, T, S, M, ...); ``spans`` holds each input's (start, end) byte
    range (None: absent, as a dense pass's places)."""

    def __init__(self, device: torch.device, key: Tuple[int, ...], zeroed: bool = True):
        packed, L, B, T, S, M = key[:6]
        shapes = [(L,), (L,), (L,), (L,), (L,) if packed else None, (L,) if packed else None, (L, (S + 7) // 8), (M,),
                  (L, 2)]
        dtypes = [torch.int64] * 6 + [torch.uint8, torch.int64, torch.int64]
        order = [0, 1, 2, 3, 4, 5, 7, 8, 6]  # the mask's bytes after every int64 input
        self.spans: List[Optional[Tuple[int, int]]] = [None] * N_INPUTS
        at = 0
        for i in order:
            if shapes[i] is not None:
                n = math.prod(shapes[i]) * (8 if dtypes[i] is torch.int64 else 1)
                self.spans[i] = (at, at + n)
                at += n
        self.nbytes = at
        # an eager pass's buffer is filled whole by its upload; a graph's holds valid inputs for its capture
        self.staging = (torch.zeros if zeroed else torch.empty)(self.nbytes, dtype=torch.uint8, device=device)
        self.views = [None if span is None else self.staging[span[0]: span[1]].view(dtype).view(shape)
                      for span, dtype, shape in zip(self.spans, dtypes, shapes)]


class Pending:
    """A launched pass: ``result()`` waits for it (once) and returns (tokens, log-probs) as numpy arrays."""

    __slots__ = ("host", "done", "m", "values")

    def __init__(self, host: Optional[torch.Tensor] = None, done=None, m: int = 0, values=None):
        self.host, self.done, self.m, self.values = host, done, m, values

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.values is None:
            if self.done is not None:
                self.done.synchronize()
            res = self.host.numpy()
            self.values = (res[0, : self.m].astype(np.int64), res[1, : self.m].copy())
            self.host = self.done = None
        return self.values


class HostBuffers:
    """The host memory a StaticLM's passes go through: one buffer for their inputs, one for their results, grown as
    passes need, pinned on CUDA (so that the copies are queued, not waited for)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pin = device.type == "cuda"
        self._in: Optional[torch.Tensor] = None
        self._in_np: Optional[np.ndarray] = None
        self._out: Optional[torch.Tensor] = None

    def upload(self, staged: Inputs, arrays) -> None:
        """Stage ``arrays`` (the inputs in ``Inputs`` order) in the input buffer and copy them to ``staged`` in one
        transfer that does not wait for the device. The buffer is reused by the next pass: ``StaticLM.launch``'s rule
        that it comes after ``result()`` keeps this one's copy done by then."""
        if self._in is None or self._in.numel() < staged.nbytes:
            self._in = torch.empty(bucket(staged.nbytes, 1 << 16), dtype=torch.uint8, pin_memory=self.pin)
            self._in_np = self._in.numpy()
        host = self._in_np
        for span, arr in zip(staged.spans, arrays):  # each input at its buffer's bytes
            if span is not None:
                host[span[0]: span[1]] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        staged.staging.copy_(self._in[: staged.nbytes], non_blocking=True)

    def read_back(self, result: torch.Tensor, M: int) -> Pending:
        """Queue the copy of a pass's (2, n) float64 ``result`` to the output buffer; the Pending waits for it and
        keeps the first M outputs."""
        n = result.shape[1]
        if self._out is None or self._out.numel() < 2 * n:
            self._out = torch.empty(bucket(2 * n, 2048), dtype=torch.float64, pin_memory=self.pin)
        # a contiguous pinned destination: a strided one is copied through an unpinned temporary, which
        # waits for the pass on the host (``launch`` would block until the device is done)
        out = self._out[: 2 * n].view(2, n)
        out.copy_(result, non_blocking=True)
        done = None
        if self.pin:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
        return Pending(host=out, done=done, m=M)


def stacked(tok: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """A pass's tokens and log-probs as one (2, M) float64 tensor, read back in a single copy (exact for token ids)."""
    return torch.stack([tok.to(torch.float64), logp.to(torch.float64)])


class CapturedPass:
    """One captured shape bucket of a StaticLM: its inputs (``Inputs``), its outputs as one (2, M) float64 tensor
    (``stacked``), and the CUDA graph. Off CUDA nothing is captured and ``replay`` runs the pass on the same buffers
    (tests of the staged path on the CPU)."""

    def __init__(self, lm: "StaticLM", key: Tuple[int, ...]):
        packed, L, B, T, S, M = key[:6]
        # kept for a steered pass (``Steering``): the final hidden states and each output's log softmax denominator
        self.hidden: Optional[torch.Tensor] = None
        self.lse: Optional[torch.Tensor] = None
        self.staged = Inputs(lm.device, key)
        views = self.staged.views
        views[2].fill_(lm.cache.trash_col)  # cache slots
        if packed:
            views[4].fill_(B * T)  # places: the spare one
        views[6][:, 0] = 1  # the mask: column 0
        self._args = tuple(views) + ((B, T, S),)
        self.graph = None
        if lm.device.type != "cuda":
            self.result = torch.zeros((2, M), dtype=torch.float64)
            return
        self._capture(lm)

    def _capture(self, lm: "StaticLM") -> None:
        dev = lm.device
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up writes only to the trash column
                lm._pass(*self._args)
        torch.cuda.current_stream(dev).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=lm._pool):
            self.result = stacked(*lm._pass(*self._args))
        self.hidden, self.lse = lm.last_hidden, lm.last_lse

    def replay(self, lm: "StaticLM") -> None:
        """Replay the graph; off CUDA, run ``lm``'s pass (the one it was made for) on the same buffers. (The pass
        keeps no reference to its StaticLM, so that dropping one frees its graphs' memory at once.)"""
        if self.graph is not None:
            self.graph.replay()
            return
        self.result.copy_(stacked(*lm._pass(*self._args)))
        self.hidden, self.lse = lm.last_hidden, lm.last_lse
