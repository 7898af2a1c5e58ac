"""The LM head's greedy step as two Triton kernels: the argmax token after each final hidden state, its log-prob and
the log of the softmax's denominator, without writing the logits.

``fused.greedy`` takes the logits that the head's matrix product wrote, one vocabulary-wide row per output (262,144
values for Gemma 3), and reads them twice more for the maximum and the log-sum-exp; in a profile of the default model
at batch size 1 on an H100, that product and that reduction were a quarter of a sentence's device time
(docs/results-speed.md). Here the first kernel multiplies a block of outputs by a block of the head's rows and keeps
for each output the block's largest logit, its first token and the sum of exponentials around it; the second
combines the blocks of each output. The logits are rounded to the head's dtype before the softmax, as the matrix
product's output is, so the choices are ``fused.greedy``'s up to the order of the sums in the product (a near-tie
may go the other way).

Like ``tree_attention``, the kernels are Triton's: CUDA, or CPU tensors in a process started with
``TRITON_INTERPRET=1`` (the tests). The static engine takes them by default on CUDA where ``runs_on`` finds that they
compile and agree with torch on the model's device (``factory.choose_head``).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from .tree_attention import _on, available

__all__ = ["greedy", "runs_on", "tiles"]

Tensor = torch.Tensor

BLOCK_VOCAB = 128  # head rows (tokens) per program
BLOCK_K = 64  # hidden values per step of a program's product
COMBINE = 256  # blocks an output's combining step reads at a time


@functools.lru_cache(maxsize=None)
def runs_on(device: str, dtype: torch.dtype, hidden: int) -> Optional[str]:
    """Why the kernels cannot run a head of ``hidden`` values a row on ``device`` in ``dtype`` (None: they can): Triton
    missing, or a first call on the device that fails (they compile on it) or disagrees with ``fused.greedy``.
    ``head_kernel`` null asks this once per device, dtype and size before taking the kernels."""
    if not available():
        return "Triton cannot be imported"
    try:
        _first_call(torch.device(device), dtype, hidden)
    except Exception as err:  # a compiler or driver error of any kind: the head stays torch's
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def _first_call(device: torch.device, dtype: torch.dtype, hidden: int) -> None:
    """The kernels on a few outputs of a random head, with and without a soft-cap and padded columns, against
    ``fused.greedy`` over the rounded logits (an AssertionError if they differ by more than float rounding)."""
    from .fused import greedy as torch_greedy

    g = torch.Generator().manual_seed(0)
    V = 3 * BLOCK_VOCAB + 5
    x = torch.randn(5, hidden, generator=g).to(device, dtype)
    w = (torch.randn(V, hidden, generator=g) * hidden ** -0.5).to(device, dtype)
    pad = torch.zeros(V, device=device)
    pad[-7:] = float("-inf")
    for softcap, p in ((None, None), (3.0, pad)):
        tok, logp, lse = greedy(x, w, softcap, p)
        want_tok, want_logp, want_lse = torch_greedy(x @ w.t(), softcap, p)
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        torch.testing.assert_close(lse, want_lse, atol=tol, rtol=tol)
        torch.testing.assert_close(logp, want_logp, atol=tol, rtol=tol)
        # the chosen token's logit is the row's largest (a near-tie may choose another token of the same logit)
        logits = (x @ w.t()).float()
        torch.testing.assert_close(logits.gather(1, tok[:, None]), logits.gather(1, want_tok[:, None]), atol=tol,
                                   rtol=tol)


def tiles(M: int) -> Tuple[int, int, int, int]:
    """The tile of the products for ``M`` outputs: (outputs, head rows, warps, pipeline stages) per program. A Triton
    product takes at least 16 rows; few outputs read the head once in narrow tiles, many share each block of it in
    wide ones."""
    if M <= 16:
        return 16, 2 * BLOCK_VOCAB, 4, 3
    if M <= 64:
        return 64, BLOCK_VOCAB, 4, 3
    return 128, BLOCK_VOCAB, 8, 3


def greedy(hidden: Tensor, head: Tensor, softcap: Optional[float], pad: Optional[Tensor] = None,
           tile: Optional[Tuple[int, int, int, int]] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """``fused.greedy(linear(hidden, head), softcap, pad)`` without the logits: for each row of ``hidden`` (M, K) the
    argmax token over the rows of ``head`` (V, K) (the lowest id among equal logits), its log-prob and the log of
    the softmax's denominator (float32). ``softcap``: Gemma's final soft-cap, if any; ``pad`` (V, float32): added to
    each column after it (-inf for a restricted head's empty rows). ``hidden`` and ``head`` share a dtype, and each
    row's values are contiguous. ``tile``: the products' tile (default ``tiles(M)``)."""
    M, K = hidden.shape
    V = head.shape[0]
    if head.shape[1] != K or head.dtype != hidden.dtype:
        raise ValueError(f"head kernel: a head of {K} values a row in {hidden.dtype} (got {tuple(head.shape)} in "
                         f"{head.dtype})")
    if hidden.stride(-1) != 1 or head.stride(-1) != 1:
        raise ValueError("head kernel: each row of the hidden states and of the head must be contiguous")
    if pad is not None and (pad.shape != (V,) or pad.dtype != torch.float32 or pad.stride(0) != 1):
        raise ValueError(f"head kernel: pad is a contiguous float32 array of {V} values")
    dev = hidden.device
    tok = torch.empty(M, dtype=torch.long, device=dev)
    logp = torch.empty(M, dtype=torch.float32, device=dev)
    lse = torch.empty(M, dtype=torch.float32, device=dev)
    if M == 0:
        return tok, logp, lse
    rows, cols, warps, stages = tile or tiles(M)
    blocks = (V + cols - 1) // cols
    top = torch.empty((M, blocks), dtype=torch.float32, device=dev)
    first = torch.empty((M, blocks), dtype=torch.int32, device=dev)
    sums = torch.empty((M, blocks), dtype=torch.float32, device=dev)
    with _on(dev):  # Triton launches on the current device
        # axis 0 (the outputs' blocks) varies fastest: the programs that read one block of the head run together
        _blocks_kernel()[((M + rows - 1) // rows, blocks)](
            hidden, head, pad if pad is not None else top, top, first, sums, M, V, K, hidden.stride(0),
            head.stride(0), blocks, float(softcap or 1.0), CAP=bool(softcap), PAD=pad is not None, ROWS=rows,
            COLS=cols, BK=BLOCK_K, PRECISION="ieee" if hidden.dtype == torch.float32 else None,
            num_warps=warps, num_stages=stages)
        _combine_kernel()[(M,)](top, first, sums, tok, logp, lse, blocks, V, NB=COMBINE, num_warps=4)
    return tok, logp, lse


@functools.lru_cache(maxsize=None)
def _blocks_kernel():
    """Each program: ROWS outputs times COLS head rows; per output, the block's largest logit, the first token that
    has it and the sum of exp(logit - that largest), at [output, block]."""
    import triton
    import triton.language as tl

    def head_blocks(X, W, P, TOP, FIRST, SUM, M, V, K, sx, sw, blocks, softcap,
                    CAP: tl.constexpr, PAD: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
                    BK: tl.constexpr, PRECISION: tl.constexpr):
        rm = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        block = tl.program_id(1)
        rn = block * COLS + tl.arange(0, COLS)
        rk = tl.arange(0, BK)
        acc = tl.zeros((ROWS, COLS), dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            x = tl.load(X + rm[:, None] * sx + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
            w = tl.load(W + rn[None, :] * sw + kk[:, None], mask=(rn[None, :] < V) & (kk[:, None] < K), other=0.0)
            acc = tl.dot(x, w, acc, input_precision=PRECISION)
        logits = acc.to(X.dtype.element_ty).to(tl.float32)  # rounded as the product's output is
        if CAP:
            logits = softcap * (2.0 * tl.sigmoid(2.0 * logits / softcap) - 1.0)  # softcap * tanh(logits / softcap)
        if PAD:
            logits += tl.load(P + rn, mask=rn < V, other=0.0)[None, :]
        logits = tl.where((rn < V)[None, :], logits, float("-inf"))
        top = tl.max(logits, 1)
        first = tl.min(tl.where(logits == top[:, None], rn[None, :], V), 1)
        shift = tl.where((top > float("-inf")) & (top < float("inf")), top, 0.0)
        total = tl.sum(tl.exp(logits - shift[:, None]), 1)
        at = rm * blocks + block
        tl.store(TOP + at, top, mask=rm < M)
        tl.store(FIRST + at, first.to(tl.int32), mask=rm < M)
        tl.store(SUM + at, total, mask=rm < M)

    return triton.jit(head_blocks)


@functools.lru_cache(maxsize=None)
def _combine_kernel():
    """Each program: one output's blocks into its token (the lowest of those with the largest logit; 0 where no
    logit is a number), log-prob and log-sum-exp, as ``fused.greedy`` computes them."""
    import triton
    import triton.language as tl

    def head_combine(TOP, FIRST, SUM, TOK, LOGP, LSE, blocks, V, NB: tl.constexpr):
        r = tl.program_id(0)
        b = tl.arange(0, NB)
        tops = tl.full([NB], float("-inf"), tl.float32)
        for c in range(0, blocks, NB):
            tops = tl.maximum(tops, tl.load(TOP + r * blocks + c + b, mask=c + b < blocks, other=float("-inf")))
        best = tl.max(tops, 0)
        shift = tl.where((best > float("-inf")) & (best < float("inf")), best, 0.0)
        toks = tl.zeros([NB], tl.int32) + V
        sums = tl.zeros([NB], tl.float32)
        for c in range(0, blocks, NB):
            inside = c + b < blocks
            t = tl.load(TOP + r * blocks + c + b, mask=inside, other=float("-inf"))
            f = tl.load(FIRST + r * blocks + c + b, mask=inside, other=V)
            s = tl.load(SUM + r * blocks + c + b, mask=inside, other=0.0)
            toks = tl.minimum(toks, tl.where(t == best, f, V))
            t_shift = tl.where((t > float("-inf")) & (t < float("inf")), t, 0.0)
            sums += tl.where(inside, s * tl.exp(t_shift - shift), 0.0)
        tok = tl.min(toks, 0)
        total = tl.sum(sums, 0)
        lse = shift + tl.log(total)
        tl.store(TOK + r, tl.where(tok < V, tok, 0).to(tl.int64))
        tl.store(LOGP + r, best - lse)
        tl.store(LSE + r, lse)

    return triton.jit(head_combine)
