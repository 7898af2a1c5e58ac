"""The element-wise steps of a ``StaticLM`` pass, each one function that ``torch.compile`` makes one GPU kernel.

Run eagerly, a layer of Gemma 3 is about 45 kernels: four RMSNorms in float32 (a cast, the norm, the weight, a cast
back: four kernels each), RoPE (five), the gated activation, the residual sums, around four matrix products and
attention. In a pass of a few hundred tokens each of those kernels costs more to start than to run, and in a wide pass
each reads and writes the whole activation again. Here the steps between two matrix products are one function each
(RoPE; the residual sum with the next norm; the gated activation; the LM head's greedy choice
with its soft-cap and log-softmax), so that compiled each is one kernel (``Kernels(compiled=True)``, CUDA only: a
pass is then about 18 kernels a layer). Run as plain torch (``compiled=False``) they compute the same function, which
the tests check against the eager pass; that pass itself calls ``rotate``, ``gated`` and ``greedy`` as they are.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple

import torch
import torch._dynamo.exc
import torch.nn.functional as F

from .counts import final_logits

__all__ = ["Kernels", "gated", "greedy", "rotate"]

Tensor = torch.Tensor


def norm(x: Tensor, w: Tensor, eps: float, gemma: bool) -> Tensor:
    """RMSNorm of ``x`` over its last dimension: Gemma's (in float32, times the float32 ``w``, cast back) or
    Llama's (``F.rms_norm`` with the weight ``w``)."""
    if gemma:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w).to(x.dtype)
    return F.rms_norm(x, (x.shape[-1],), w, eps)


def rotate(qk: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on query and key heads ``qk`` (N, heads, D) at once (``cos``, ``sin``: (N, 1, D))."""
    half = qk.shape[-1] // 2
    return qk * cos + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin


def rope(qk: Tensor, v: Tensor, cos: Tensor, sin: Tensor, n_heads: int,
         dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values (N, heads, D) in ``dtype`` from the query and key heads ``qk`` (N, H + Hkv, D),
    rotated (RoPE; ``cos``, ``sin``: (N, 1, D)), and the value heads ``v``. (Gemma's query/key norm comes first, a
    step of its own: fused into this one, the compiler recomputed each row's norm for every element.)"""
    qk = rotate(qk, cos, sin)
    return qk[:, :n_heads].to(dtype), qk[:, n_heads:].to(dtype), v.to(dtype)


def residual(x: Tensor, y: Tensor, post: Optional[Tensor], nxt: Optional[Tensor], eps: float,
             gemma: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """The residual stream after a block whose output is ``y`` (normed by ``post`` first, as Gemma's are), and that
    stream normed by ``nxt`` (the next block's input norm; None: not wanted)."""
    s = x + (norm(y, post, eps, gemma) if post is not None else y)
    return s, (norm(s, nxt, eps, gemma) if nxt is not None else None)


def gated(gate_up: Tensor, act: Callable[[Tensor], Tensor]) -> Tensor:
    """The MLP's gated activation: ``act(gate) * up`` of the two halves of one projection."""
    gate, up = gate_up.chunk(2, dim=-1)
    return act(gate) * up


def greedy(logits: Tensor, softcap: Optional[float], pad: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """(argmax token, its log-probability, the log of the softmax's denominator) of each row of the LM head's
    output (soft-capped first, as Gemma's, in float32; ``pad``: added to each column after that, -inf for the
    columns of a restricted head's buffer that hold no token)."""
    logits = final_logits(logits.float(), softcap)
    if pad is not None:
        logits = logits + pad
    top, tok = logits.max(dim=-1)
    # the log-sum-exp around the row's own maximum, already found: compiled, the logits are read twice, not three
    # times (``torch.logsumexp`` finds the maximum again); a row whose maximum is not finite gives what
    # ``torch.logsumexp`` gives (-inf for a row of -inf, nan with a nan)
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    lse = shift + torch.log(torch.exp(logits - shift.unsqueeze(-1)).sum(-1))
    return tok, top - lse, lse


class Kernels:
    """The fused steps, compiled (``torch.compile``, one kernel each on a GPU) or as plain torch. Compiling happens
    on a step's first call (a pass's warm-up, before any CUDA graph is captured); a step that cannot be compiled
    (no Triton, no C compiler: the compiler's own errors) warns once and runs as plain torch from then on."""

    def __init__(self, act: Callable[[Tensor], Tensor], compiled: bool):
        self.compiled = compiled
        steps = {"norm": norm, "rope": rope, "residual": residual, "gated": lambda t: gated(t, act), "greedy": greedy}
        for name, fn in steps.items():
            setattr(self, name, _Compiled(name, fn) if compiled else fn)


class _Compiled:
    """``fn`` through ``torch.compile`` (dynamic shapes: one compilation serves every shape bucket), falling back to
    ``fn`` itself if compiling fails."""

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn = name, fn
        self.run = torch.compile(fn, dynamic=True, fullgraph=True)

    def __call__(self, *args):
        try:
            return self.run(*args)
        except torch._dynamo.exc.TorchDynamoException as err:  # the compiler failed (not the step: out of memory...)
            if self.run is self.fn:
                raise
            warnings.warn(f"fused_kernels: the step {self.name!r} could not be compiled ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); it runs unfused")
            self.run = self.fn
            return self.fn(*args)
