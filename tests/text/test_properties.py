"""Property tests of spacy_padellm.text on seeded random and adversarial texts (tests/adversarial.py): the
encodable text, the protocol, windows, model views, the aligner and overlap resolution never raise, and
every window and span lies inside its text, on token boundaries.

The count of texts is ``PADELLM_PROPERTY_CASES`` (default 2,000, a few seconds). The long run:

    PADELLM_PROPERTY_CASES=100000 python -m pytest tests/text/test_properties.py -q

``PADELLM_PROPERTY_SEED`` (default 0) picks another set of texts.
"""

import os
import random

import pytest

import tiny
from adversarial import random_mentions, random_texts, token_offsets
from spacy_padellm.text.align import align_mentions
from spacy_padellm.text.encodable import REPLACEMENT, encodable
from spacy_padellm.text.overlaps import one_label_per_span, resolve_overlaps
from spacy_padellm.text.protocol import PromptEncoder, build_examples, parse_count, parse_mention
from spacy_padellm.text.windows import make_windows, model_view, sentences_from_tokens

CASES = int(os.environ.get("PADELLM_PROPERTY_CASES", "2000"))
SEED = int(os.environ.get("PADELLM_PROPERTY_SEED", "0"))
LABELS = ["PER", "LOC", "ORG"]


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder(tiny.build_tokenizer(None, [t for t, _ in tiny.SENTENCES]))


@pytest.fixture(scope="module")
def texts():
    return random_texts(SEED, CASES)


def _length(text: str) -> int:
    """A stand-in for a model tokenizer's length: words, plus one per 8 characters."""
    return len(text.split()) + len(text) // 8


def check_encodable(text: str) -> str:
    clean, replaced = encodable(text)
    clean.encode("utf-8")
    assert len(clean) == len(text)
    assert replaced == sum(a != b for a, b in zip(text, clean)) == clean.count(REPLACEMENT) - text.count(REPLACEMENT)
    return clean


def check_protocol(encoder: PromptEncoder, text: str, rng: random.Random) -> None:
    ids = encoder.prefix(text)
    assert ids and all(isinstance(i, int) for i in ids)
    assert isinstance(encoder.decode(ids), str)
    count = parse_count(text)
    assert count is None or 0 <= count < 10**6
    assert isinstance(parse_mention(text, "</s>"), str)
    mentions = [(rng.choice(LABELS), m) for m in random_mentions(rng, text, 3)]
    assert len(build_examples(text, mentions, LABELS)) >= len(LABELS)


def check_windows(text: str, tokens, max_len: int):
    windows = make_windows(text, sentences_from_tokens([(a, b, text[a:b]) for a, b in tokens]), tokens,
                           _length, max_len)
    ends = [0]
    for a, b in windows:
        assert ends[-1] <= a < b <= len(text) and text[a:b].strip()
        ends.append(b)
    for a, b in tokens:  # every token in exactly one window
        assert sum(wa <= a and b <= wb for wa, wb in windows) == 1, (a, b, windows)
    return windows


def check_view(text: str, tokens, window, text_format: str, rng: random.Random):
    view, mapping = model_view(text, [(a, text[a:b]) for a, b in tokens], *window, text_format)
    for vs, ve, ds, de in mapping:
        assert 0 <= vs < ve <= len(view) and window[0] <= ds < de <= window[1]
        assert view[vs:ve] == text[ds:de]
    preds = [(rng.choice(LABELS), k, m, rng.random()) for k, m in enumerate(random_mentions(rng, view, 6), 1)]
    spans, stats = align_mentions(view, preds, [(m[0], m[1]) for m in mapping])
    assert stats.aligned == len(spans) <= len(preds)
    to_doc_start = {m[0]: m[2] for m in mapping}
    to_doc_end = {m[1]: m[3] for m in mapping}
    doc_spans = []
    for s in spans:
        assert 0 <= s.start < s.end <= len(view)
        assert s.start in to_doc_start and s.end in to_doc_end, (s, view)
        doc_spans.append(s.__class__(to_doc_start[s.start], to_doc_end[s.end], s.label, s.prob, s.mention, s.k))
    return doc_spans


def check_overlaps(spans) -> None:
    kept, removed = one_label_per_span(spans)
    assert len({(s.start, s.end) for s in kept}) == len(kept) == len(spans) - removed
    flat, removed = resolve_overlaps(kept)
    assert len(flat) == len(kept) - removed
    assert all(a.end <= b.start for a, b in zip(flat, flat[1:]))


def check_text(encoder: PromptEncoder, text: str, rng: random.Random) -> None:
    clean = check_encodable(text)
    check_protocol(encoder, clean, rng)
    tokens = token_offsets(clean)
    if not clean.strip():
        assert make_windows(clean, [], tokens, _length, 8) == []
        return
    windows = check_windows(clean, tokens, rng.choice([2, 16, 64, 10**6]))
    spans = []
    for window in rng.sample(windows, min(3, len(windows))):  # the aligner on a few windows of each text
        spans += check_view(clean, tokens, window, rng.choice(["raw", "tokens"]), rng)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)
    check_overlaps(spans)


def test_generator_is_seeded_and_adversarial(texts):
    assert random_texts(SEED, 50) == texts[:50]
    assert random_texts(SEED + 1, 50) != texts[:50]
    joined = "".join(texts)
    for needle in ("\ud800", "\x00", "\u0301", "北京", "ירושלים", "🎉", "Jordan Jordan", "x" * 100):
        assert needle in joined, needle
    assert "" in texts and any(t and not t.strip() for t in texts)


def test_surrogates_are_replaced_one_for_one():
    assert encodable("a\ud800b\udfff") == ("a\ufffdb\ufffd", 2)
    assert encodable("ok 🎉") == ("ok 🎉", 0)


def test_text_functions_hold_on_random_texts(encoder, texts):
    rng = random.Random(SEED)
    for i, text in enumerate(texts):
        try:
            check_text(encoder, text, rng)
        except Exception as err:
            raise AssertionError(f"text {i} of seed {SEED}: {text[:200]!r}") from err
