"""padellm_ner on adversarial texts (tests/adversarial.py): no input breaks a batch, every doc comes back in
order with its spans inside it, and ``nlp.pipe`` gives what ``nlp`` gives one doc at a time. spaCy's own
tokenizer rejects lone surrogates before any component runs, so texts go through ``text.encodable`` first,
as the README advises."""

import logging

import pytest

import tiny
from adversarial import random_texts
from spacy_padellm.text.encodable import encodable

RAW = ([t for t, _ in tiny.SENTENCES] + ["\ud800", "Bonn \udc80 Berlin .", "Jordan " * 30, "", " \n "]
       + random_texts(7, 30, max_pieces=6))
TEXTS = [encodable(t)[0] for t in RAW]


def spans_of(doc):
    return ([(e.start, e.end, e.label_) for e in doc.ents],
            {key: [(s.start, s.end, s.label_) for s in group] for key, group in doc.spans.items()})


@pytest.fixture(scope="module")
def nlp(tiny_model):
    return tiny.pipeline(tiny_model)


@pytest.fixture(scope="module")
def singles(nlp):
    return [nlp(text) for text in TEXTS]


def test_single_docs_come_back_with_spans_inside(singles):
    for text, doc in zip(TEXTS, singles):
        assert doc.text == text
        assert all(0 <= e.start_char < e.end_char <= len(text) for e in doc.ents)
        assert doc._.padellm["failed"] == 0


def test_spacy_rejects_lone_surrogates_before_any_component(nlp):
    """Why texts are cleaned first (the README says so): ``make_doc`` raises, no component can help."""
    assert any("\ud800" <= c <= "\udfff" for t in RAW for c in t)
    with pytest.raises(UnicodeEncodeError):
        nlp.make_doc("Bonn \ud800")
    doc = nlp("Bonn " + encodable("\ud800")[0])
    assert doc.text == "Bonn \ufffd" and doc._.padellm["failed"] == 0


def test_known_sentences_still_found(singles):
    found = [[(e.text, e.label_) for e in doc.ents] for doc in singles[:len(tiny.SENTENCES)]]
    assert found == [[(text[s:e], label) for s, e, label in tiny.char_spans(text, mentions)]
                     for text, mentions in tiny.SENTENCES]


@pytest.mark.parametrize("batch_size", [3, 16, 64])
def test_pipe_equals_one_at_a_time(nlp, singles, batch_size):
    docs = list(nlp.pipe(TEXTS, batch_size=batch_size))
    assert [d.text for d in docs] == TEXTS
    assert [spans_of(d) for d in docs] == [spans_of(d) for d in singles]
    assert [d._.padellm for d in docs] == [d._.padellm for d in singles]


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
