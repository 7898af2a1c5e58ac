"""The fused element-wise steps (``decoding/fused.py``): a pass with them gives the eager pass's tokens and
log-probabilities, as plain torch and compiled; a step that cannot be compiled runs unfused."""

import warnings

import numpy as np
import pytest
import torch

import tiny
from spacy_padellm.decoding import fused
from spacy_padellm.decoding.factory import make_static_lm
from spacy_padellm.decoding.static_lm import GROUPED_SDPA, StaticLM
from spacy_padellm.loading import load_model, resolve_model
from spacy_padellm.text.protocol import PromptEncoder


@pytest.fixture(scope="module", params=["gemma", "llama"])
def model_and_ids(request, tmp_path_factory):
    texts = [t for t, _ in tiny.SENTENCES]
    build = tiny.build_gemma_base_model if request.param == "gemma" else tiny.build_base_model
    folder = build(tmp_path_factory.mktemp(request.param), texts)
    model, tokenizer = load_model(resolve_model(str(folder)), device="cpu")
    enc = PromptEncoder(tokenizer)
    return model.eval(), [enc.prefix(t) + enc.label("PER") for t in texts[:3]]


@pytest.mark.parametrize("compiled", [False, True])
def test_fused_pass_equals_the_eager_one(model_and_ids, compiled):
    model, rows = model_and_ids
    lm = StaticLM.from_hf(model)
    lm.segmented = False  # the GPU's layout, run eagerly
    tok, logp = tiny.dense_pass(lm, rows)
    keys, values = [c.clone() for c in lm.cache.k], [c.clone() for c in lm.cache.v]
    for c in (*lm.cache.k, *lm.cache.v):
        c.zero_()
    lm.fuse(compiled=compiled)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="fused_kernels")  # compiled for real, not run unfused
        ftok, flogp = tiny.dense_pass(lm, rows)
    assert (ftok == tok).all()
    np.testing.assert_allclose(flogp, logp, atol=1e-4)
    # the fused RoPE step wrote the keys and values into the cache, as the eager pass did (the trash column aside)
    for ours, theirs in zip((*lm.cache.k, *lm.cache.v), (*keys, *values)):
        torch.testing.assert_close(ours[..., : lm.cache.trash_col, :], theirs[..., : lm.cache.trash_col, :], atol=1e-4, rtol=1e-4)
    assert lm.twin().kernels is lm.kernels  # twins share the compiled steps


@pytest.mark.skipif(not GROUPED_SDPA, reason="scaled_dot_product_attention without enable_gqa (torch < 2.5)")
def test_grouped_attention_equals_stacked_heads(model_and_ids):
    """Attention through the grouped-query heads of ``scaled_dot_product_attention`` (no copies, a (B, 1, T, S)
    mask) gives what the g query heads of a KV head stacked as g * T rows of one give (2 query heads per KV head)."""
    model, rows = model_and_ids
    assert not StaticLM.from_hf(model).grouped_sdpa  # by default only where a fused kernel takes the grouped heads
    got = {}
    for grouped in (False, True):
        lm = StaticLM.from_hf(model)
        lm.segmented, lm.grouped_sdpa = False, grouped
        assert lm.group == 2
        got[grouped] = tiny.dense_pass(lm, rows)
    assert (got[True][0] == got[False][0]).all()
    np.testing.assert_allclose(got[True][1], got[False][1], atol=1e-5)


def test_greedy_log_sum_exp_is_torch_s():
    """The greedy step's log-sum-exp around the row maximum it has found is ``torch.logsumexp``'s, rows that are
    all -inf, hold +inf or nan included; its log-probs are the log-softmax at the argmax."""
    torch.manual_seed(0)
    x = torch.randn(6, 300) * 8
    x[1] = float("-inf")
    x[2, 3] = float("inf")
    x[3, 7] = float("nan")
    x[4, :150] = float("-inf")
    for softcap in (None, 30.0):
        tok, logp, lse = fused.greedy(x, softcap)
        capped = (x / softcap).tanh() * softcap if softcap else x
        ref = torch.logsumexp(capped, dim=-1)
        np.testing.assert_allclose(lse.numpy(), ref.numpy(), rtol=1e-6)
        assert torch.equal(tok, capped.max(dim=-1).indices)
        finite = torch.isfinite(ref)
        np.testing.assert_allclose(logp[finite].numpy(), torch.log_softmax(capped, -1)[finite].gather(
            1, tok[finite, None]).squeeze(1).numpy(), atol=1e-5)


def test_a_step_that_cannot_be_compiled_runs_unfused(monkeypatch):
    def broken(fn, **_):
        def run(*args):
            if args[0].shape[0] == 0:
                raise torch.cuda.OutOfMemoryError("not the compiler's")
            raise torch._dynamo.exc.TorchDynamoException("no compiler here\nmore")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    kernels = fused.Kernels(torch.nn.functional.silu, compiled=True)
    x = torch.randn(4, 6)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # an error of the step itself is raised
        kernels.gated(torch.randn(0, 6))
    with pytest.warns(UserWarning, match="'gated' could not be compiled .*TorchDynamoException: no compiler here"):
        out = kernels.gated(x)
    torch.testing.assert_close(out, torch.nn.functional.silu(x[:, :3]) * x[:, 3:])
    torch.testing.assert_close(kernels.gated(x), out)  # unfused from then on, without another warning


def test_fused_kernels_are_a_cuda_setting(model_and_ids):
    model, _ = model_and_ids
    assert make_static_lm(model, fused_kernels=True).kernels is None  # the CPU runs its segmented passes
