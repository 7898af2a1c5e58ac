"""Checks of ``decoding/head_kernel.py`` run by Triton's interpreter on CPU tensors: started by
``test_head_kernel.py`` in a process of its own with ``TRITON_INTERPRET=1`` (set before Triton is imported), with
the folder of a tiny model that has memorised tiny.SENTENCES as its argument.
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
import spacy_padellm.decoding.tree.decoder as tree_module  # noqa: E402
from spacy_padellm.decoding.tree import TreeDecoder  # noqa: E402
from spacy_padellm.decoding.tree.steering import Steering  # noqa: E402
from spacy_padellm.decoding.types import DocRequest  # noqa: E402
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
    # logits far below 0 beside whole blocks of -inf (a restricted head's empty rows): finite, as torch's
    pad = torch.zeros(300)
    pad[10:] = float("-inf")
    far = torch.full((1, 32), 1.0), torch.cat([-3.2 - 0.05 * torch.arange(10.0)[:, None].expand(10, 32),
                                                torch.zeros(290, 32)])
    tok, logp, lse = head_kernel.greedy(*far, None, pad)
    want = greedy(far[0] @ far[1].t(), None, pad)
    assert torch.isfinite(lse).all() and tok.tolist() == want[0].tolist()
    torch.testing.assert_close(lse, want[2])
    assert [t.shape for t in head_kernel.greedy(x[:0], w, None)] == [(0,)] * 3
    for bad, match in (((x, w.half()), "head of 32"), ((x, w[:, :16]), "head of 32"), ((torch.randn(32, 2).t(), w), "contiguous")):
        try:
            head_kernel.greedy(*bad, None)
        except ValueError as err:
            assert match in str(err), err
        else:
            raise AssertionError(f"no error for {match}")


class _Head:
    """What ``Steering.apply`` reads of a StaticLM: a float head of (V, K) rows, through the kernels or torch."""

    def __init__(self, weight, kernel: bool, restricted: bool = False):
        self.lm_head, self.head_kernel, self.head_restricted = weight, kernel, restricted
        self.gives_pairs, self.final_softcap, self.vocab_size = True, None, weight.shape[0]

    def logits(self, hidden):
        return hidden @ self.lm_head.t()

    def pair_logits(self, hidden, ids):
        return (hidden * self.lm_head[ids]).sum(-1)


def check_choose_among():
    """``Steering.apply`` with the kernel gives the choices of its torch path: small integer weights (many ties, broken
    by the lowest id), outputs held to allowed tokens (some twice), some biased (those take whole rows in both), a
    restricted head's cap at 0, and tokens and log-probs in the float64 rows of a graph's result."""
    import random

    rng = random.Random(0)
    for trial in range(150):
        vocab, n = rng.choice([7, 40, 300]), rng.randint(1, 8)
        weight = torch.randint(-2, 3, (vocab, 16)).float()
        hidden = torch.randint(-2, 3, (n, 16)).float()
        steer = Steering()
        for i in range(n):
            for _ in range(rng.choice([0, 1, 1, 2])):
                steer.allow(i, rng.sample(range(vocab), rng.randint(1, min(vocab, 40))))
            if rng.random() < 0.2:
                steer.bias(i, rng.randrange(vocab), rng.choice([-2.0, 3.0]))
        if not steer:
            continue
        restricted = rng.random() < 0.3
        lse = torch.logsumexp(hidden @ weight.t(), dim=-1) - (2.0 if restricted else 0.0)
        got = {}
        for kernel in (False, True):
            result = torch.full((2, n), -1.0, dtype=torch.float64)
            steer.apply(_Head(weight, kernel, restricted), hidden, lse, result[0], result[1])
            got[kernel] = result
        assert torch.equal(got[True][0], got[False][0]), trial
        torch.testing.assert_close(got[True][1], got[False][1], atol=1e-5, rtol=1e-5)


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


def check_decoding(model_dir: Path):
    """The tree decoder with the mention constraint and de-duplication (steered passes), count and span drafts, on a
    tiny model that has memorised tiny.SENTENCES: the same entities with the kernels as without, with the model's
    counts and with every count read as 3 (repeats and mentions the text lacks: what the levers steer), and with the
    wide passes packed on exactly their real tokens (``graph_max_tokens``). Run last: it replaces the decoder's count
    reader."""
    model, enc = tiny.load_for_decoding(model_dir)
    texts = ["Bonn and Japan .", "Syria met Britain in Amman on Thursday ."] + [t for t, _ in tiny.SENTENCES]
    requests = [DocRequest(t, list(tiny.LABELS)) for t in texts]
    read = tree_module.read_count
    for forced in (False, True):
        if forced:
            tree_module.read_count = lambda text, e, n, res: min(3, n) if read(text, e, n, res) is not None else 0
        got = {}
        for kernel, wide in ((False, None), (True, None), (True, 8)):  # wide: passes of over 8 tokens exactly packed
            lm = StaticLM.from_hf(model)
            lm.segmented, lm.graph_max_tokens = False, wide
            lm.use_head_kernel(kernel)
            decoder = TreeDecoder(lm, enc, constrain_mentions=True, dedupe_mentions=True, count_drafts=3,
                                  span_drafts=4, max_count=5, max_mention_tokens=8)
            got[kernel, wide] = decoder.decode(requests)
        for variant in ((True, None), (True, 8)):
            for ours, theirs in zip(got[variant], got[False, None]):
                assert [(p.label, p.k, p.text) for p in ours.predictions] == \
                    [(p.label, p.k, p.text) for p in theirs.predictions], (forced, variant)
                np.testing.assert_allclose([p.prob for p in ours.predictions],
                                           [p.prob for p in theirs.predictions], rtol=1e-4)
        assert sum(len(r.predictions) for r in got[True, None]) >= len(texts)


if __name__ == "__main__":
    import tempfile

    check_kernel()
    check_choose_among()
    check_runs_on()
    with tempfile.TemporaryDirectory() as tmp:
        check_passes(Path(tmp))
    check_decoding(Path(sys.argv[1]))
    print("head kernel: every check passed")
