"""The LM head's greedy step as two Triton kernels: the argmax token after each final hidden state, its log-prob and
the log of the softmax's denominator, without writing the logits; and a steered output's choice among its allowed
tokens as one more (``choose_among``).

``fused.greedy`` takes the logits that the head's matrix product wrote, one vocabulary-wide row per output (262,144
values for Gemma 3), and reads them twice more for the maximum and the log-sum-exp; in a profile of the default model
at batch size 1 on an H100, that product and that reduction were a quarter of a sentence's device time
(docs/results-speed.md). Here the first kernel multiplies a block of outputs by a block of the head's rows and keeps
for each output the block's largest logit, its first token and the sum of exponentials around it; the second
combines the blocks of each output. The logits are rounded to the head's dtype before the softmax, as the matrix
product's output is, so the choices are ``fused.greedy``'s up to the order of the sums in the product (a near-tie
may go the other way).

A pass whose outputs are held to allowed tokens (the mention constraint, ``tree.steering``) chooses among them after
the pass: ``choose_among`` computes each held output's logits for its allowed tokens from their rows of the head, and
writes its choice and log-prob in place, in one kernel where torch takes some twenty small ones.

Like ``tree_attention``, the kernels are Triton's: CUDA, or CPU tensors in a process started with
``TRITON_INTERPRET=1`` (the tests). The static engine takes them by default on CUDA where ``runs_on`` finds that they
compile and agree with torch on the model's device (``factory.choose_head``).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from .pass_layout import bucket
from .triton_launch import available, failure_of, on_device, tolerance

__all__ = ["choose_among", "greedy", "runs_on", "tiles"]

Tensor = torch.Tensor

BLOCK_VOCAB = 128  # head rows (tokens) per program
BLOCK_K = 64  # hidden values per step of a program's product
COMBINE = 256  # blocks an output's combining step reads at a time
PAIRS = 16  # allowed tokens an output's choice reads at a time


@functools.lru_cache(maxsize=None)
def runs_on(device: str, dtype: torch.dtype, hidden: int) -> Optional[str]:
    """Why the kernels cannot run a head of ``hidden`` values a row on ``device`` in ``dtype`` (None: they can): Triton
    missing, or a first call on the device that fails (they compile on it) or disagrees with ``fused.greedy``.
    ``head_kernel`` null asks this once per device, dtype and size before taking the kernels."""
    if not available():
        return "Triton cannot be imported"
    return failure_of(lambda: _first_call(torch.device(device), dtype, hidden))


def _first_call(device: torch.device, dtype: torch.dtype, hidden: int) -> None:
    """The kernels on a random head against torch (an AssertionError if they differ by more than float rounding): the
    greedy step for as many outputs as each of ``tiles``' tiles takes, with and without a soft-cap and padded
    columns, against ``fused.greedy`` over the rounded logits; and ``choose_among`` against the logits of the allowed
    tokens. Every kernel the engine will launch is compiled here, so that none fails in the middle of decoding."""
    from .fused import greedy as torch_greedy

    g = torch.Generator().manual_seed(0)
    V = 3 * BLOCK_VOCAB + 5
    w = (torch.randn(V, hidden, generator=g) * hidden ** -0.5).to(device, dtype)
    pad = torch.zeros(V, device=device)
    pad[-7:] = float("-inf")
    tol = tolerance(dtype)
    for M, softcap, p in ((5, None, None), (5, 3.0, pad), (5, None, pad), (40, None, None), (70, None, None)):
        x = torch.randn(M, hidden, generator=g).to(device, dtype)
        tok, logp, lse = greedy(x, w, softcap, p)
        want_tok, want_logp, want_lse = torch_greedy(x @ w.t(), softcap, p)
        torch.testing.assert_close(lse, want_lse, atol=tol, rtol=tol)
        torch.testing.assert_close(logp, want_logp, atol=tol, rtol=tol)
        # the chosen token's logit is the row's largest (a near-tie may choose another token of the same logit)
        logits = (x @ w.t()).float()
        torch.testing.assert_close(logits.gather(1, tok[:, None]), logits.gather(1, want_tok[:, None]), atol=tol,
                                   rtol=tol)
    allowed = {1: [3, 9, 300], 0: [7, 8, 9]}  # output -> its allowed tokens, as the steering groups them
    got = torch.zeros((2, 2), dtype=torch.float64, device=device)
    choose_among(x, lse, w, None, torch.tensor([1, 0], device=device), torch.tensor([0, 3, 6], device=device),
                 torch.tensor(allowed[1] + allowed[0], device=device), got[0], got[1])
    for out, ids in allowed.items():
        vals = (x[out].float() @ w[ids].float().t()).to(dtype).float() - lse[out]
        torch.testing.assert_close(got[1, out].float(), vals.max(), atol=tol, rtol=tol)
        # an allowed token of the largest value (a near-tie may choose another of the same value)
        torch.testing.assert_close(vals[ids.index(int(got[0, out]))], vals.max(), atol=tol, rtol=tol)


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
    row's values are contiguous. ``tile``: the products' tile (default ``tiles(M)``). A row with NaN logits (a model
    gone wrong) gets NaN log-probs as from torch, but its token may differ (the kernels skip the NaN values)."""
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
    with on_device(dev):  # Triton launches on the current device
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
            w = tl.load(W + rn.to(tl.int64)[None, :] * sw + kk[:, None], mask=(rn[None, :] < V) & (kk[:, None] < K),
                        other=0.0)
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
            # a block of -inf logits alone (a restricted head's empty rows) adds nothing, whatever the row's best
            sums += tl.where(inside & (t > float("-inf")), s * tl.exp(t_shift - shift), 0.0)
        tok = tl.min(toks, 0)
        total = tl.sum(sums, 0)
        lse = shift + tl.log(total)
        tl.store(TOK + r, tl.where(tok < V, tok, 0).to(tl.int64))
        tl.store(LOGP + r, best - lse)
        tl.store(LSE + r, lse)

    return triton.jit(head_combine)


def choose_among(hidden: Tensor, lse: Tensor, head: Tensor, softcap: Optional[float], outs: Tensor, starts: Tensor,
                 toks: Tensor, tokens: Tensor, logps: Tensor, clamp: bool = False) -> None:
    """For each i, output ``outs[i]`` chooses among the tokens ``toks[starts[i]:starts[i + 1]]``: the one of the
    largest log-prob (the lowest id among equal ones), its logit from ``hidden[outs[i]]`` and the head's row rounded
    to the head's dtype (soft-capped), less ``lse[outs[i]]``; ``tokens[outs[i]]`` and ``logps[outs[i]]`` take the
    choice and its log-prob (token 0, and that non-finite log-prob, where none is finite; ``clamp``: log-probs capped
    at 0, as over a restricted head's denominator). In place, on the device, as ``tree.steering`` chooses in torch."""
    n, K = len(outs), hidden.shape[1]
    if n == 0:
        return
    if head.shape[1] != K or hidden.stride(-1) != 1 or head.stride(-1) != 1:
        raise ValueError(f"head kernel: a head of {K} values a row, each row contiguous (got {tuple(head.shape)})")
    with on_device(hidden.device):
        _choose_kernel()[(n,)](hidden, lse, head, outs, starts, toks, tokens, logps, hidden.stride(0),
                               head.stride(0), lse.stride(0), tokens.stride(0), logps.stride(0), K,
                               float(softcap or 1.0), CAP=bool(softcap), CLAMP=clamp, P=PAIRS, KB=min(bucket(K, 16), 128),
                               num_warps=4)


@functools.lru_cache(maxsize=None)
def _choose_kernel():
    """Each program: one held output's allowed tokens, PAIRS at a time, each lane keeping its best (log-prob, token);
    then the lanes' best into the output's token and log-prob."""
    import triton
    import triton.language as tl

    def choose_among(H, LSE, W, OUTS, STARTS, TOKS, TOK, LOGP, sh, sw, sl, st, sp, K, softcap,
                     CAP: tl.constexpr, CLAMP: tl.constexpr, P: tl.constexpr, KB: tl.constexpr):
        i = tl.program_id(0)
        out = tl.load(OUTS + i)
        a = tl.load(STARTS + i)
        b = tl.load(STARTS + i + 1)
        lse = tl.load(LSE + out * sl).to(tl.float32)
        best = tl.full([P], float("-inf"), tl.float32)
        best_tok = tl.zeros([P], tl.int64) + 2 ** 62
        for c in range(a, b, P):
            j = c + tl.arange(0, P)
            inside = j < b
            t = tl.load(TOKS + j, mask=inside, other=0)
            v = tl.zeros([P], tl.float32)
            for k0 in range(0, K, KB):  # the hidden values in steps: a few registers a lane, whatever the model
                kk = k0 + tl.arange(0, KB)
                h = tl.load(H + out * sh + kk, mask=kk < K, other=0.0).to(tl.float32)
                w = tl.load(W + t[:, None] * sw + kk[None, :], mask=inside[:, None] & (kk < K)[None, :], other=0.0)
                v += tl.sum(w.to(tl.float32) * h[None, :], 1)
            v = v.to(W.dtype.element_ty).to(tl.float32)
            if CAP:
                v = softcap * (2.0 * tl.sigmoid(2.0 * v / softcap) - 1.0)  # softcap * tanh(v / softcap)
            v = v - lse
            better = inside & ((v > best) | ((v == best) & (t < best_tok)))
            best = tl.where(better, v, best)
            best_tok = tl.where(better, t, best_tok)
        top = tl.max(best, 0)
        tok = tl.min(tl.where(best == top, best_tok, 2 ** 62), 0)
        tok = tl.where((top > float("-inf")) & (top < float("inf")), tok, 0)
        if CLAMP:
            top = tl.minimum(top, 0.0)
        top = tl.where(lse == lse, top, lse)  # a NaN denominator: a NaN log-prob, as torch gives
        tl.store(TOK + out * st, tok.to(TOK.dtype.element_ty))
        tl.store(LOGP + out * sp, top.to(LOGP.dtype.element_ty))

    return triton.jit(choose_among)
