"""text/chunks.py: mention strings encoded from cached whitespace-chunk ids, only where that is checked to agree."""

from pathlib import Path

import pytest

from spacy_padellm.text import chunks as chunks_module
from spacy_padellm.text.chunks import CHECKED_CALLS, CHUNK_PROBES, ChunkedEncoder, chunks_of

SHIPPED = Path(__file__).resolve().parents[2] / "spacy_padellm" / "models" / "conll03-smollm2-135m"


class Counting:
    """An ``encode_many`` that records what it was asked to encode."""

    def __init__(self, encode_one):
        self.encode_one = encode_one
        self.calls = []

    def __call__(self, strings):
        self.calls.append(list(strings))
        return [self.encode_one(s) for s in strings]


def by_char(s):
    """A compositional toy encoding: one id per character."""
    return [ord(c) for c in s]


def merging_pairs(s):
    """Not compositional: a word and the space-word after it share one id when both are short."""
    out, words = [], s.split(" ")
    for i, w in enumerate(words):
        out.append(hash((w, words[i - 1] if i else None)) % 1000)
    return out


def test_chunks_of_cuts_before_whitespace_and_refuses_trailing_whitespace():
    assert chunks_of("United Arab  Emirates") == ["United", " Arab", "  Emirates"]
    assert chunks_of("a\n\tb") == ["a", "\n\tb"]
    assert chunks_of("") == []
    assert chunks_of("Japan ") is None
    assert chunks_of(" leading") == [" leading"]


def test_composed_ids_equal_direct_ids_and_chunks_are_encoded_once():
    enc = Counting(by_char)
    chunked = ChunkedEncoder(enc)
    strings = ["United Arab Emirates", "Arab Emirates", "United", "Emirates"]
    for _ in range(CHECKED_CALLS + 2):
        assert chunked.encode(strings) == [by_char(s) for s in strings]
    assert chunked.ok is True
    enc.calls.clear()
    assert chunked.encode(["United Arab", "Arab"]) == [by_char("United Arab"), by_char("Arab")]
    assert enc.calls == []  # every chunk was cached


def test_an_encoding_that_is_not_compositional_is_never_composed():
    enc = Counting(merging_pairs)
    chunked = ChunkedEncoder(enc)
    strings = ["New York Times", "York Times"]
    assert chunked.encode(strings) == [merging_pairs(s) for s in strings]
    assert chunked.ok is False
    for _ in range(3):
        assert chunked.encode(strings) == [merging_pairs(s) for s in strings]


def test_a_difference_seen_in_a_checked_call_turns_composition_off():
    def mostly_by_char(s):  # agrees on the probes, not on one string only a later call holds
        return [0] if s == "odd one" else by_char(s)

    chunked = ChunkedEncoder(Counting(mostly_by_char))
    assert chunked.encode(["a b"]) == [by_char("a b")]
    assert chunked.ok is True
    assert chunked.encode(["odd one", "x y"]) == [[0], by_char("x y")]
    assert chunked.ok is False
    assert chunked.encode(["odd one"]) == [[0]]


def test_strings_with_trailing_whitespace_and_empty_input_are_encoded_whole():
    chunked = ChunkedEncoder(Counting(by_char))
    for _ in range(CHECKED_CALLS):
        chunked.encode(["a b"])
    assert chunked.encode([]) == []
    assert chunked.encode(["Japan ", "Japan", ""]) == [by_char("Japan "), by_char("Japan"), []]


def test_a_full_cache_starts_again_without_losing_ids(monkeypatch):
    monkeypatch.setattr(chunks_module, "MAX_CACHED_CHUNKS", 5)
    chunked = ChunkedEncoder(Counting(by_char))
    for i in range(CHECKED_CALLS + 5):
        strings = [f"w{i} x{i} y{i} z{i}", f"x{i} q"]
        assert chunked.encode(strings) == [by_char(s) for s in strings]


@pytest.mark.skipif(not (SHIPPED / "tokenizer.json").exists(), reason="the shipped model's tokenizer is not here")
def test_the_shipped_tokenizer_composes_candidate_mentions_exactly():
    from transformers import AutoTokenizer

    from spacy_padellm.decoding.constraints import candidate_strings
    from spacy_padellm.text.protocol import PromptEncoder

    encoder = PromptEncoder(AutoTokenizer.from_pretrained(str(SHIPPED)))
    texts = list(CHUNK_PROBES) + ["SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT .",
                                  "AL-AIN , United Arab Emirates 1996-12-06",
                                  "Nadim Ladki scored twice in the 2-1 win over Syria 's team ."]
    for text in texts * 2:  # past the checked calls: composed ids from then on
        strings = candidate_strings(text)
        assert encoder.mentions(strings) == [encoder.mention(s) for s in strings]
    assert encoder._mention_chunks.ok is True
