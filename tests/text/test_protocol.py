"""The prompt encoder's batched encoding and decoding give exactly what one item at a time gives."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from spacy_padellm.text import protocol
from spacy_padellm.text.protocol import PromptEncoder

SHIPPED = Path(__file__).resolve().parents[2] / "spacy_padellm" / "models" / "conll03-smollm2-135m"
TEXTS = ["EU rejects German call to boycott British lamb .", "", "  two  spaces ", "日本，东京（１２３）。",
         "Ärzte in São Paulo 2026", "<mention 1>Japan</s>"]


def test_batched_encoding_equals_one_at_a_time():
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    assert enc.tokenizer.is_fast
    assert enc._encode_many(TEXTS) == [enc._encode(t) for t in TEXTS]
    assert enc._encoding.ok  # the fast tokenizer's backend was used and agreed
    assert enc.prefixes(TEXTS) == [enc.prefix(t) for t in TEXTS]


def test_batched_encoding_falls_back_when_the_backend_disagrees():
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    want = [enc._encode(t) for t in TEXTS]
    real = enc._encode
    enc._encode = lambda text: real(text) + [0]  # the wrapper now "disagrees" with the backend
    got = enc._encode_many(TEXTS)
    assert not enc._encoding.ok
    assert got == want  # the wrapper's own batch call, which the stand-in does not touch


@pytest.mark.parametrize("kind", ["encode", "decode"])
def test_the_backend_is_checked_on_probes_then_trusted(kind):
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    if kind == "encode":
        wrapper, many, shortcut = "_encode", enc._encode_many, enc._encoding
        item = lambda i: f"Sentence {i} in Paris ."  # noqa: E731
    else:
        wrapper, many, shortcut = "decode", enc.decode_many, enc._decoding
        item = lambda i: enc.mention(f"Paris {i}") + [enc.eos_id]  # noqa: E731
    calls = []
    real = getattr(enc, wrapper)
    setattr(enc, wrapper, lambda x: calls.append(x) or real(x))
    for i in range(40):
        assert many([item(i)]) == [real(item(i))]
    assert shortcut.ok
    # the probes once, then the first item of the first _BACKEND_CHECKS calls; none after that
    assert len(calls) == len(enc._probes()) + protocol._BACKEND_CHECKS


def test_a_probe_that_disagrees_turns_the_backend_off():
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    real = enc._encode
    enc._encode = lambda text: real(text) + ([0] if "São" in text else [])  # one probe differs
    assert enc._encode_many(["plain text"]) == [real("plain text")]
    assert not enc._encoding.ok


def _mention_outputs(enc):
    """Token sequences as mention steps write them: text pieces, some with EOS (a special token to skip)."""
    return [enc.mention(t) + [enc.eos_id] for t in TEXTS] + [enc.mention("Japan"), [], [enc.eos_id]]


def test_batched_decoding_equals_one_at_a_time():
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    seqs = _mention_outputs(enc)
    assert enc.decode_many(seqs) == [enc.decode(s) for s in seqs]
    assert enc._decoding.ok  # the backend was used and agreed
    assert enc.decode_many([]) == []


def test_batched_decoding_falls_back_when_the_wrapper_post_processes():
    # e.g. a transformers version that applies clean_up_tokenization_spaces: the wrapper's text differs
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    real = enc.decode
    enc.decode = lambda ids: real(ids).replace(" .", ".")
    seqs = _mention_outputs(enc)
    assert enc.decode_many(seqs) == [enc.decode(s) for s in seqs]
    assert not enc._decoding.ok


def test_small_and_large_batches_take_either_backend_path_with_the_same_results():
    # up to _SMALL_BATCH items the backend is called item by item (its batch methods start a thread pool)
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    enc._encode_many(["warm"]), enc.decode_many([[enc.eos_id]])  # the probes, checked once
    paths = []
    real = protocol._backend_batch
    protocol._backend_batch = lambda one, batch, items, **kw: (
        paths.append("items" if len(items) <= protocol._SMALL_BATCH else "batch") or real(one, batch, items, **kw))
    try:
        many = [f"{t} {i}" for i in range(protocol._SMALL_BATCH + 5) for t in TEXTS]
        for texts in (many, many[:3]):
            assert enc._encode_many(texts) == [enc._encode(t) for t in texts]
            seqs = [enc.mention(t) + [enc.eos_id] for t in texts]
            assert enc.decode_many(seqs) == [enc.decode(s) for s in seqs]
    finally:
        protocol._backend_batch = real
    assert paths == ["batch", "batch", "items", "items"]
    assert enc._encoding.ok and enc._decoding.ok


def test_token_texts_map_each_tokens_text_to_its_ids():
    enc = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    texts = enc.token_texts()
    assert enc.token_texts() is texts  # built once
    tok = enc.tokenizer
    assert sorted(i for ids in texts.values() for i in ids) == list(range(len(tok)))
    for i in (0, 1, 100, 5000, len(tok) - 1):
        assert i in texts[tok.decode([i])]
