"""The decoding levers on the static tree engine give exactly the dynamic engine's entities and probabilities:
each lever alone and all three together, with and without drafts, on documents where they change the output."""

import pytest

import tiny
import spacy_padellm.decoding.dynamic as dynamic_module
import spacy_padellm.decoding.tree.decoder as tree_module
from spacy_padellm.decoding.dynamic import TwoStepDecoder
from spacy_padellm.decoding.static_lm import StaticLM
from spacy_padellm.decoding.tree import TreeDecoder
from spacy_padellm.decoding.types import DocRequest

LIMITS = dict(max_count=5, max_mention_tokens=8)
NOVEL = ["Bonn and Japan .", "Syria met Britain in Amman on Thursday .", "Jordan", "Peter said it rained .",
         "Amman , Bonn and Jordan met Japan and Syria in the Asian Cup ."]
LEVERS = {
    "constrain": dict(constrain_mentions=True),
    "bias": dict(count_bias=-50.0),
    "bias_per_label": dict(count_bias={"PER": -50.0, "LOC": 0.5, "MISC": 3.0}),
    "bias_positive": dict(count_bias=3.0),
    "dedupe": dict(dedupe_mentions=True),
    "all": dict(constrain_mentions=True, count_bias={"PER": -2.0, "ORG": 1.0}, dedupe_mentions=True),
}
# tree engine layouts: default CPU drafting (mention drafts), count and span drafts, no drafts nor speculation,
# batches of two documents (several batches in flight)
LAYOUTS = {
    "default": {},
    "count_and_span_drafts": dict(count_drafts=3, span_drafts=8),
    "plain_passes": dict(draft_tokens=0, speculate=False),
    "small_batches": dict(max_batch_rows=2, inflight_batches=2, count_drafts=3, span_drafts=8),
}


def _key(res):
    """A result's entities and counters, exactly."""
    preds = sorted((p.label, p.k, p.text, p.count) for p in res.predictions)
    return (preds, res.counts, res.unparsable_counts, res.capped_counts, res.truncated_mentions,
            res.redecoded_mentions, res.redecoded_dropped)


def _probs(res):
    """A result's probabilities (the engines sum log-probs of different kernels: equal to about 1e-4)."""
    return [x for p in sorted(res.predictions, key=lambda p: (p.label, p.k)) for x in (p.prob, p.count_prob)]


@pytest.fixture(scope="module")
def requests():
    texts = NOVEL + [t for t, _ in tiny.SENTENCES]
    return [DocRequest(t, list(tiny.LABELS)) for t in texts] + [DocRequest("", ["PER"]), DocRequest("Japan", [])]


@pytest.fixture(params=[False, True], ids=["model_counts", "counts_forced_to_3"])
def forced(request, monkeypatch):
    """With counts forced to 3 the memorised model repeats its mentions and writes ones the text lacks: the
    case the mention constraint and de-duplication are for."""
    if request.param:
        for module in (dynamic_module, tree_module):
            read = module.read_count
            monkeypatch.setattr(module, "read_count", lambda text, enc, n, res, read=read: min(3, n) if
                                read(text, enc, n, res) is not None else 0)
    return request.param


_DYNAMIC = {}  # (forced, lever) -> the dynamic engine's results, shared by the layouts


def _decode_both(tiny_trained, requests, forced, lever, layout):
    model, enc = tiny_trained
    tree = TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS, **LEVERS[lever], **layout)
    if (forced, lever) not in _DYNAMIC:
        _DYNAMIC[(forced, lever)] = TwoStepDecoder(model, enc, **LIMITS, **LEVERS[lever]).decode(requests)
    return tree.decode(requests), _DYNAMIC[(forced, lever)]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("lever", list(LEVERS))
def test_tree_levers_equal_dynamic_ones(tiny_trained, requests, forced, lever, layout):
    if forced and LAYOUTS[layout].get("count_drafts"):
        pytest.skip("a drafted count is taken as the count it drafts, which a forced count is not")
    got, want = _decode_both(tiny_trained, requests, forced, lever, LAYOUTS[layout])
    assert [_key(r) for r in got] == [_key(r) for r in want]
    for a, b in zip(got, want):
        assert _probs(a) == pytest.approx(_probs(b), abs=2e-4)
    # the lever changes the output here: the count bias the model's counts, the others the forced counts' mentions
    if lever.startswith("bias") != forced:
        off = TwoStepDecoder(tiny_trained[0], tiny_trained[1], **LIMITS).decode(requests)
        assert [_key(r) for r in want] != [_key(r) for r in off]
    if forced and LEVERS[lever].get("dedupe_mentions"):
        assert sum(r.redecoded_mentions for r in want) > 0



def test_steering_on_the_staged_graph_path(tiny_trained, requests):
    """On CUDA a pass replays a captured graph and the steering runs after it on the graph's kept hidden
    states; the same staging runs on the CPU without a capture: the same results as eager passes."""
    model, enc = tiny_trained
    lm = StaticLM.from_hf(model)
    lm.use_graphs = True
    levers = dict(LIMITS, **LEVERS["all"])
    got = TreeDecoder(lm, enc, **levers).decode(requests)
    want = TreeDecoder(StaticLM.from_hf(model), enc, **levers).decode(requests)
    assert [_key(r) for r in got] == [_key(r) for r in want]
    assert lm.captures > 0 and lm.eager_passes == 0
    assert any(graph.hidden is not None for graph in lm._graphs.values())
