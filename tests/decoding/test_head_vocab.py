"""``head_vocab`` "text": the LM head over the tokens a batch's outputs can be made of, on the CPU's eager passes and
on the staged path of CUDA graphs (run here on the CPU: a graph's buffers, its pass run eagerly on them)."""

import numpy as np
import spacy
import torch

import tiny
from spacy_padellm.decoding import restricted_head
from spacy_padellm.decoding.static_lm import StaticLM
from spacy_padellm.decoding.tree import TreeDecoder, steering
from spacy_padellm.decoding.types import DocRequest

LIMITS = dict(max_count=5, max_mention_tokens=8)


def _staged(model, monkeypatch, rows_min=16):
    """A StaticLM on the staged path, its restricted heads in buffers of at least ``rows_min`` rows."""
    monkeypatch.setattr(restricted_head, "HEAD_ROWS_MIN", rows_min)
    lm = StaticLM.from_hf(model)
    lm.use_graphs = True
    return lm


def _pass(lm, ids):
    n = len(ids)
    lm.cache.reserve(1, n)
    return lm.step(np.array([ids]), np.arange(n)[None], np.arange(n)[None],
                   np.tril(np.ones((n, n), dtype=bool))[None], np.arange(n)[None])


def test_restricted_head_chooses_among_its_tokens_and_normalises_over_them(tiny_trained):
    model, enc = tiny_trained
    ids = enc.prefix(tiny.SENTENCES[1][0]) + enc.label("PER")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    lm = StaticLM.from_hf(model)
    full_tok, full_lp = _pass(lm, ids)
    best = set(full_tok[0].tolist())
    allowed = sorted(best | {0, 1, 2})
    assert lm.restrict_head(allowed)
    tok, lp = _pass(lm, ids)
    assert (tok == full_tok).all()
    np.testing.assert_allclose(lp[0], torch.log_softmax(logits[:, allowed], -1).max(-1).values.numpy(), atol=1e-4)
    assert (lp >= full_lp - 1e-5).all() and (lp > full_lp + 1e-3).any()
    others = [t for t in range(logits.shape[-1]) if t not in best][:40]
    lm.restrict_head(others)
    tok, _ = _pass(lm, ids)
    assert (tok[0] == np.array(others)[logits[:, others].argmax(-1).numpy()]).all()
    assert not lm.restrict_head(None)
    tok, lp = _pass(lm, ids)
    assert (tok == full_tok).all() and np.allclose(lp, full_lp)


def test_int8_head_stays_whole_and_bf16_head_is_restricted(tiny_trained):
    model, enc = tiny_trained
    for method, restricted in (("int8-head", False), ("bf16", True)):
        lm = StaticLM.from_hf(model)
        lm.quantize(method)
        assert lm.restrict_head([0, 1, 2]) is restricted


def test_text_head_vocab_finds_the_same_entities(tiny_trained):
    model, enc = tiny_trained
    requests = [DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES] + [DocRequest("Bonn and Amman .", ["LOC"])]

    def entities(results):
        return [sorted((p.label, p.k, p.text) for p in r.predictions) for r in results]

    whole = entities(TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS).decode(requests))
    lm = StaticLM.from_hf(model)
    tree = TreeDecoder(lm, enc, head_vocab="text", **LIMITS)
    assert entities(tree.decode(requests)) == whole and sum(map(len, whole)) > 10
    assert lm.restricted.rows is None  # the whole head again once a batch is done
    assert tree.current_settings().head_vocab == "text"


def test_default_is_text_on_the_cpu_for_a_large_vocabulary(tiny_trained, monkeypatch):
    """``head_vocab`` null: "text" on the CPU for a head of at least ``HEAD_VOCAB_MIN_ROWS`` rows (Gemma 3's), else
    the whole head; a value given is kept, also by a variant."""
    from spacy_padellm.decoding.tree import decoder

    model, enc = tiny_trained
    lm = StaticLM.from_hf(model)
    assert lm.vocab_size < decoder.HEAD_VOCAB_MIN_ROWS <= 262144
    assert TreeDecoder(lm, enc).head_vocab == "all"
    monkeypatch.setattr(decoder, "HEAD_VOCAB_MIN_ROWS", lm.vocab_size)
    assert TreeDecoder(lm, enc).head_vocab == "text"
    whole = TreeDecoder(lm, enc, head_vocab="all")
    assert whole.head_vocab == "all" and whole.variant(max_count=3).head_vocab == "all"
    assert TreeDecoder(lm, enc).variant(max_count=3).head_vocab == "text"


def test_component_takes_head_vocab(tiny_model):
    texts = [t for t, _ in tiny.SENTENCES]
    found = {}
    for head_vocab in (None, "text"):
        nlp = spacy.blank("en")
        nlp.add_pipe("padellm_ner", config={"model": str(tiny_model), "device": "cpu", "head_vocab": head_vocab})
        found[head_vocab] = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    assert found["text"] == found[None] and sum(map(len, found[None])) > 10


def test_staged_restricted_head_pads_its_buffer_and_keeps_it_apart(tiny_trained, monkeypatch):
    """Under CUDA graphs the restricted rows go to a buffer of a power of two rows, the rest of it at -inf: the
    choice and log-probs are the eager restricted head's, even where every kept token's logit is below the zero
    logit of an empty buffer row; each buffer size is a graph of its own, and the whole head comes back."""
    model, enc = tiny_trained
    ids = enc.prefix(tiny.SENTENCES[1][0]) + enc.label("PER")
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    worst = logits.mean(0).argsort()[:20].tolist()  # the least likely tokens: their logits are below zero
    assert (logits[:, worst] < 0).all()
    eager = StaticLM.from_hf(model)
    full = _pass(eager, ids)
    eager.restrict_head(worst)
    want_tok, want_lp = _pass(eager, ids)
    lm = _staged(model, monkeypatch)
    assert lm.restrict_head(worst) and lm.restricted.rows.shape[0] == 32
    tok, lp = _pass(lm, ids)
    assert set(tok[0].tolist()) <= set(worst)
    assert (tok == want_tok).all() and np.allclose(lp, want_lp, atol=1e-5)
    assert lm.restrict_head(range(40)) and lm.restricted.rows.shape[0] == 64
    _pass(lm, ids)
    assert {key[-1] for key in lm._graphs} == {32, 64}
    assert not lm.restrict_head(None)
    tok, lp = _pass(lm, ids)
    assert (tok == full[0]).all() and np.allclose(lp, full[1], atol=1e-5)
    assert not lm.restrict_head(range(len(logits[0])))  # a buffer as wide as the vocabulary: the whole head


def test_staged_text_head_vocab_with_levers_finds_the_same_entities(tiny_trained, monkeypatch):
    """The decoder with ``head_vocab`` "text" and both levers on the staged path: the entities of the whole head;
    steered outputs choose among their allowed tokens from the pairs' logits, not the head's whole rows."""
    model, enc = tiny_trained
    requests = [DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES]
    levers = dict(constrain_mentions=True, dedupe_mentions=True, **LIMITS)

    def entities(results):
        return [sorted((p.label, p.k, p.text) for p in r.predictions) for r in results]

    whole = entities(TreeDecoder(StaticLM.from_hf(model), enc, **levers).decode(requests))
    lm = _staged(model, monkeypatch)
    calls = {"pairs": 0, "whole": 0}
    for name in ("pairs", "whole"):
        fn = getattr(steering, f"_apply_{name}")
        monkeypatch.setattr(steering, f"_apply_{name}",
                            lambda *a, _fn=fn, _name=name: (calls.__setitem__(_name, calls[_name] + 1), _fn(*a))[1])
    tree = TreeDecoder(lm, enc, head_vocab="text", **levers)
    assert entities(tree.decode(requests)) == whole and sum(map(len, whole)) > 10
    assert lm.captures > 0 and all(key[-1] > 0 for key in lm._graphs) and lm.restricted.rows is None
    assert calls["pairs"] > 0 and calls["whole"] == 0  # no steered output took the head's whole row
