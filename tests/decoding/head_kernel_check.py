"""Checks of ``decoding/head_kernel.py`` run by Triton's interpreter on CPU tensors: started by
``test_head_kernel.py`` in a process of its own with ``TRITON_INTERPRET=1`` (set before Triton is imported).
Exits non-zero with the first failed check."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tiny  # noqa: E402
from spacy_padellm.decoding import head_kernel  # noqa: E402
from spacy_padellm.decoding.fused import greedy  # noqa: E402
from spacy_padellm.decoding.static_lm import StaticLM  # noqa: E402
from spacy_padellm.loading import load_model, resolve_model  # noqa: E402
from spacy_padellm.text.protocol import PromptEncoder  # noqa: E402


def check_kernel():
    """Against ``fused.greedy`` over the head's product: the same tokens, log-probs and log-sum-exps, for 1 to 70
    outputs (one to five blocks of rows), vocabularies that end inside a block, hidden sizes that end inside a step,
    with and without a soft-cap and padded (-inf) columns; a row whose columns are all -inf chooses token 0."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        for M, V, K in ((1, 300, 64), (5, 1000, 40), (40, 517, 64), (70, 260, 128)):
            x = torch.randn(M, K, generator=g).to(dtype)
            w = (torch.randn(V, K, generator=g) * K ** -0.5).to(dtype)
            pad = torch.where(torch.rand(V, generator=g) < 0.1, float("-inf"), 0.0)
            for softcap, p in ((None, None), (2.0, pad)):
                tok, logp, lse = head_kernel.greedy(x, w, softcap, p)
                want = greedy((x.float() @ w.float().t()).to(dtype), softcap, p)
                tol = 1e-4 if dtype == torch.float32 else 2e-2
                assert torch.equal(tok, want[0]), (dtype, M, V, K, softcap)
                torch.testing.assert_close(logp, want[1], atol=tol, rtol=tol)
                torch.testing.assert_close(lse, want[2], atol=tol, rtol=tol)
    x, w = torch.randn(2, 32), torch.randn(300, 32)
    tok, logp, lse = head_kernel.greedy(x, w, None, torch.full((300,), float("-inf")))
    assert tok.tolist() == [0, 0] and torch.isinf(lse).all() and torch.isnan(logp).all()  # as fused.greedy gives
    assert [t.shape for t in head_kernel.greedy(x[:0], w, None)] == [(0,)] * 3
    for bad, match in (((x, w.half()), "head of 32"), ((x, w[:, :16]), "head of 32"), ((torch.randn(32, 2).t(), w), "contiguous")):
        try:
            head_kernel.greedy(*bad, None)
        except ValueError as err:
            assert match in str(err), err
        else:
            raise AssertionError(f"no error for {match}")


def check_runs_on():
    """``runs_on``, which ``head_kernel`` null asks: None where the kernels compile and agree with torch (here the
    interpreter's; it has no bfloat16)."""
    for dtype in (torch.float32, torch.float16):
        for hidden in (64, 640):
            assert head_kernel.runs_on("cpu", dtype, hidden) is None, (dtype, hidden)


def check_passes(tmp: Path):
    """A tiny Gemma 3 and Llama: a pass with the kernels gives the tokens and log-probs of one without, fused steps or
    not, with the whole head or a restricted one."""
    texts = [t for t, _ in tiny.SENTENCES]
    for name, build in (("gemma", tiny.build_gemma_base_model), ("llama", tiny.build_base_model)):
        model, tokenizer = load_model(resolve_model(str(build(tmp / name, texts))), device="cpu")
        enc = PromptEncoder(tokenizer)
        rows = [enc.prefix(t) + enc.label("PER") for t in texts[:3]]
        some = sorted({t for r in rows for t in r})
        for fused, head in ((False, None), (True, None), (False, some)):
            got = {}
            for kernel in (False, True):
                lm = StaticLM.from_hf(model.eval())
                lm.segmented = False
                if fused:
                    lm.fuse(compiled=False)
                lm.use_head_kernel(kernel)
                lm.restrict_head(head)
                got[kernel] = tiny.dense_pass(lm, rows)
            assert (got[True][0] == got[False][0]).all(), (name, fused, head is not None)
            np.testing.assert_allclose(got[True][1], got[False][1], atol=1e-5)
            assert lm.twin().head_kernel


if __name__ == "__main__":
    import tempfile

    check_kernel()
    check_runs_on()
    with tempfile.TemporaryDirectory() as tmp:
        check_passes(Path(tmp))
    print("head kernel: every check passed")
