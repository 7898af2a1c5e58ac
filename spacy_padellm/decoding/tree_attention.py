"""A layer's attention in a tree-decoding pass as two Triton kernels: the queries and keys rotated (and normed,
as Gemma's are) with the keys and values written to the KV cache (``write_cache``), then attention of the pass's
tokens over their cache columns under the pass's tree mask (``attend``).

The first replaces three to four kernels a layer (the query/key norm, RoPE, one cache write for the keys and one for
the values) with one: each program takes one token's heads.

``scaled_dot_product_attention`` with a mask is a general kernel with a fixed cost to start that dominates at the
sizes of tree decoding: one document's pass is a few dozen query tokens over a few hundred columns, and in a profile
of the default model at batch size 1 on an H100 attention was the largest share of a sentence's device time
(docs/results-speed.md). Here
the g query heads of one KV head and a block of tokens are one tile of rows (g * tokens, at least 16), the keys and
values stream through in blocks of columns with an online softmax, and the mask is read as the pass's boolean
(B, T, S) rows, so that no additive mask is built either. One kernel per layer.

The kernel is Triton's: it runs on CUDA (``triton_launch.available``), and on CPU tensors in a process started with
``TRITON_INTERPRET=1`` (Triton's interpreter), as the tests run it. The static engine takes the kernels by default on
CUDA where ``runs_on`` finds that they compile and agree with torch on the model's device
(``factory.choose_attention``).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from .pass_layout import bucket
from .triton_launch import available, failure_of, on_device, tolerance

__all__ = ["attend", "check_heads", "runs_on", "write_cache"]

Tensor = torch.Tensor

BLOCK_ROWS = 16  # query rows (heads x tokens) of one tile: the least a Triton matrix product takes
BLOCK_COLS = 64  # cache columns per step of the online softmax


def check_heads(n_heads: int, n_kv: int, head_dim: int) -> None:
    """A ValueError unless the kernels take these heads: a power-of-two head size of at least 16, and whole groups of
    at most ``BLOCK_ROWS`` query heads per KV head."""
    if n_heads % n_kv or n_heads // n_kv > BLOCK_ROWS or head_dim & (head_dim - 1) or head_dim < 16:
        raise ValueError(f"attention_kernel 'triton' takes a power-of-two head size of at least 16 and at most "
                         f"{BLOCK_ROWS} query heads per KV head (got {n_heads} query heads over {n_kv} KV heads of "
                         f"size {head_dim})")


@functools.lru_cache(maxsize=None)
def runs_on(device: str, dtype: torch.dtype, n_heads: int, n_kv: int, head_dim: int) -> Optional[str]:
    """Why the kernels cannot run a model of these heads on ``device`` in ``dtype`` (None: they can): Triton missing,
    heads they do not take, or a first call on the device that fails (the kernels compile on it) or disagrees with
    torch's attention and RoPE. ``attention_kernel`` null asks this once per device and shape before taking the
    kernels."""
    if not available():
        return "Triton cannot be imported"
    try:
        check_heads(n_heads, n_kv, head_dim)
    except ValueError as err:
        return str(err)
    return failure_of(lambda: _first_call(torch.device(device), dtype, n_heads, n_kv, head_dim))


def _first_call(device: torch.device, dtype: torch.dtype, n_heads: int, n_kv: int, head_dim: int) -> None:
    """Both kernels on a few tokens of random heads, the attention dense and packed, skipping unseen blocks and not
    (every variant a pass may take), against what torch computes (an AssertionError if they differ by more than
    ``dtype``'s rounding)."""
    import torch.nn.functional as F

    from .fused import rotate
    from .static_lm import StaticLM  # (static_lm imports this module)

    g = torch.Generator().manual_seed(0)
    T, S, D = 3, 8, head_dim
    qkv = torch.randn(T, n_heads + 2 * n_kv, D, generator=g).to(device, dtype)
    cos, sin = (torch.rand(T, 1, D, generator=g).to(device, dtype) for _ in range(2))
    k, v = (torch.zeros(1, n_kv, S, D, dtype=dtype, device=device) for _ in range(2))
    slots = torch.arange(T, device=device)
    q = write_cache(qkv, n_heads, None, 1e-6, cos, sin, k, v, torch.zeros(T, dtype=torch.long, device=device), slots)
    qk = rotate(qkv[:, : n_heads + n_kv].float(), cos.float(), sin.float())
    mask = torch.ones(1, T, S, dtype=torch.bool, device=device).tril_()
    got, every = (attend(q.view(1, T, n_heads, D), k, v, mask, D ** -0.5, skip_empty=skip).float()
                  for skip in (True, False))
    want = F.scaled_dot_product_attention(qk[None, :, :n_heads].transpose(1, 2), k.float(), v.float(),
                                          attn_mask=StaticLM._additive(mask, 1, torch.float32), scale=D ** -0.5,
                                          enable_gqa=n_heads != n_kv).transpose(1, 2)
    # a packed pass: the three tokens at places 2, 0, 1 of a row of four, its fourth place empty
    places = torch.tensor([[1, 2, 0, -1]], dtype=torch.int32, device=device)
    laid = torch.cat([mask[:, [1, 2, 0]], mask[:, :1]], 1)
    packed, packed_every = (attend(q, k, v, laid, D ** -0.5, skip_empty=skip, places=places).float()
                            for skip in (True, False))
    tol = tolerance(dtype)
    torch.testing.assert_close(q.float(), qk[:, :n_heads], atol=tol, rtol=tol)
    torch.testing.assert_close(k[0, :, :T].transpose(0, 1).float(), qk[:, n_heads:], atol=tol, rtol=tol)
    for dense, packed_out in ((got, packed), (every, packed_every)):
        torch.testing.assert_close(dense, want, atol=tol, rtol=tol)
        torch.testing.assert_close(packed_out, want[0], atol=tol, rtol=tol)


@functools.lru_cache(maxsize=None)
def _kernel():
    """The Triton kernel (compiled for the GPU on its first call of each size; under ``TRITON_INTERPRET=1``,
    interpreted)."""
    import triton
    import triton.language as tl

    def tree_attention(Q, K, V, M, O, P, T, S, scale,
                       sq_b, sq_t, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sm_b, sm_t, so_b, so_t, so_h,
                       G: tl.constexpr, TOKENS: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
                       D: tl.constexpr, PRECISION: tl.constexpr, SKIP: tl.constexpr, PACKED: tl.constexpr):
        tblock, b, kvh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        r = tl.arange(0, ROWS)
        t = tblock * TOKENS + r // G  # each tile row: a token and one of the g query heads of this KV head
        h = kvh * G + r % G
        live = (r < TOKENS * G) & (t < T)
        if PACKED:  # the queries and outputs of the place's token (P: its index among the pass's, or -1: none)
            token = tl.load(P + b * T + t, mask=live, other=-1)
            live = live & (token >= 0)
            q_row = token * sq_t
            o_row = token * so_t
        else:
            q_row = b * sq_b + t * sq_t
            o_row = b * so_b + t * so_t
        d = tl.arange(0, D)
        q = tl.load(Q + q_row[:, None] + h[:, None] * sq_h + d[None, :], mask=live[:, None], other=0.0)
        best = tl.full((ROWS,), float("-inf"), tl.float32)
        total = tl.zeros((ROWS,), tl.float32)
        acc = tl.zeros((ROWS, D), tl.float32)
        first, last = 0, S
        if SKIP:  # only the blocks of columns from the first to the last that some row of the tile attends to
            first, last = tl.zeros((), tl.int32) + S, tl.zeros((), tl.int32)
            for start in range(0, S, COLS):
                c = start + tl.arange(0, COLS)
                seen = tl.load(M + b * sm_b + t[:, None] * sm_t + c[None, :], mask=live[:, None] & (c < S)[None, :],
                               other=0)
                some = tl.max(tl.max(seen.to(tl.int32), 1), 0) != 0
                first = tl.minimum(first, tl.where(some, start, S))
                last = tl.maximum(last, tl.where(some, start + COLS, 0))
        for start in range(first, last, COLS):
            c = start + tl.arange(0, COLS)
            inside = c < S
            k = tl.load(K + b * sk_b + kvh * sk_h + c[:, None] * sk_s + d[None, :], mask=inside[:, None], other=0.0)
            v = tl.load(V + b * sv_b + kvh * sv_h + c[:, None] * sv_s + d[None, :], mask=inside[:, None], other=0.0)
            seen = tl.load(M + b * sm_b + t[:, None] * sm_t + c[None, :], mask=live[:, None] & inside[None, :],
                           other=0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
            s = tl.where(seen != 0, s, float("-inf"))
            new = tl.maximum(best, tl.max(s, 1))
            shift = tl.where(new == float("-inf"), 0.0, new)  # a row with no column yet: nothing to rescale
            p = tl.exp(s - shift[:, None])
            keep = tl.exp(best - shift)
            total = total * keep + tl.sum(p, 1)
            acc = acc * keep[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            best = new
        out = acc / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(O + o_row[:, None] + h[:, None] * so_h + d[None, :], out.to(O.dtype.element_ty), mask=live[:, None])

    return triton.jit(tree_attention)


@functools.lru_cache(maxsize=None)
def _cache_kernel():
    """The Triton kernel of ``write_cache``."""
    import triton
    import triton.language as tl

    def rope_cache(QKV, W, COS, SIN, KC, VC, ROWS, SLOTS, QO, eps,
                   s_t, s_h, s_cos, s_sin, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, so_t, so_h,
                   H: tl.constexpr, HKV: tl.constexpr, HP: tl.constexpr, VP: tl.constexpr, HALF: tl.constexpr,
                   NORM: tl.constexpr):
        i = tl.program_id(0)
        h = tl.arange(0, HP)  # the query heads, then the key heads
        live = h < H + HKV
        d = tl.arange(0, HALF)
        at = QKV + i * s_t + h[:, None] * s_h + d[None, :]
        x1 = tl.load(at, mask=live[:, None], other=0.0).to(tl.float32)
        x2 = tl.load(at + HALF, mask=live[:, None], other=0.0).to(tl.float32)
        if NORM:  # Gemma's query/key norm: in float32, times the float32 weight, cast back
            r = tl.rsqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)) / (2 * HALF) + eps)
            w = W + h[:, None] * (2 * HALF) + d[None, :]
            x1 = (x1 * r[:, None] * tl.load(w, mask=live[:, None], other=0.0)).to(QKV.dtype.element_ty).to(tl.float32)
            x2 = (x2 * r[:, None] * tl.load(w + HALF, mask=live[:, None], other=0.0)).to(QKV.dtype.element_ty).to(
                tl.float32)
        c1 = tl.load(COS + i * s_cos + d).to(tl.float32)[None, :]
        c2 = tl.load(COS + i * s_cos + HALF + d).to(tl.float32)[None, :]
        n1 = tl.load(SIN + i * s_sin + d).to(tl.float32)[None, :]
        n2 = tl.load(SIN + i * s_sin + HALF + d).to(tl.float32)[None, :]
        o1 = (x1 * c1 - x2 * n1).to(KC.dtype.element_ty)
        o2 = (x2 * c2 + x1 * n2).to(KC.dtype.element_ty)
        query = h < H
        q_at = QO + i * so_t + h[:, None] * so_h + d[None, :]
        tl.store(q_at, o1, mask=query[:, None])
        tl.store(q_at + HALF, o2, mask=query[:, None])
        row, slot = tl.load(ROWS + i), tl.load(SLOTS + i)
        k_at = KC + row * sk_b + (h[:, None] - H) * sk_h + slot * sk_s + d[None, :]
        key = live & (h >= H)
        tl.store(k_at, o1, mask=key[:, None])
        tl.store(k_at + HALF, o2, mask=key[:, None])
        vh = tl.arange(0, VP)
        e = tl.arange(0, 2 * HALF)
        v = tl.load(QKV + i * s_t + (H + HKV + vh[:, None]) * s_h + e[None, :], mask=(vh < HKV)[:, None], other=0.0)
        tl.store(VC + row * sv_b + vh[:, None] * sv_h + slot * sv_s + e[None, :], v.to(VC.dtype.element_ty),
                 mask=(vh < HKV)[:, None])

    return triton.jit(rope_cache)


def write_cache(qkv: Tensor, n_heads: int, qk_norm: Optional[Tensor], eps: float, cos: Tensor, sin: Tensor,
                k: Tensor, v: Tensor, rows: Tensor, slots: Tensor) -> Tensor:
    """The queries (N, H, D) of N tokens from their projections ``qkv`` (N, H + 2 * Hkv, D): queries and keys normed
    by ``qk_norm`` ((H + Hkv, D), float32, Gemma's norm; None: not normed) and rotated by ``cos``, ``sin`` (N, 1, D:
    each token's RoPE row); the keys and the values are written to the layer's cache ``k``, ``v`` (rows, Hkv,
    columns, D) at (``rows``, ``slots``), in the cache's dtype. The queries come in that dtype too."""
    N, heads, D = qkv.shape
    Hkv = k.shape[1]
    if heads != n_heads + 2 * Hkv:
        raise ValueError(f"write_cache takes {n_heads} query heads and {Hkv} key and value heads (got {heads} heads)")
    check_heads(n_heads, Hkv, D)
    if qkv.stride(-1) != 1 or cos.stride(-1) != 1 or sin.stride(-1) != 1:
        raise ValueError("write_cache: each head's values and each RoPE row must be contiguous")
    if qk_norm is not None and (qk_norm.shape != (n_heads + Hkv, D) or qk_norm.dtype != torch.float32
                                or not qk_norm.is_contiguous()):
        raise ValueError(f"write_cache: the query/key norm is a contiguous float32 ({n_heads + Hkv}, {D}) array")
    out = torch.empty((N, n_heads, D), dtype=k.dtype, device=qkv.device)
    if N == 0:
        return out
    norm = qk_norm if qk_norm is not None else qkv  # an unused pointer when not normed
    with on_device(qkv.device):  # Triton launches on the current device
        _cache_kernel()[(N,)](qkv, norm, cos, sin, k, v, rows, slots, out, float(eps),
                              qkv.stride(0), qkv.stride(1), cos.stride(0), sin.stride(0),
                              k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
                              out.stride(0), out.stride(1),
                              H=n_heads, HKV=Hkv, HP=bucket(n_heads + Hkv), VP=bucket(Hkv), HALF=D // 2,
                              NORM=qk_norm is not None, num_warps=4)
    return out


def skips_blocks(rows: int) -> bool:
    """Whether a pass of ``rows`` rows runs ``attend`` with ``skip_empty``: with several rows, whose lengths differ
    (skipping ran a ragged batch's attention up to 1.39x as fast on an H100), not with one (its tile sees most blocks,
    and finding them cost it about a tenth more)."""
    return rows > 1


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, out: Optional[Tensor] = None,
           skip_empty: bool = True, places: Optional[Tensor] = None) -> Tensor:
    """Attention outputs (B, T, H, D) of queries ``q`` (B, T, H, D) over the first S columns of a layer's cache
    ``k``, ``v`` (at least B rows, Hkv heads, at least S columns, D), where ``mask`` (B, T, S, bool) holds the
    columns each token attends to; H a multiple of Hkv (grouped-query heads). A token that attends to no column
    gets zeros. ``q`` and the cache may be strided views, but each head's D values must be contiguous.

    ``places`` (B, T) int32: a packed pass (``StaticLM``), whose queries ``q`` are (L, H, D), one per token, and
    whose outputs come back as (L, H, D): each place of the (B, T) layout names its token (-1: none). The queries
    are read and the outputs written at their tokens, without a copy of either to the layout; a token that no place
    names gets zeros.

    ``skip_empty``: each tile of tokens reads the keys and values of the blocks of columns from the first to the last
    that some of its tokens attends to, found from the mask first: a pass's S is its widest row's, so the columns
    past a shorter row's, those of a sliding window's far past, and every column of a tile of padding are skipped.
    The loop over the blocks it reads is the one without the skip. The outputs are the same either way."""
    if places is None:
        B, T, H, D = q.shape
    else:
        (B, T), (L, H, D) = places.shape, q.shape
        if places.dtype != torch.int32 or not places.is_contiguous():
            raise ValueError("tree attention: places is a contiguous int32 (B, T) array")
    Hkv, S = k.shape[1], mask.shape[-1]
    check_heads(H, Hkv, D)
    for name, x in (("queries", q), ("keys", k), ("values", v)):
        if x.stride(-1) != 1:
            raise ValueError(f"tree attention: the {name}' head values must be contiguous")
    g = H // Hkv
    tokens = BLOCK_ROWS // g
    mask = mask if mask.stride(-1) == 1 else mask.contiguous()
    mask = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format) if places is None else torch.zeros_like(q)
    # (row, token, head) strides; a packed pass's tokens have no row
    sq = q.stride()[:3] if places is None else (0, *q.stride()[:2])
    so = out.stride()[:3] if places is None else (0, *out.stride()[:2])
    grid = ((T + tokens - 1) // tokens, B, Hkv)
    with on_device(q.device):
        _kernel()[grid](q, k, v, mask, out, q if places is None else places, T, S, float(scale),
                        sq[0], sq[1], sq[2], k.stride(0), k.stride(1), k.stride(2),
                        v.stride(0), v.stride(1), v.stride(2), mask.stride(0), mask.stride(1),
                        so[0], so[1], so[2],
                        G=g, TOKENS=tokens, ROWS=BLOCK_ROWS, COLS=BLOCK_COLS, D=D,
                        # float32 in full precision, as torch's attention (Triton's default for it is TF32)
                        PRECISION="ieee" if q.dtype == torch.float32 else None, SKIP=bool(skip_empty),
                        PACKED=places is not None, num_warps=4, num_stages=2)
    return out
