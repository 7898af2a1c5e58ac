"""``quantize`` "int8" (the static engine's layer matrices), "int8-head" (the LM head too) and "bf16" (every matrix
in bfloat16) on the CPU, close to float32, refused elsewhere; "int8-weight-only" (every matrix in int8, converted
for each product) on any device."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tiny
from spacy_padellm.decoding.factory import build_decoder
from spacy_padellm.decoding.quantize import Bf16Weight, Int8Weight, Int8WeightOnly, linear, quantize_layers
from spacy_padellm.decoding.settings import DecodeSettings, SettingsError
from spacy_padellm.decoding.static_lm import StaticLM
from spacy_padellm.decoding.types import DocRequest
from spacy_padellm.loading import load_model, resolve_model
from spacy_padellm.text.protocol import PromptEncoder


@pytest.fixture(scope="module")
def trained(tiny_model):
    model, tokenizer = load_model(resolve_model(str(tiny_model)), device="cpu")
    return model.eval(), PromptEncoder(tokenizer)


def _decode(trained, quantize):
    """The tiny model's entities in its training sentences, decoded on weights quantized by ``quantize``, and the
    decoder."""
    model, enc = trained
    requests = [DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES]
    decoder = build_decoder(model, enc, DecodeSettings(max_count=5, max_mention_tokens=8, quantize=quantize), "padellm")
    return [sorted((p.label, p.text) for p in r.predictions) for r in decoder.decode(requests)], decoder


def test_int8_linear_is_close_to_float():
    torch.manual_seed(0)
    w, x, b = torch.randn(96, 64) * 0.05, torch.randn(7, 64), torch.randn(96)
    q = Int8Weight(w)
    want = F.linear(x, w, b)
    err = (linear(x, q, b) - want).abs().max() / want.abs().max()
    assert err < 0.03
    assert torch.equal(linear(x, w, b), want)  # a float weight is F.linear itself
    assert q.shape == (96, 64) and q.nbytes < w.numel() * 4 // 3


def test_quantize_replaces_the_layer_matrices_only(trained):
    model, _ = trained
    lm = StaticLM.from_hf(model)
    before = lm.weight_bytes
    layers = lm.layers
    lm.quantize("int8")
    assert lm.layers is not layers and all(isinstance(l.wqkv, Int8Weight) and isinstance(l.wgu, Int8Weight)
                                           and l.wd is m.wd for l, m in zip(lm.layers, layers))
    assert all(l.ln1 is m.ln1 for l, m in zip(lm.layers, layers)) and isinstance(lm.lm_head, torch.Tensor)
    assert lm.weight_bytes < before
    assert lm.twin().layers is lm.layers
    assert lm.dtype == torch.float32 and lm.row_block is None  # int8 passes are never cut into blocks
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize_layers(layers, "int4")


def test_int8_decoding_finds_the_same_entities(trained):
    """On the tiny trained model, int8 weights decode the training sentences' entities as float32 does."""
    model, enc = trained
    requests = [DocRequest(text, tiny.LABELS) for text, _ in tiny.SENTENCES]
    limits = DecodeSettings(max_count=5, max_mention_tokens=8)
    got = {}
    for quantize in (None, "int8", "int8-head"):
        decoder = build_decoder(model, enc, limits.replace(quantize=quantize), "padellm")
        got[quantize] = [sorted((p.label, p.text) for p in r.predictions) for r in decoder.decode(requests)]
        probs = [p.prob for r in decoder.decode(requests) for p in r.predictions]
        assert all(0.0 < p <= 1.0 for p in probs)
    assert got["int8"] == got[None] and got["int8-head"] == got[None]
    assert isinstance(decoder.lm.layers[0].wo, Int8Weight) and isinstance(decoder.lm.lm_head, Int8Weight)


def test_int8_head_quantizes_the_lm_head_too(trained):
    """"int8-head": the layers as "int8" does and the output layer too; the (tied) embedding stays float."""
    model, _ = trained
    lm, head_too = StaticLM.from_hf(model), StaticLM.from_hf(model)
    lm.quantize("int8")
    head_too.quantize("int8-head")
    assert isinstance(head_too.lm_head, Int8Weight) and isinstance(head_too.embed, torch.Tensor)
    assert head_too.lm_head.shape == tuple(lm.lm_head.shape) and head_too.weight_bytes < lm.weight_bytes
    assert head_too.twin().lm_head is head_too.lm_head
    hidden = torch.randn(3, lm.lm_head.shape[1])
    want = lm.logits(hidden)
    assert ((head_too.logits(hidden) - want).abs().max() / want.abs().max()) < 0.05


def test_bf16_linear_is_close_to_float():
    torch.manual_seed(0)
    w, x, b = torch.randn(96, 64) * 0.05, torch.randn(7, 64), torch.randn(96)
    half = Bf16Weight(w)
    y = linear(x, half, b)
    want = F.linear(x, w, b)
    assert y.dtype == torch.float32 and ((y - want).abs().max() / want.abs().max()) < 0.02  # a float bias: float out
    assert linear(x, half).dtype == torch.bfloat16  # else bfloat16, cast where it meets float32
    assert half.shape == (96, 64) and half.nbytes == w.numel() * 2


def test_bf16_keeps_every_matrix_in_bfloat16_and_finds_the_same_entities(trained):
    """"bf16": the four matrices of every layer, the LM head and the KV cache in bfloat16, norms, embedding and
    logits in float32; on the tiny trained model it decodes the training sentences' entities as float32 does."""
    model, _ = trained
    (want, _), (got, decoder) = _decode(trained, None), _decode(trained, "bf16")
    assert got == want and sum(map(len, want)) > 0
    lm, full = decoder.lm, StaticLM.from_hf(model)
    assert all(isinstance(getattr(l, name), Bf16Weight) for l in lm.layers for name in ("wqkv", "wo", "wgu", "wd"))
    assert isinstance(lm.lm_head, Bf16Weight) and lm.embed.dtype == torch.float32
    assert lm.layers[0].ln1.dtype == torch.float32 and lm.cache.k[0].dtype == torch.bfloat16
    assert lm.twin().dtype == torch.bfloat16 and lm.cache.cell_bytes * 2 == full.cache.cell_bytes
    assert lm.row_block == lm.twin().row_block > 0 and full.row_block is None
    hidden = torch.randn(3, lm.embed.shape[1])
    want = full.logits(hidden)
    assert lm.logits(hidden).dtype == torch.float32
    assert ((lm.logits(hidden) - want).abs().max() / want.abs().max()) < 0.02


def test_bf16_warns_on_a_cpu_without_bfloat16_instructions(trained, monkeypatch):
    model, _ = trained
    monkeypatch.setattr("spacy_padellm.decoding.static_lm.cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no bfloat16 matrix instructions"):
        StaticLM.from_hf(model).quantize("bf16")
    monkeypatch.setattr("spacy_padellm.decoding.static_lm.cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StaticLM.from_hf(model).quantize("bf16")


def test_quantize_needs_the_static_engine_on_the_cpu(trained):
    model, enc = trained
    with pytest.raises(SettingsError, match="quantize"):
        DecodeSettings(quantize="int4")
    for settings, decoding in ((DecodeSettings(quantize="int8", engine="dynamic"), "padellm"),
                               (DecodeSettings(quantize="int8"), "reference")):
        with pytest.raises(ValueError, match="static engine only"):
            build_decoder(model, enc, settings, decoding)
    lm = StaticLM.random(hidden=32, layers=1, n_heads=2, n_kv_heads=1, intermediate=64, vocab=50, device="cpu",
                         dtype=torch.float32)
    lm.device = torch.device("meta")  # stands for a GPU: only the device type is read
    for method in ("int8", "int8-head", "bf16"):
        with pytest.raises(ValueError, match="CPU only.*int8-weight-only"):
            lm.quantize(method)
    assert np.isfinite(lm.weight_bytes)
    lm.quantize("int8-weight-only")  # the one that runs on a GPU too
    assert isinstance(lm.layers[0].wd, Int8WeightOnly) and isinstance(lm.lm_head, Int8WeightOnly)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_weight_only_linear_is_close_to_float(dtype):
    torch.manual_seed(0)
    w, x, b = (torch.randn(96, 64) * 0.05).to(dtype), torch.randn(7, 64).to(dtype), torch.randn(96).to(dtype)
    q = Int8WeightOnly(w)
    assert q.q.dtype == torch.int8 and q.scale.dtype == dtype and q.q.abs().max() == 127
    want = F.linear(x.float(), w.float(), b.float())
    y = linear(x, q, b)
    assert y.dtype == dtype and ((y.float() - want).abs().max() / want.abs().max()) < 0.03
    assert q.shape == (96, 64) and q.nbytes == 96 * 64 + 96 * w.element_size()
    zero = Int8WeightOnly(torch.zeros(4, 8, dtype=dtype))  # an all-zero row: a tiny scale, no division by 0
    assert torch.equal(linear(torch.ones(2, 8, dtype=dtype), zero), torch.zeros(2, 4, dtype=dtype))


def test_int8_weight_only_quantizes_every_matrix_and_finds_the_same_entities(trained):
    """"int8-weight-only": the four matrices of every layer and the LM head in int8, the embedding, norms and KV cache
    as they were; on the tiny trained model it decodes the training sentences' entities as float32 does."""
    model, _ = trained
    (want, _), (got, decoder) = _decode(trained, None), _decode(trained, "int8-weight-only")
    assert got == want and sum(map(len, want)) > 0
    lm, full = decoder.lm, StaticLM.from_hf(model)
    assert all(isinstance(getattr(l, name), Int8WeightOnly) for l in lm.layers for name in ("wqkv", "wo", "wgu", "wd"))
    assert isinstance(lm.lm_head, Int8WeightOnly) and torch.equal(lm.embed, full.embed)
    assert lm.dtype == full.dtype and lm.cache.k[0].dtype == torch.float32 and lm.twin().lm_head is lm.lm_head
    assert lm.weight_bytes < full.weight_bytes // 3  # float32 matrices to int8 ones
    hidden = torch.randn(3, lm.embed.shape[1])
    want = full.logits(hidden)
    assert ((lm.logits(hidden) - want).abs().max() / want.abs().max()) < 0.03
