"""Checks of ``decoding/tree_attention.py`` run by Triton's interpreter on CPU tensors: started by
``test_tree_attention.py`` in a process of its own with ``TRITON_INTERPRET=1`` (set before Triton is imported).
Exits non-zero with the first failed check."""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny  # noqa: E402
from spacy_padellm.decoding import tree_attention  # noqa: E402
from spacy_padellm.decoding.static_lm import StaticLM  # noqa: E402
from spacy_padellm.loading import load_model, resolve_model  # noqa: E402
from spacy_padellm.text.protocol import PromptEncoder  # noqa: E402


def sdpa(q, k, v, mask, scale):
    """What ``tree_attention.attend`` should give: torch's attention over the same columns, one row per token."""
    B, S = q.shape[0], mask.shape[-1]
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k[:B, :, :S], v[:B, :, :S],
                                       attn_mask=StaticLM._additive(mask, 1, q.dtype), scale=scale, enable_gqa=True)
    return o.transpose(1, 2)


def check_kernel():
    """Against torch's attention: query groups of 1 to 4 (3: tiles with a spare row), head sizes 16 to 256, columns
    not a multiple of the kernel's block, a cache wider and taller than the pass, strided queries, blocks of columns
    skipped, a packed pass's queries and outputs."""
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 5, 4, 4, 16, 9), (1, 7, 9, 3, 64, 70), (3, 20, 4, 1, 256, 130), (2, 33, 4, 2, 32, 64)]
    for B, T, H, Hkv, D, S in shapes:
        qkv = torch.randn(B * T, H + 2 * Hkv, D, generator=g)
        q = qkv[:, :H].view(B, T, H, D)  # strided, as the pass's own queries are
        k, v = (torch.randn(B + 1, Hkv, S + 11, D, generator=g) for _ in range(2))
        mask = torch.rand(B, T, S, generator=g) < 0.4
        mask[..., 0] = True
        got = tree_attention.attend(q, k, v, mask, 0.125)
        torch.testing.assert_close(got, sdpa(q, k, v, mask, 0.125), atol=1e-5, rtol=1e-5)
    for dtype, tol in ((torch.float16, 2e-3),):  # half precision: the casts of p and of the output
        B, T, H, Hkv, D, S = 2, 9, 4, 1, 64, 150
        q = torch.randn(B, T, H, D, generator=g).to(dtype)
        k, v = (torch.randn(B, Hkv, S, D, generator=g).to(dtype) for _ in range(2))
        mask = torch.rand(B, T, S, generator=g) < 0.4
        mask[..., :70] = False  # the first block of columns wholly masked, as a sliding window makes it
        mask[..., 100] = True
        got = tree_attention.attend(q, k, v, mask, 0.125)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), sdpa(q.float(), k.float(), v.float(), mask, 0.125), atol=tol, rtol=tol)
    mask[0, 1] = False  # a token that attends to no column gets zeros, not NaN
    got = tree_attention.attend(q, k, v, mask, 0.125)
    assert torch.equal(got[0, 1], torch.zeros_like(got[0, 1]))
    assert torch.isfinite(got).all()
    # rows of a pass as wide as its widest: a shorter row's tiles, and padding tokens (column 0 only), leave whole
    # blocks of columns unseen; skipped or not, the outputs are the same
    B, T, H, Hkv, D, S = 3, 12, 4, 1, 32, 200
    q = torch.randn(B, T, H, D, generator=g)
    k, v = (torch.randn(B, Hkv, S, D, generator=g) for _ in range(2))
    mask = torch.rand(B, T, S, generator=g) < 0.5
    mask[0, :, 70:] = False
    mask[1, :, 10:] = False
    mask[2, 8:] = False
    mask[..., 0] = True
    got = tree_attention.attend(q, k, v, mask, 0.125)
    assert torch.equal(got, tree_attention.attend(q, k, v, mask, 0.125, skip_empty=False))
    torch.testing.assert_close(got, sdpa(q, k, v, mask, 0.125), atol=1e-5, rtol=1e-5)
    # a packed pass: L tokens (the last two padding, in no place) at places of the (B, T) layout, in any order;
    # queries read and outputs written at their tokens, as the dense layout gives them
    B, T, H, Hkv, D, S, L = 2, 9, 4, 1, 64, 100, 12
    at = torch.randperm(B * T, generator=g)[: L - 2]
    places = torch.full((B * T,), -1, dtype=torch.int32)
    places[at] = torch.arange(L - 2, dtype=torch.int32)
    q = torch.randn(L, H, D, generator=g)
    k, v = (torch.randn(B, Hkv, S, D, generator=g) for _ in range(2))
    mask = torch.rand(B, T, S, generator=g) < 0.5
    mask[..., 0] = True
    laid = torch.zeros(B * T, H, D)
    laid[at] = q[: L - 2]
    dense = tree_attention.attend(laid.view(B, T, H, D), k, v, mask, 0.125).view(B * T, H, D)
    got = tree_attention.attend(q, k, v, mask, 0.125, places=places.view(B, T))
    assert got.shape == (L, H, D)
    torch.testing.assert_close(got[: L - 2], dense[at], atol=1e-6, rtol=1e-6)
    assert torch.equal(got[L - 2:], torch.zeros(2, H, D))
    for bad in (dict(D=24), dict(D=8)):
        D = bad["D"]
        try:
            tree_attention.attend(torch.zeros(1, 2, 2, D), torch.zeros(1, 1, 4, D), torch.zeros(1, 1, 4, D),
                                  torch.ones(1, 2, 4, dtype=torch.bool), 1.0)
        except ValueError:
            continue
        raise AssertionError(f"head size {D} was taken")


def check_cache_writes():
    """``write_cache`` against the steps it replaces (Gemma's query/key norm, RoPE, the cache writes): head counts
    that are not powers of two, one and three KV heads, with and without the norm, rows and columns out of order."""
    from spacy_padellm.decoding.fused import norm, rotate

    g = torch.Generator().manual_seed(1)
    for N, H, Hkv, D, normed in [(5, 4, 1, 256, True), (7, 9, 3, 16, False), (3, 2, 2, 64, True)]:
        qkv = torch.randn(N, H + 2 * Hkv, D, generator=g)
        w = torch.rand(H + Hkv, D, generator=g) + 0.5 if normed else None
        cos, sin = (torch.rand(N, 1, D, generator=g) for _ in range(2))
        rows, slots = torch.randint(0, 3, (N,), generator=g), torch.randperm(20, generator=g)[:N]
        k, v = torch.zeros(3, Hkv, 20, D), torch.zeros(3, Hkv, 20, D)
        q = tree_attention.write_cache(qkv, H, w, 1e-6, cos, sin, k, v, rows, slots)
        qk = qkv[:, : H + Hkv] if w is None else norm(qkv[:, : H + Hkv], w, 1e-6, True)
        qk = rotate(qk, cos, sin)
        torch.testing.assert_close(q, qk[:, :H], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(k[rows, :, slots], qk[:, H:], atol=1e-5, rtol=1e-5)
        assert torch.equal(v[rows, :, slots], qkv[:, H + Hkv:])
        assert int((k != 0).any(-1).sum()) == int((v != 0).any(-1).sum()) == N * Hkv  # nothing written elsewhere
    # half precision: the norm's cast back before RoPE, and the outputs in the cache's dtype
    N, H, Hkv, D = 4, 4, 1, 32
    qkv = torch.randn(N, H + 2 * Hkv, D, generator=g).half()
    w = torch.rand(H + Hkv, D, generator=g) + 0.5
    cos, sin = (torch.rand(N, 1, D, generator=g).half() for _ in range(2))
    k, v = torch.zeros(1, Hkv, 8, D, dtype=torch.half), torch.zeros(1, Hkv, 8, D, dtype=torch.half)
    rows, slots = torch.zeros(N, dtype=torch.long), torch.arange(N)
    q = tree_attention.write_cache(qkv, H, w, 1e-6, cos, sin, k, v, rows, slots)
    qk = rotate(norm(qkv[:, : H + Hkv], w, 1e-6, True).float(), cos.float(), sin.float())
    assert q.dtype == k.dtype == torch.half
    torch.testing.assert_close(q.float(), qk[:, :H], atol=4e-3, rtol=4e-3)
    torch.testing.assert_close(k[0, :, :N].transpose(0, 1).float(), qk[:, H:], atol=4e-3, rtol=4e-3)


def check_runs_on():
    """``runs_on``, which ``attention_kernel`` null asks: None where the kernels compile and agree with torch (here
    the interpreter's; it has no bfloat16), the reason where they cannot run."""
    for dtype in (torch.float32, torch.float16):
        for heads in ((4, 1, 256), (9, 3, 16), (8, 8, 64)):
            assert tree_attention.runs_on("cpu", dtype, *heads) is None, (dtype, heads)
    assert "power-of-two head size" in tree_attention.runs_on("cpu", torch.float32, 4, 1, 24)


def check_passes(tmp: Path):
    """A tiny Gemma 3 (sliding-window layers, query/key norms) and Llama: a pass with the kernels gives the tokens,
    log-probs and cache of one through ``scaled_dot_product_attention``, dense and packed (in a power-of-two bucket,
    and on exactly its real tokens: ``graph_max_tokens``), fused steps or not."""
    texts = [t for t, _ in tiny.SENTENCES]
    for name, build in (("gemma", tiny.build_gemma_base_model), ("llama", tiny.build_base_model)):
        model, tokenizer = load_model(resolve_model(str(build(tmp / name, texts))), device="cpu")
        enc = PromptEncoder(tokenizer)
        dense = [enc.prefix(t) + enc.label("PER") for t in texts[:3]]
        packed = dense[:1] + [dense[1][:2]] * 4  # its real tokens fill less than half its layout: a packed pass
        for rows, fused, exact in ((dense, False, False), (dense, True, False), (packed, False, False),
                                   (packed, True, False), (dense, False, True), (dense, True, True)):
            got = {}
            for kernel in (False, True):
                lm = StaticLM.from_hf(model.eval())
                lm.segmented = False
                lm.graph_max_tokens = 1 if exact else None
                if fused:
                    lm.fuse(compiled=False)
                if kernel:
                    lm.use_tree_attention()
                got[kernel] = tiny.dense_pass(lm, rows)
                cache = [c[..., : lm.cache.trash_col, :].clone() for c in (*lm.cache.k, *lm.cache.v)]
                got[kernel] = (*got[kernel], cache)
            assert (lm.packed_passes > 0) == (rows is packed or exact)
            assert not exact or lm.last_bucket_tokens == -(-lm.last_real_tokens // 8) * 8  # no power-of-two bucket
            assert (got[True][0] == got[False][0]).all(), (name, fused)
            for ours, theirs in zip(got[True][2], got[False][2]):  # the same keys and values in the cache
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(got[True][1], got[False][1], atol=1e-5)
            assert lm.twin().tree_attention


if __name__ == "__main__":
    import tempfile

    check_kernel()
    check_cache_writes()
    check_runs_on()
    with tempfile.TemporaryDirectory() as tmp:
        check_passes(Path(tmp))
    print("tree attention: every check passed")
