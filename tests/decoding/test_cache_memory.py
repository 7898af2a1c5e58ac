"""The static engine's memory: its KV cache stays within ``max_cache_mb`` whatever the number of documents,
with the same results; widening a cache keeps what its rows hold; a model loaded for inference shares the
weights the engine fuses."""

import numpy as np
import pytest
import torch

import tiny
from spacy_padellm.decoding.kv_cache import KVCache
from spacy_padellm.decoding.settings import DecodeSettings
from spacy_padellm.decoding.static_lm import StaticLM
from spacy_padellm.decoding.tree import TreeBatch, TreeDecoder
from spacy_padellm.decoding.tree.scheduler import chunks
from spacy_padellm.decoding.types import DocRequest
from spacy_padellm.loading import load_model, resolve_model
from spacy_padellm.text.protocol import PromptEncoder

LIMITS = dict(max_count=5, max_mention_tokens=8)


@pytest.fixture(scope="module")
def base(tiny_base):
    model, tokenizer = load_model(resolve_model(str(tiny_base)), device="cpu")
    return model, PromptEncoder(tokenizer)


def _key(res):
    return sorted((p.label, p.k, p.text, round(p.prob, 5)) for p in res.predictions), res.counts


def _reserved(lm, monkeypatch):
    """The (rows, cols) of every cache ``lm`` and its twins allocate."""
    sizes = []
    reserve = KVCache.reserve

    def spy(self, rows, cols):
        reserve(self, rows, cols)
        sizes.append((self.rows, self.cols))

    monkeypatch.setattr(KVCache, "reserve", spy)
    return sizes


def test_a_memory_cap_cuts_batches_and_keeps_results(base, monkeypatch):
    model, enc = base
    requests = [DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES] * 8
    want = TreeDecoder(StaticLM.from_hf(model), enc, max_cache_mb=None, **LIMITS).decode(requests)
    lm = StaticLM.from_hf(model)
    capped = TreeDecoder(lm, enc, max_cache_mb=1, **LIMITS)
    sizes = _reserved(lm, monkeypatch)
    got = capped.decode(requests)
    assert [_key(r) for r in got] == [_key(r) for r in want]
    cap = 2 ** 20 // lm.cache.cell_bytes
    assert len(sizes) > 1 and all(rows * cols <= cap for rows, cols in sizes)
    assert lm.cache.k is None or lm.cache.rows * lm.cache.cols <= cap  # what is kept between calls


def test_the_cap_defaults_to_1024_mib_on_the_cpu(base):
    model, enc = base
    assert TreeDecoder(StaticLM.from_hf(model), enc).max_cache_mb == 1024
    assert DecodeSettings().max_cache_mb is None


def test_chunks_close_a_batch_that_would_not_fit():
    fits = lambda n, widest: n * widest <= 100  # noqa: E731
    assert chunks(list(range(6)), [10, 20, 30, 40, 50, 200], 64, 10**6, fits) == [[0, 1, 2], [3, 4], [5]]
    assert chunks(list(range(3)), [10, 20, 30], 64, 10**6) == [[0, 1, 2]]


def test_widening_keeps_the_first_rows_and_what_they_hold(base):
    model, _ = base
    lm = StaticLM.from_hf(model)
    lm.cache.reserve(4, 60)
    for cache in (lm.cache.k, lm.cache.v):
        for layer in cache:
            layer.copy_(torch.randn_like(layer))
    before = [layer[:2].clone() for layer in lm.cache.k + lm.cache.v]
    lm.cache.widen(200, rows=2)
    assert (lm.cache.rows, lm.cache.cols) == (2, 256)
    for old, layer in zip(before, lm.cache.k + lm.cache.v):
        assert layer.shape == (2, lm.n_kv, 256, lm.head_dim)
        assert torch.equal(layer[:, :, :64], old) and not layer[:, :, 64:].any()


def test_moving_rows_copies_only_those_rows_below_the_column(base):
    model, _ = base
    lm = StaticLM.from_hf(model)
    lm.cache.reserve(8, 60)
    for layer in lm.cache.k + lm.cache.v:
        layer.copy_(torch.randn_like(layer))
    before = [layer.clone() for layer in lm.cache.k + lm.cache.v]
    lm.cache.move_rows([0, 2], [6, 5], upto_col=10)
    for old, layer in zip(before, lm.cache.k + lm.cache.v):
        assert torch.equal(layer[[0, 2], :, :10], old[[6, 5], :, :10])
        assert torch.equal(layer[[0, 2], :, 10:], old[[0, 2], :, 10:])  # past the column: as they were
        untouched = [1, 3, 4, 5, 6, 7]
        assert torch.equal(layer[untouched], old[untouched])


def test_a_compaction_moves_only_the_rows_past_the_live_count(base):
    """Rows 0 and 2 of 5 are done: of the three live ones, the row in the first three cache rows stays and the two
    past them fill the free rows 0 and 2."""
    model, _ = base
    lm = StaticLM.from_hf(model)
    lm.segmented = False  # the GPU's layout, which compacts rows as they finish
    tb = TreeBatch(lm, 5, 64)
    moves = []
    move = lm.cache.move_rows
    lm.cache.move_rows = lambda dst, src, upto: (moves.append((list(dst), list(src), upto)), move(dst, src, upto))
    for r in range(5):
        tb.feed(tb.root(r), [5] * (3 + r), outputs=[-1])
    tb.run()
    for r in (1, 3, 4):
        tb.feed(tb.root(r), [6], outputs=[0])
    tb.run()
    assert moves == [([0, 2], [3, 4], 8)]  # rows 3 and 4 hold 7 and 8 columns: the copy stops at the widest
    assert [tb.slot[r] for r in range(5)] == [None, 1, None, 0, 2]


def test_a_dropped_model_frees_its_cache_without_the_garbage_collector(base):
    """No reference cycle holds a StaticLM's cache (or, on CUDA, its graphs): decoding runs with the collector paused."""
    import gc
    import weakref

    model, _ = base
    lm = StaticLM.from_hf(model)
    lm.use_graphs = True  # the staged path: its captured passes are kept by the model
    lm.cache.reserve(2, 8)
    lm.step(np.array([[5, 6]]), np.array([[0, 1]]), np.array([[0, 1]]), np.tril(np.ones((1, 2, 2), dtype=bool)),
            np.array([[1]]))
    assert lm._graphs
    cache = weakref.ref(lm.cache.k[0])
    gc.disable()
    try:
        del lm
        assert cache() is None
    finally:
        gc.enable()


def test_reserve_does_not_keep_a_union_past_the_cap(base):
    model, _ = base
    lm = StaticLM.from_hf(model)
    lm.cache.max_cells = 64 * 256 - 1
    lm.cache.reserve(64, 100)  # 64 x 128
    lm.cache.reserve(2, 200)  # 64 x 256 would pass the cap: 2 x 256 alone
    assert (lm.cache.rows, lm.cache.cols) == (2, 256)
    lm.cache.max_cells = None
    lm.cache.reserve(64, 100)
    assert (lm.cache.rows, lm.cache.cols) == (64, 256)


def test_an_inference_model_shares_the_fused_weights(tiny_base):
    model, tokenizer = load_model(resolve_model(str(tiny_base)), device="cpu")
    ids = torch.tensor([tokenizer("Japan beat Syria .")["input_ids"]])
    with torch.no_grad():
        before = model(ids).logits
    lm = StaticLM.from_hf(model)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.data_ptr() == lm.layers[0].wqkv.data_ptr()
    assert attn.k_proj.weight.data_ptr() == lm.layers[0].wqkv[attn.q_proj.weight.shape[0]:].data_ptr()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_a_model_in_training_keeps_its_own_weights(tiny_base):
    model, _ = load_model(resolve_model(str(tiny_base)), device="cpu")
    model.requires_grad_(True)
    lm = StaticLM.from_hf(model)
    assert model.model.layers[0].self_attn.q_proj.weight.data_ptr() != lm.layers[0].wqkv.data_ptr()


def _three_passes(lm, enc):
    """A batch of 8 rows: all prefixes, then one token on rows 1-7 (row 0 done), then a chain on row 5 long
    enough to widen the cache, with a token on rows 1 and 7; every pass's predictions."""
    tb = TreeBatch(lm, 8, 40)
    texts = [text for text, _ in tiny.SENTENCES * 2][:8]
    roots = [tb.root(r) for r in range(8)]
    for root, text in zip(roots, texts):
        ids = enc.prefix(text)[:30]
        tb.feed(root, ids, outputs=[len(ids) - 1])
    out = [tb.run()]
    for r in range(1, 8):
        tb.feed(roots[r], [5], outputs=[0])
    out.append(tb.run())
    tb.feed(roots[5], list(range(5, 105)), outputs=[0, 99])
    for r in (1, 7):
        tb.feed(roots[r], [6], outputs=[0])
    out.append(tb.run())
    return out


def test_widening_a_batch_keeps_its_predictions(base):
    model, enc = base
    free = StaticLM.from_hf(model)
    want = _three_passes(free, enc)
    capped = StaticLM.from_hf(model)
    capped.cache.max_cells = 10 ** 9  # a cap: widening keeps the rows of the last pass only
    got = _three_passes(capped, enc)
    assert got == want
    assert free.cache.rows == 8 and free.cache.cols == capped.cache.cols > 64  # widened from 64 columns
    assert capped.cache.rows == 8 and capped.cache.k[0].shape[0] == 8  # 7 rows of the last pass, moved to the front
