"""padellm_ner on adversarial texts (tests/adversarial.py): no input breaks a batch, every doc comes back in
order with its spans inside it, and ``nlp.pipe`` gives what ``nlp`` gives one doc at a time. The texts go in
raw: those holding lone surrogates, which spaCy's own tokenizer rejects, come back with each one replaced by
U+FFFD, counted in ``doc._.padellm["replaced"]`` and named in one warning per call."""

import logging

import pytest
import spacy

import tiny
from adversarial import random_texts
from spacy_padellm.text.encodable import encodable

TEXTS = ([t for t, _ in tiny.SENTENCES] + ["\ud800", "Bonn \udc80 Berlin .", "Jordan " * 30, "", " \n "]
         + random_texts(7, 30, max_pieces=6))
CLEANED = [encodable(t) for t in TEXTS]  # (the text the doc holds, the characters replaced)
REPLACED = [i for i, (_, n) in enumerate(CLEANED) if n]
WARNING = "UTF-8 cannot hold"


def spans_of(doc):
    return ([(e.start, e.end, e.label_) for e in doc.ents],
            {key: [(s.start, s.end, s.label_) for s in group] for key, group in doc.spans.items()})


def replaced_warnings(caplog):
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


@pytest.fixture(scope="module")
def nlp(tiny_model):
    return tiny.pipeline(tiny_model)


@pytest.fixture(scope="module")
def singles(nlp):
    return [nlp(text) for text in TEXTS]


def test_single_docs_come_back_with_spans_inside(singles):
    assert REPLACED, "the texts hold lone surrogates"
    for (text, replaced), doc in zip(CLEANED, singles):
        assert doc.text == text
        assert all(0 <= e.start_char < e.end_char <= len(text) for e in doc.ents)
        assert doc._.padellm["failed"] == 0 and doc._.padellm["replaced"] == replaced


def test_lone_surrogates_are_replaced_not_raised(nlp, caplog):
    """spaCy's own tokenizer rejects them before any component runs; the pipeline does not."""
    with pytest.raises(UnicodeEncodeError):
        spacy.blank("en").make_doc("Bonn \ud800")
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        doc = nlp("Bonn \ud800")
    assert doc.text == "Bonn \ufffd" and doc._.padellm["replaced"] == 1 and doc._.padellm["failed"] == 0
    assert replaced_warnings(caplog) == ["[padellm_ner] 1 doc had characters UTF-8 cannot hold (lone surrogates), "
                                         "replaced by U+FFFD (doc._.padellm['replaced']): doc 0 of this call"]


def test_known_sentences_still_found(singles):
    found = [[(e.text, e.label_) for e in doc.ents] for doc in singles[:len(tiny.SENTENCES)]]
    assert found == [[(text[s:e], label) for s, e, label in tiny.char_spans(text, mentions)]
                     for text, mentions in tiny.SENTENCES]


@pytest.mark.parametrize("batch_size", [3, 16, 64])
def test_pipe_equals_one_at_a_time(nlp, singles, batch_size, caplog):
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        docs = list(nlp.pipe(TEXTS, batch_size=batch_size))
    assert [d.text for d in docs] == [text for text, _ in CLEANED]
    assert [spans_of(d) for d in docs] == [spans_of(d) for d in singles]
    assert [d._.padellm for d in docs] == [d._.padellm for d in singles]
    assert [d._.padellm["replaced"] for d in docs] == [n for _, n in CLEANED]
    [warning] = replaced_warnings(caplog)
    assert warning.endswith(f"docs {', '.join(map(str, REPLACED))} of this call")


def test_one_warning_names_every_doc_replaced(wiring_nlp, caplog):
    texts = ["Bonn .", "\ud800", "Japan .", "Smith .", "", "a \udc80 b \udfff"]
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        docs = list(wiring_nlp.pipe(texts, batch_size=4))
    assert [d.text for d in docs] == [encodable(t)[0] for t in texts]
    assert [d._.padellm["replaced"] for d in docs] == [0, 1, 0, 0, 0, 2]
    assert replaced_warnings(caplog) == ["[padellm_ner] 2 docs had characters UTF-8 cannot hold (lone surrogates), "
                                         "replaced by U+FFFD (doc._.padellm['replaced']): docs 1, 5 of this call"]


def test_clean_texts_warn_nothing(wiring_nlp, caplog):
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        docs = list(wiring_nlp.pipe(["Bonn .", "東京で \ufffd"]))
    assert [d._.padellm["replaced"] for d in docs] == [0, 0] and not replaced_warnings(caplog)


def _failing_decoder(ner, marker):
    """Make ``ner``'s decoder raise on any call holding a window that contains ``marker``."""
    decoder = ner.decoder
    decode = decoder.decode

    def flaky(requests):
        if any(marker in r.text for r in requests):
            raise RuntimeError(f"cannot decode {marker}")
        return decode(requests)

    return decoder, flaky


def test_a_failing_doc_does_not_fail_its_batch(wiring_nlp, monkeypatch, caplog):
    ner = wiring_nlp.get_pipe("padellm_ner")
    texts = ["Bonn is in Germany .", "Paris BOOM .", "", "Smith met Jones ."]
    expected = [spans_of(wiring_nlp(t)) for t in texts]
    decoder, flaky = _failing_decoder(ner, "BOOM")
    monkeypatch.setattr(decoder, "decode", flaky)
    before = ner.stats["failed"]
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        docs = list(wiring_nlp.pipe(["Bonn ."] * 5 + texts, batch_size=4))[5:]
    assert [d.text for d in docs] == texts
    assert [d._.padellm["failed"] for d in docs] == [0, 1, 0, 0]
    assert docs[1].ents == () and ner.stats["failed"] == before + 1
    assert [spans_of(d) for i, d in enumerate(docs) if i != 1] == [e for i, e in enumerate(expected) if i != 1]
    assert "doc 6 of the call" in caplog.text and "cannot decode BOOM" in caplog.text


def test_a_batch_whose_every_doc_fails_raises(wiring_nlp, monkeypatch):
    ner = wiring_nlp.get_pipe("padellm_ner")
    decoder, flaky = _failing_decoder(ner, "BOOM")
    monkeypatch.setattr(decoder, "decode", flaky)
    with pytest.raises(RuntimeError, match="cannot decode BOOM"):
        list(wiring_nlp.pipe(["BOOM one .", "", "two BOOM ."], batch_size=3))
