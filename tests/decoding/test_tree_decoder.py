"""The static-cache tree engine gives exactly the plain decoders' greedy results, in fewer passes."""

import numpy as np
import pytest
import torch

import tiny
from spacy_padellm.decoding.dynamic import TwoStepDecoder
from spacy_padellm.decoding.factory import make_static_lm
from spacy_padellm.decoding.plain import plain_decode
from spacy_padellm.decoding.types import DocRequest
from spacy_padellm.decoding.row_mask import RowMask
from spacy_padellm.decoding.segments import Segments, plan
from spacy_padellm.decoding.pass_layout import bucket, out_bucket, step_bucket
from spacy_padellm.decoding.static_lm import GROUPED_SDPA, StaticLM, static_lm_supported
from spacy_padellm.decoding.tree import TreeBatch, TreeDecoder

LIMITS = dict(max_count=5, max_mention_tokens=8)


def _key(res):
    preds = sorted((p.label, p.k, p.text, round(p.prob, 4), p.count, round(p.count_prob, 4)) for p in res.predictions)
    return preds, res.counts, res.unparsable_counts, res.capped_counts, res.truncated_mentions


@pytest.fixture(scope="module")
def requests():
    reqs = [DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES]
    return reqs + [DocRequest("", ["PER"]), DocRequest("Japan", []), DocRequest("Bonn and Amman .", ["LOC"])]


def test_static_lm_matches_transformers_logits(tiny_trained):
    model, enc = tiny_trained
    ids = enc.prefix(tiny.SENTENCES[1][0]) + enc.label("PER")
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    lm = StaticLM.from_hf(model)
    n = len(ids)
    lm.cache.reserve(1, n)
    tok, logp = lm.step(np.array([ids]), np.arange(n)[None], np.arange(n)[None],
                        np.tril(np.ones((n, n), dtype=bool))[None], np.arange(n)[None])
    assert (tok[0] == ref.argmax(-1).numpy()).all()
    np.testing.assert_allclose(logp[0], ref.max(-1).values.numpy(), atol=1e-4)


def test_tree_layout_equals_separate_sequences(tiny_trained):
    """Two branches after a shared prefix, in one row, give what each full sequence gives alone."""
    model, enc = tiny_trained
    lm = StaticLM.from_hf(model)
    prefix = enc.prefix(tiny.SENTENCES[0][0])
    tb = TreeBatch(lm, 1, 200)
    root = tb.root(0)
    tb.feed(root, prefix)
    handles = {}
    for label in ("LOC", "MISC"):
        branch = tb.fork(root)
        ids = enc.label(label)
        handles[label] = tb.feed(branch, ids, outputs=[len(ids) - 1])[0]
    out = tb.run()
    for label, h in handles.items():
        with torch.no_grad():
            logits = model(torch.tensor([prefix + enc.label(label)])).logits[0, -1].float()
        assert out[h][0] == int(logits.argmax())


@pytest.mark.parametrize("batch_docs,batch_tokens,speculate", [(64, 65536, True), (3, 65536, True), (1, 65536, False),
                                                              (64, 8, True)])
def test_tree_decoder_equals_plain_decoders(tiny_trained, requests, batch_docs, batch_tokens, speculate):
    model, enc = tiny_trained
    tree = TreeDecoder(StaticLM.from_hf(model), enc, max_batch_rows=batch_docs, max_batch_tokens=batch_tokens,
                       speculate=speculate, **LIMITS)
    got = tree.decode(requests)
    plain = TwoStepDecoder(model, enc, **LIMITS)
    want = plain.decode(requests)
    ref = plain_decode(model, enc, requests, **LIMITS)
    assert [_key(r) for r in got] == [_key(r) for r in want] == [_key(r) for r in ref]
    gold = {text: sorted((label, m) for m, label in mentions) for text, mentions in tiny.SENTENCES}
    for req, res in zip(requests, got):
        if req.text in gold:
            assert sorted((p.label, p.text) for p in res.predictions) == gold[req.text]
    if batch_docs == 64 and batch_tokens > 1000 and speculate:
        # Prefix + labels in one pass, terminator + tags in the next, then one pass per mention token.
        assert tree.stats.forward_passes < plain.stats.forward_passes
        assert tree.stats.prompt_tokens <= plain.stats.prompt_tokens


def test_rejected_speculation_falls_back_exactly(tiny_trained, requests):
    """A speculated terminator the model does not predict is taken back, and results do not change."""
    model, enc = tiny_trained
    tree = TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS)
    tree._term = enc.eos_id  # a wrong guess: the model writes a newline after the count
    got = tree.decode(requests)
    want = plain_decode(model, enc, requests, **LIMITS)
    assert [_key(r) for r in got] == [_key(r) for r in want]


def test_tree_decoder_on_untrained_model_agrees_and_survives(tiny_base, requests):
    model, enc = tiny.load_for_decoding(tiny_base)
    got = TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS).decode(requests)
    want = plain_decode(model, enc, requests, **LIMITS)
    assert [_key(r) for r in got] == [_key(r) for r in want]


def test_generate_equals_one_at_a_time(tiny_trained):
    model, enc = tiny_trained
    tree = TreeDecoder(StaticLM.from_hf(model), enc)
    prompts = [enc.prefix(t) + enc.label("LOC") for t, _ in tiny.SENTENCES[:4]] + [[]]
    batched = tree.generate(prompts, eos_id=enc.eos_id, max_new_tokens=12)
    for prompt, (ids, lp, done) in zip(prompts, batched):
        if not prompt:
            assert (ids, done) == ([], False)
            continue
        cur, total = list(prompt), 0.0
        for _ in range(12):
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([cur])).logits[0, -1].float(), -1)
            tok = int(logp.argmax())
            total += float(logp[tok])
            if tok == enc.eos_id:
                break
            cur.append(tok)
        assert ids == cur[len(prompt):]
        assert lp == pytest.approx(total, abs=1e-3)


def test_batches_in_flight_equal_one_at_a_time(tiny_trained, requests):
    """With two or three batches in flight (each on its own KV cache, their passes interleaved), every
    document decodes as with one batch at a time; so does ``generate``. Batches of 2 documents, of which
    only the single-document ones draft (counts, spans, mentions), so drafting and not drafting interleave."""
    model, enc = tiny_trained
    reqs = requests + [DocRequest(t, tiny.LABELS) for t, _ in reversed(tiny.SENTENCES)]
    prompts = [enc.prefix(t) + enc.label("LOC") for t, _ in tiny.SENTENCES] + [[]]
    got = {}
    for n in (1, 2, 3):
        tree = TreeDecoder(StaticLM.from_hf(model), enc, max_batch_rows=2, draft_max_docs=1, count_drafts=3,
                           span_drafts=8, inflight_batches=n, **LIMITS)
        order = []
        for i in range(n):  # which cache each pass runs on, in launch order
            lm = tree._lm(i)
            lm.launch = (lambda f, i: lambda *a: order.append(i) or f(*a))(lm.launch, i)
        got[n] = ([_key(r) for r in tree.decode(reqs)], tree.generate(prompts, eos_id=enc.eos_id, max_new_tokens=10),
                  tree.stats.forward_passes)
        assert len(tree._lms) == n and sorted(set(order)) == list(range(n))
        if n > 1:  # passes of different batches alternate
            assert any(a != b for a, b in zip(order, order[1:]))
    assert got[1] == got[2] == got[3]
    assert got[1][0] == [_key(r) for r in plain_decode(model, enc, reqs, **LIMITS)]


def test_packed_passes_equal_dense_ones(tiny_trained, requests):
    """A pass whose real tokens fill at most half of its (rows x places) layout runs its projections on the
    real tokens alone: same results as the padded layout, and it does happen in a batch of uneven docs."""
    model, enc = tiny_trained
    results = {}
    for packing in (False, True):
        lm = StaticLM.from_hf(model)
        lm.packing, lm.segmented = packing, False
        tree = TreeDecoder(lm, enc, **LIMITS)
        results[packing] = [_key(r) for r in tree.decode(requests)]
        assert (lm.packed_passes > 0) == packing
    assert results[True] == results[False]


@pytest.mark.skipif(not GROUPED_SDPA, reason="scaled_dot_product_attention without enable_gqa (torch < 2.5)")
def test_grouped_attention_decodes_as_stacked_heads(tiny_trained, requests):
    """Attention through grouped-query heads and with the query heads stacked per KV head: the same results, dense
    and packed passes alike."""
    model, enc = tiny_trained
    results = {}
    for grouped in (False, True):
        lm = StaticLM.from_hf(model)
        lm.segmented, lm.grouped_sdpa = False, grouped
        results[grouped] = [_key(r) for r in TreeDecoder(lm, enc, **LIMITS).decode(requests)]
        assert lm.packed_passes > 0 and lm.packed_passes < lm.passes
    assert results[True] == results[False]


def test_segmented_passes_equal_the_full_layout(tiny_trained, requests):
    """On the CPU a pass runs on its real tokens alone, its attention in segments of rows of like width (no
    shape buckets, no compaction): the same results as the full (rows x places) layout."""
    model, enc = tiny_trained
    results = {}
    for segmented in (False, True):
        lm = StaticLM.from_hf(model)
        lm.segmented = segmented
        tree = TreeDecoder(lm, enc, **LIMITS)
        results[segmented] = [_key(r) for r in tree.decode(requests)]
        assert (lm.packed_passes == 0) == segmented and lm.eager_passes == lm.passes
        assert lm.compacts != segmented  # finished rows cost a segmented pass nothing: they stay where they are
    assert results[True] == results[False]


def test_passes_in_blocks_of_tokens_equal_whole_passes(tiny_trained, requests):
    """A pass's projections and MLPs may run on ``row_block`` tokens at a time (as "bf16" does on the CPU): the
    same entities and probabilities as whole passes, in both CPU layouts."""
    model, enc = tiny_trained
    for whole, blocks in tiny.whole_and_in_blocks(model, enc, requests, _key, **LIMITS):
        assert blocks == whole and any(r[0] for r in blocks)


def test_segments_leave_out_padding():
    """Rows are cut where a wide row would pad the others; rows that feed nothing are left out."""
    places = np.array([2, 2, 30, 2, 0, 0, 2])
    cols = np.array([50, 50, 60, 50, 0, 0, 50])
    assert plan(places, cols, cost=100) == [(0, 2), (2, 3), (3, 4), (6, 7)]
    assert plan(places, cols, cost=10 ** 9) == [(0, 7)]
    assert plan(np.array([0, 0]), np.array([0, 0])) == []
    slots = np.array([[0, 1, 9], [5, 9, 9]])
    mask = np.zeros((2, 3, 8), dtype=bool)
    mask[0, :2, :2] = mask[1, 0, :6] = True
    mask[..., 0] = True
    seg = Segments(slots, mask, trash=9, cost=0)
    assert seg.real.tolist() == [0, 1, 3] and seg.rows.tolist() == [0, 0, 1]
    assert [p[:4] for p in seg.parts] == [(0, 1, 2, 2), (1, 2, 1, 6)] and seg.cells == 10
    assert seg.place.tolist() == [0, 1, 2]


def test_staged_graph_inputs_equal_eager_passes(tiny_trained, requests):
    """On CUDA a pass's inputs are written into one pinned buffer, copied in one transfer into the graph's
    buffers (views of one device tensor) and its tokens and log-probs read back as one tensor. The same
    staging runs on the CPU without a capture: identical results to plain eager passes, packed and dense."""
    model, enc = tiny_trained
    want = [_key(r) for r in TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS).decode(requests)]
    lm = StaticLM.from_hf(model)
    lm.use_graphs = True  # the staged path; on the CPU a CapturedPass runs the pass on its buffers instead of a capture
    tree = TreeDecoder(lm, enc, **LIMITS)
    assert [_key(r) for r in tree.decode(requests)] == want
    assert lm.captures > 1 and 0 < lm.packed_passes < lm.passes and lm.eager_passes == 0


def test_wide_passes_run_eagerly_on_their_real_tokens(tiny_trained, requests):
    """``graph_max_tokens``: a pass with more real tokens runs eagerly (no capture), packed on exactly its real tokens
    rounded up to 8 (no power-of-two bucket, whatever their share of the layout); narrower passes stay graphs. The
    same results as every pass a graph."""
    model, enc = tiny_trained
    want = [_key(r) for r in TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS).decode(requests)]
    lm = make_static_lm(model, graph_max_tokens=8)
    assert lm.graph_max_tokens == 8
    lm.use_graphs, lm.segmented = True, False  # the staged path of CUDA graphs, run here on the CPU
    shapes = []
    launch = lm.launch

    def recording(tokens, positions, slots, mask, outputs, *args, **kwargs):
        pending = launch(tokens, positions, slots, mask, outputs, *args, **kwargs)
        shapes.append((lm.last_real_tokens, lm.last_bucket_tokens, lm.last_shape[0], tokens.size))
        return pending

    lm.launch = recording
    assert [_key(r) for r in TreeDecoder(lm, enc, **LIMITS).decode(requests)] == want
    wide = [s for s in shapes if s[0] > 8]
    assert wide and lm.eager_passes == len(wide) and lm.captures > 0
    assert all(L == -(-n // 8) * 8 and (packed or L == size) for n, L, packed, size in wide)
    assert any(packed and 2 * L > size for _, L, packed, size in wide)  # packed where a bucket would not have been
    assert all(L >= n and L & (L - 1) == 0 for n, L, _, _ in shapes if n <= 8)  # the graphs' buckets
    assert (lm.real_tokens, lm.computed_tokens) == (sum(s[0] for s in shapes), sum(s[1] for s in shapes))


def test_finer_buckets_pad_less_with_the_same_results(tiny_trained, requests):
    """``bucket_steps`` 4: each pass's tokens and outputs padded to a quarter-doubling bucket (packed whenever that is
    smaller than the layout), so the projections and the LM head run on fewer padding rows; the same results as
    powers of two."""
    model, enc = tiny_trained
    want = [_key(r) for r in TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS).decode(requests)]
    computed = {}
    for steps in (1, 4):
        lm = make_static_lm(model, bucket_steps=steps)
        assert lm.bucket_steps == steps
        lm.use_graphs, lm.segmented = True, False  # the staged path of CUDA graphs, run here on the CPU
        shapes = []
        launch = lm.launch

        def recording(tokens, positions, slots, mask, outputs, *args, **kwargs):
            pending = launch(tokens, positions, slots, mask, outputs, *args, **kwargs)
            shapes.append((lm.last_real_tokens, lm.last_bucket_tokens, lm.last_shape[0], tokens.size,
                           len(outputs), lm.last_shape[5], tokens.shape))
            return pending

        lm.launch = recording
        assert [_key(r) for r in TreeDecoder(lm, enc, **LIMITS).decode(requests)] == want
        assert all(L == step_bucket(n, steps, 8) if packed else L == size for n, L, packed, size, *_ in shapes)
        packs = [packed for *_, packed, _, _, _, _ in shapes]
        assert all(packed == (step_bucket(n, steps, 8) < size if steps > 1 else 2 * step_bucket(n, 1, 8) <= size)
                   for n, _, packed, size, *_ in shapes)
        assert all(mb == out_bucket(m, *shape, steps) for *_, m, mb, shape in shapes)
        computed[steps] = (lm.real_tokens, lm.computed_tokens, sum(s[5] for s in shapes), sum(packs))
    # the same real tokens; fewer computed ones and head rows; more passes packed
    assert computed[4][0] == computed[1][0] and computed[4][1] < computed[1][1] and computed[4][2] < computed[1][2]
    assert computed[4][3] > computed[1][3]


def test_drafting_and_wide_calls_keep_caches_apart(tiny_trained, requests):
    """With CUDA graphs (the staged path, run here on the CPU), a call of a few documents (drafting) and a wide
    call decode on KV caches of their own, so neither grows the other's cache (which would forget its graphs);
    outputs are the same. Without graphs there is one set of caches."""
    model, enc = tiny_trained
    want = [_key(r) for r in TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS).decode(requests)]
    lm = StaticLM.from_hf(model)
    lm.use_graphs = True
    tree = TreeDecoder(lm, enc, draft_max_docs=1, count_drafts=3, span_drafts=8, **LIMITS)
    assert [_key(r) for r in tree.decode(requests)] == want  # wide: a twin's cache, not lm's
    assert lm.passes == 0 and len(tree._lms) == 2
    wide = tree._pools["wide"][0]
    rows, cols, graphs = wide.cache.rows, wide.cache.cols, dict(wide._graphs)
    assert [[_key(r) for r in tree.decode([req])] for req in requests] == [[w] for w in want]
    assert lm.passes > 0 and (wide.cache.rows, wide.cache.cols, wide._graphs) == (rows, cols, graphs)
    assert tree._lm(0, "wide") is wide and tree._lm(0, "draft") is lm
    plain = TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS)
    assert plain._pools["wide"] is plain._pools["draft"] and plain._lms == [plain.lm]


def test_a_variant_shares_weights_and_caches(tiny_trained, requests):
    """TreeDecoder.variant: the same settings but the changes, on the same StaticLM and KV caches (the benchmark's
    ablations cost no GPU memory of their own); same output."""
    model, enc = tiny_trained
    lm = StaticLM.from_hf(model)
    lm.use_graphs = True
    tree = TreeDecoder(lm, enc, draft_max_docs=1, count_drafts=3, span_drafts=8, speculate=False, **LIMITS)
    other = tree.variant(span_drafts=0, inflight_batches=2, max_batch_rows=2)
    assert other.lm is lm and other._pools is tree._pools and other.encoder is enc
    changed = ("span_drafts", "inflight_batches", "max_batch_docs")
    assert [getattr(other, k) for k in changed + ("count_drafts", "draft_max_docs", "speculate")] == [0, 2, 2, 3, 1, False]
    assert {k: getattr(other, k) for k in TreeDecoder._SETTINGS if k not in changed} == {
        k: getattr(tree, k) for k in TreeDecoder._SETTINGS if k not in changed}
    assert [_key(r) for r in other.decode(requests)] == [_key(r) for r in tree.decode(requests)]
    assert len(tree._lms) == 3  # lm, and the wide calls' caches: other's two in flight (the first is tree's too)


def test_unmerged_lora_model_runs_on_the_static_engine(tiny_trained, requests):
    """A PEFT model with LoRA adapters on the decoder's linear layers (as training evaluates it) runs on the
    static engine, which adds the adapters to the weights it reads: the greedy results of the merged model, the
    adapter's effect kept, the PEFT model's own weights untouched; an adapter elsewhere is named."""
    import copy

    from peft import LoraConfig, get_peft_model

    model, enc = tiny_trained
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # zero when made: the adapter would change nothing
            p.data.normal_(0, 0.2)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    assert static_lm_supported(peft_model) == (True, "")
    merged = copy.deepcopy(peft_model).merge_and_unload()
    def decoded(m):
        return [_key(r) for r in TreeDecoder(StaticLM.from_hf(m), enc, **LIMITS).decode(requests)]

    got = decoded(peft_model)
    assert got == decoded(merged) and got != decoded(model)
    assert all(torch.equal(p, before[n]) for n, p in peft_model.named_parameters())
    on_embeddings = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"]))
    ok, why = static_lm_supported(on_embeddings)
    assert not ok and "adapter on" in why and "embed_tokens" in why


def test_supported_and_buckets(tiny_trained):
    model, _ = tiny_trained
    assert static_lm_supported(model) == (True, "")
    assert [bucket(n) for n in (1, 2, 3, 5, 64, 65)] == [1, 2, 4, 8, 64, 128]
    assert bucket(3, 64) == 64
    lm = StaticLM.from_hf(model)
    with pytest.raises(ValueError, match="reserve"):
        lm.step(np.zeros((1, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.int64),
                np.ones((1, 1, 1), dtype=bool), np.zeros((1, 1), dtype=np.int64))


def test_drafts_from_the_text_save_passes_and_change_nothing(tiny_trained, requests):
    """Mentions continue as the text does: drafted continuations are accepted, so fewer passes, same output."""
    model, enc = tiny_trained
    plain = TreeDecoder(StaticLM.from_hf(model), enc, draft_tokens=0, **LIMITS)
    drafted = TreeDecoder(StaticLM.from_hf(model), enc, draft_tokens=8, **LIMITS)
    want = plain.decode(requests)
    got = drafted.decode(requests)
    assert [_key(r) for r in got] == [_key(r) for r in want]
    sentences = requests[: len(tiny.SENTENCES)]  # (the other docs have mentions the text does not hold)
    plain.stats = type(plain.stats)()
    drafted.stats = type(drafted.stats)()
    plain.decode(sentences)
    drafted.decode(sentences)
    assert plain.stats.draft_tokens == 0
    assert drafted.stats.accepted_draft_tokens > 0
    assert drafted.stats.draft_tokens >= drafted.stats.accepted_draft_tokens
    assert drafted.stats.forward_passes < plain.stats.forward_passes
    assert drafted.stats.generated_tokens == plain.stats.generated_tokens
    # a batch of more than draft_max_docs documents decodes without drafts, to the same output
    wide = TreeDecoder(StaticLM.from_hf(model), enc, draft_tokens=8, draft_max_docs=2, **LIMITS)
    assert [_key(r) for r in wide.decode(requests)] == [_key(r) for r in want]
    assert wide.stats.draft_tokens == 0
    assert wide.generate([enc.prefix("Japan beat Syria")] * 3, eos_id=enc.eos_id, max_new_tokens=4) == \
        plain.generate([enc.prefix("Japan beat Syria")] * 3, eos_id=enc.eos_id, max_new_tokens=4)
    assert wide.stats.draft_tokens == 0
    # a wrong draft is taken back: force one by drafting from a different text
    wrong = TreeDecoder(StaticLM.from_hf(model), enc, draft_tokens=8, **LIMITS)
    wrong._mention_drafts = lambda text, ids: [enc.mention(" Zwingmann in Bonn")[:3], enc.mention("ria Cup")]
    assert [_key(r) for r in wrong.decode(requests)] == [_key(r) for r in want]
    assert wrong.stats.draft_tokens > wrong.stats.accepted_draft_tokens


def test_count_and_span_drafts_decode_a_sentence_in_one_pass_and_change_nothing(tiny_trained, requests):
    """The counts 0..2 and their mention tags are fed with the label prompts, so a count the model confirms
    yields its mentions' first tokens in pass 1 (one pass fewer); with span drafts after each tag (mentions
    copied from the text's capitalised words), whole mentions are confirmed in pass 1 too: a sentence whose
    counts are at most 2 decodes in one pass. Greedy output is the same either way."""
    model, enc = tiny_trained
    without = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=0, **LIMITS)
    counts = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=0, **LIMITS)
    spans = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, **LIMITS)  # CUDA's 3 (and 4)
    cpu = TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS)
    assert (cpu.count_drafts, cpu.span_drafts) == (0, 0)  # the CPU's defaults: a wider pass costs more there
    assert [n for n, _ in counts._count_chains()] == [0, 1, 2]
    want = [_key(r) for r in without.decode(requests)]
    assert [_key(r) for r in counts.decode(requests)] == want
    assert [_key(r) for r in spans.decode(requests)] == want
    for text, mentions in tiny.SENTENCES:  # one document at a time: the number of passes is its latency
        one = [DocRequest(text, tiny.LABELS)]
        want_one = [_key(r) for r in without.decode(one)]
        for tree in (without, counts, spans):
            tree.stats = type(tree.stats)()
            assert [_key(r) for r in tree.decode(one)] == want_one
        drafted = max([sum(lab == label for _, lab in mentions) for label in tiny.LABELS]) < 3
        passes = [t.stats.forward_passes for t in (without, counts, spans)]
        # sentence 4 has 3 LOC mentions (a count not drafted); the others decode in 1 pass with span drafts
        assert passes[1] == passes[0] - int(drafted)
        assert passes[2] == (1 if drafted else passes[1])
        assert counts.stats.generated_tokens == spans.stats.generated_tokens
        assert spans.stats.prompt_tokens <= counts.stats.prompt_tokens  # confirmed tags count as drafts
    # wrong drafts are taken back: "1" then a digit where the model writes the terminator, so the count goes
    # on from the draft's branch after the first token; a chain nobody writes; span drafts from another text
    wrong = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, **LIMITS)
    one, two = enc.count(1)[0], enc.count(2)[0]
    wrong._chains = [(1, [one, two]), (2, [enc.eos_id, two])]
    assert [_key(r) for r in wrong.decode(requests)] == want
    wrong = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, **LIMITS)
    other = wrong._span_candidates(["Werner Zwingmann met the European Commission and Jordan"])[0]
    assert other and all(len(d) <= wrong.span_draft_tokens for d in other)
    wrong._span_drafts_of = lambda starts, encoded: [other for _ in starts]
    assert [_key(r) for r in wrong.decode(requests)] == want
    assert wrong.stats.draft_tokens > wrong.stats.accepted_draft_tokens
    # a call of at most draft_max_docs documents encodes its span candidates with the prefixes, in one call
    texts = [r.text for r in requests]
    starts = [spans._span_starts(t) for t in texts]
    prefixes, found = enc.prefixes_and_mentions(texts, [s for st in starts for s in st])
    assert prefixes == enc.prefixes(texts) and spans._span_drafts_of(starts, found) == spans._span_candidates(texts)
    # a count longer than max_count_tokens is not drafted (plain decoding stops it there and opens no mention)
    short = dict(LIMITS, max_count_tokens=1)
    want_short = [_key(r) for r in TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=0, **short).decode(requests)]
    capped = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, **short)
    assert capped._count_chains() == [] and [_key(r) for r in capped.decode(requests)] == want_short
    # the batch's span-draft budget is shared by its tags: fewer span tokens, the same output
    small = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, span_draft_budget=60, **LIMITS)
    assert [_key(r) for r in small.decode(requests)] == want
    big = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, **LIMITS)
    big.decode(requests)
    assert small.stats.draft_tokens < big.stats.draft_tokens
    # drafts off (draft_tokens=0) turns count and span drafts off too; so does a batch above draft_max_docs
    off = TreeDecoder(StaticLM.from_hf(model), enc, draft_tokens=0, **LIMITS)
    assert off.count_drafts == 0 and off.span_drafts == 0
    wide = TreeDecoder(StaticLM.from_hf(model), enc, draft_max_docs=1, count_drafts=3, span_drafts=8, **LIMITS)
    assert [_key(r) for r in wide.decode(requests)] == want
    assert wide.stats.draft_tokens == 0


def test_span_drafts_come_from_runs_of_capitalised_words(tiny_trained, requests):
    """A span draft is a run of capitalised words or numbers from its first word to the run's end (at most
    span_draft_tokens words, then tokens): the runs in text order, then the runs' later words; at most
    2 * span_drafts strings are encoded. "words" keeps the next 4 words of each capitalised word. Either way
    the output is the same, and the runs decode the tiny sentences in no more passes."""
    model, enc = tiny_trained
    runs = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, span_draft_tokens=3, **LIMITS)
    text = "SOCCER - JAPAN GET LUCKY WIN , said Nadim Ladki in Al Ain on 1996-08-22 ."
    assert runs._span_starts(text) == ["SOCCER", "JAPAN GET LUCKY", "Nadim Ladki", "Al Ain", "1996-08-22",
                                       "GET LUCKY WIN", "LUCKY WIN", "WIN", "Ladki", "Ain"]
    # the text's own characters between a run's words (what the model copies), whatever the whitespace
    assert runs._span_starts("  Werner\tZwingmann  met  the  European\nCommission ") == [
        "Werner\tZwingmann", "European\nCommission", "Zwingmann", "Commission"]
    assert runs._span_starts("no capitals here") == [] and runs._span_starts("") == []
    runs.span_drafts = 2
    assert runs._span_starts(text) == ["SOCCER", "JAPAN GET LUCKY", "Nadim Ladki", "Al Ain"]
    for d in runs._span_candidates([text])[0]:
        assert 0 < len(d) <= runs.span_draft_tokens
    words = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, span_source="words", **LIMITS)
    assert words._span_starts("EU rejects German call to boycott British lamb .") == [
        "EU rejects German call", "German call to boycott", "British lamb ."]
    with pytest.raises(ValueError, match="span_source"):
        TreeDecoder(StaticLM.from_hf(model), enc, span_source="nouns", **LIMITS)
    base = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=0, **LIMITS)
    want = [[_key(r)] for r in base.decode(requests)]
    runs = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=8, **LIMITS)
    for tree in (words, runs):
        tree.stats = type(tree.stats)()
        assert [[_key(r) for r in tree.decode([req])] for req in requests] == want
    assert runs.stats.forward_passes <= words.stats.forward_passes
    assert (TreeDecoder(StaticLM.from_hf(model), enc, **LIMITS).span_source, base.span_draft_tokens) == ("runs", 6)


def test_drafts_never_grow_the_cache(tiny_trained):
    """Growing the KV cache forgets every captured CUDA graph, so drafts (optional) are fed only as far as
    the cache's columns go; the tokens a decode needs still grow it."""
    model, enc = tiny_trained
    lm = StaticLM.from_hf(model)
    tb = TreeBatch(lm, 1, 40)
    root = tb.root(0)
    quarter = lm.cache.cols // 4  # kept for the tokens decoding needs
    tb.feed(root, list(range(10, 10 + lm.cache.cols - 20 - quarter)))  # leaves 19 columns for drafts
    assert tb.room(root) == 19 + quarter and tb.draft_room(root) == 19
    fed = tb.feed_children(root, [[1] * 8, [2] * 8, [3] * 8, [4] * 2])
    assert [ids for _, ids, _ in fed] == [[1] * 8, [2] * 8]  # the third does not fit: it and the rest are left
    assert [len(hs) for _, _, hs in fed] == [8, 8] and tb.draft_room(root) == 3
    cols = lm.cache.cols
    tb.feed(root, [5] * (quarter + 10))  # needed tokens do grow it
    assert lm.cache.cols > cols
    out = tb.run()
    assert set(out) == {h for _, _, hs in fed for h in hs}


def test_prompt_lookup_drafts():
    from spacy_padellm.decoding.tree.drafts import _PromptLookup

    look = _PromptLookup([5, 6, 7, 5, 8, 9])
    assert look.draft([], 3) == []
    assert look.draft([1], 3) == []
    assert look.draft([4, 5], 3) == [6, 7, 5]  # first occurrence of 5
    assert look.draft([7, 5], 2) == [8, 9]  # the two-token match wins
    assert look.draft([9], 3) == []  # nothing follows the end of the prompt


def _loop_layout(tb, feeds, B):
    """The pass layout built the plain way, one chain at a time (what TreeBatch.run used to do): rows by
    slot, a row's chains in feed order, each token attending to its branch's columns and its chain's
    earlier ones; padded to the bucket as StaticLM.step pads."""
    from spacy_padellm.decoding.pass_layout import pad_step

    chains = {}
    for f in feeds:
        chains.setdefault(f["row"], []).append(f)
    rows = sorted(chains, key=lambda r: tb.slot[r])
    T = max(sum(len(c["ids"]) for c in chains[r]) for r in rows)
    O = max(sum(len(c["outputs"]) for c in chains[r]) for r in rows)
    S = max(tb.ncols[r] for r in rows)
    tokens, positions = np.zeros((B, T), dtype=np.int64), np.zeros((B, T), dtype=np.int64)
    slots = np.full((B, T), tb.lm.cache.trash_col, dtype=np.int64)
    mask, used = np.zeros((B, T, S), dtype=bool), np.zeros((B, T), dtype=bool)
    out_idx, want = np.zeros((B, max(O, 1)), dtype=np.int64), {}
    for r in rows:
        b, t, o = tb.slot[r], 0, 0
        for c in chains[r]:
            n = len(c["ids"])
            tokens[b, t: t + n] = c["ids"]
            positions[b, t: t + n] = np.arange(c["pos0"], c["pos0"] + n)
            slots[b, t: t + n] = np.arange(c["col0"], c["col0"] + n)
            used[b, t: t + n] = True
            mask[b, t: t + n, :S] = c["vis"][:S]
            mask[b, t: t + n, c["col0"]: c["col0"] + n] = np.tril(np.ones((n, n), dtype=bool))
            for i, h in zip(c["outputs"], c["handles"]):
                out_idx[b, o] = t + i % n
                want[h] = (b, o)
                o += 1
            t += n
    mask[~used, 0] = True
    Bb, Tb, Sb, Ob = tb.lm.padded_shape(B, T, S, O)
    return pad_step(tokens, positions, slots, mask, out_idx, Bb, Tb, Sb, Ob, tb.lm.cache.trash_col), want


def test_tree_batch_layout_equals_plain_loop(tiny_trained):
    """The vectorised pass layout of TreeBatch.run is exactly the one built chain by chain: several rows,
    forks, forgotten drafts, chains of one and of many tokens, outputs anywhere, rows that finish."""
    model, _ = tiny_trained
    lm = StaticLM.from_hf(model)
    lm.segmented = False  # the GPU's layout, which compacts rows as they finish
    rng = np.random.default_rng(0)
    tb = TreeBatch(lm, 5, 64)
    captured = {}
    launch, step = lm.launch, lm.step

    def spy(*arrays):
        captured["arrays"] = [a.dense() if isinstance(a, RowMask) else a.copy() for a in arrays]
        return launch(*arrays)

    lm.launch = spy
    live = {r: [tb.root(r)] for r in range(5)}
    for p in range(6):
        feeds = []
        if p == 4:  # rows 0 and 2 are done: 2 of 5 slots free, so the batch is compacted
            del live[0], live[2]
        for r, branches in live.items():
            for _ in range(int(rng.integers(1, 4))):
                parent = branches[int(rng.integers(len(branches)))]
                if p > 0 and rng.random() < 0.3 and tb.b_pos[parent] > 3:
                    tb.forget(parent, int(rng.integers(1, 3)))
                branch = tb.fork(parent) if p > 0 else parent
                n = int(rng.integers(1, 7)) if p > 0 else 12
                ids = rng.integers(3, 200, n).tolist()
                outputs = sorted(set(rng.integers(-n, n, int(rng.integers(0, 3))).tolist()))
                f = dict(row=r, ids=ids, outputs=outputs, col0=tb.ncols[r], pos0=tb.b_pos[branch])
                f["handles"] = tb.feed(branch, ids, outputs)
                f["branch"] = branch
                feeds.append(f)
                branches.append(branch)
        for f in feeds:  # what each branch sees when the pass runs (later forks and feeds included)
            f["vis"] = tb._vis[f["branch"]].copy()
        slots_before = list(tb.slot)
        out = tb.run()
        B = max(tb.slot[r] for r in live) + 1
        if p == 4:
            assert tb.slot != slots_before  # the compaction happened
        (want_arrays, want) = _loop_layout(tb, feeds, B)
        for got_a, want_a in zip(captured["arrays"][:4], want_arrays[:4]):
            assert got_a.shape == want_a.shape
            assert (got_a == want_a).all(), (p, np.argwhere(got_a != want_a)[:5], got_a.shape)
        Tb = want_arrays[0].shape[1]  # outputs are read at flat places b * T + t, in handle order
        assert captured["arrays"][4].tolist() == [b * Tb + want_arrays[4][b, o] for _, (b, o) in sorted(want.items())]
        tok, _ = step(*want_arrays)
        assert set(out) == set(want)
        for h, (b, o) in want.items():
            assert out[h][0] == int(tok[b, o])


def test_a_token_sees_its_chain_up_to_itself_even_when_forgotten(tiny_trained):
    """A chain fed and then forgotten before its pass runs (its columns no longer among what the branch sees) still
    attends to itself: each of its tokens sees the branch's columns and its chain's up to its own, as the chain-by-chain
    layout gives, for a chain of one token as for longer ones."""
    model, _ = tiny_trained
    lm = StaticLM.from_hf(model)
    lm.segmented = False
    tb = TreeBatch(lm, 1, 64)
    captured = {}
    launch = lm.launch

    def spy(*arrays):
        captured["mask"] = arrays[3].dense()
        return launch(*arrays)

    lm.launch = spy
    root = tb.root(0)
    tb.feed(root, [5, 6, 7])
    tb.run()
    for n in (1, 3):
        col0 = tb.ncols[0]
        tb.feed(root, list(range(8, 8 + n)), [n - 1])
        tb.forget(root, n)
        tb.run()
        rows = captured["mask"][0, :n, : col0 + n]
        want = np.zeros((n, col0 + n), dtype=bool)
        want[:, :3] = True  # the root's first chain
        want[:, col0:] = np.tril(np.ones((n, n), dtype=bool))
        assert (rows == want).all(), (n, rows.astype(int))


def test_one_row_may_want_a_place_more_than_once(tiny_trained):
    """A batch of one row whose outputs name one place twice (``feed`` indices -1 and n-1) wants more predictions
    than the row has places: the pass still runs, and both handles get that place's prediction."""
    model, _ = tiny_trained
    lm = StaticLM.from_hf(model)
    lm.segmented = False  # the GPU's layout: the outputs are bucketed
    tb = TreeBatch(lm, 1, 64)
    root = tb.root(0)
    ids = [5, 6, 7, 8]
    h = tb.feed(root, ids, [0, 1, 2, 3, -1])
    out = tb.run()
    assert out[h[3]] == out[h[4]]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
    assert [out[x][0] for x in h[:4]] == want


def test_count_drafts_laid_down_at_once_equal_chain_by_chain(tiny_trained):
    """A label's count drafts (counts 0..2, their tags, the span drafts after each tag) laid down from their
    _Subtree in one go leave the TreeBatch exactly as feeding them chain by chain does: the same branches,
    columns, positions, queue and handles, and the same hypotheses; when the row's draft room is too small
    for the whole subtree, it falls back to chain by chain (which drops the span drafts that do not fit)."""
    model, enc = tiny_trained
    dec = TreeDecoder(StaticLM.from_hf(model), enc, count_drafts=3, span_drafts=4, **LIMITS)
    chains = dec._count_chains()
    texts = [text for text, _ in tiny.SENTENCES[:3]]
    doc_spans = dec._span_candidates(texts)  # a shape per set of span lengths (cached), token ids per document
    assert len(chains) == 3 and all(len(spans) >= 2 for spans in doc_spans)
    assert len({tuple(map(len, spans)) for spans in doc_spans}) > 1 and len({tuple(map(tuple, s)) for s in doc_spans}) == 3
    states = []
    for at_once in (True, False):
        tb = TreeBatch(StaticLM.from_hf(model), 3, 600)
        hyps_all = []
        for row, (text, spans) in enumerate(zip(texts, doc_spans)):
            root = tb.root(row)
            tb.feed(root, enc.prefix(text))
            for label in tiny.LABELS:
                branch = tb.fork(root)
                ids = enc.label(label)
                tb.feed(branch, ids, outputs=[len(ids) - 1])
                if at_once:
                    hyps = dec._feed_count_drafts(tb, branch, dec._count_subtree(chains, spans), chains, spans)
                else:
                    hyps = [dec._feed_count_draft(tb, branch, n, chain, spans) for n, chain in chains]
                hyps_all.append([(n, chain, child, handles, tags()) for n, chain, child, handles, tags in hyps])
        queue = [tb._q_row, tb._q_branch, tb._q_col0, tb._q_pos0, tb._q_len, tb._q_ids, tb._q_out_chain, tb._q_out_i]
        states.append((hyps_all, tb.b_row, tb.b_pos, tb.ncols, queue, tb._next_handle, tb._vis[: len(tb.b_row)].copy()))
    (*got, got_vis), (*want, want_vis) = states
    assert got == want
    assert np.array_equal(got_vis, want_vis)
    assert any(drafts for hyps in got[0] for *_, tags in hyps for *_, drafts in tags)  # tags with span drafts compared
    # a row without room for the whole subtree: chain by chain, and the span drafts that do not fit are left
    tb = TreeBatch(StaticLM.from_hf(model), 1, 200)
    root = tb.root(0)
    spans = doc_spans[0]
    sub, ids = subtree = dec._count_subtree(chains, spans)
    assert len(ids) == sub.width
    cols = tb.lm.cache.cols
    tb.feed(root, [5] * (cols - 1 - cols // 4 - sub.width + 1))
    assert tb.lm.cache.cols == cols
    assert tb.draft_room(root) == sub.width - 1
    hyps = dec._feed_count_drafts(tb, root, subtree, chains, spans)
    fed_spans = sum(len(drafts) for *_, tags in hyps for *_, drafts in tags())
    assert [h[0] for h in hyps] == [0, 1, 2] and fed_spans < 3 * len(spans)
