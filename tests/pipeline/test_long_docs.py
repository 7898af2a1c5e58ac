"""Long and repetitive docs through padellm_ner: windows of one sentence by default, each window's whole
sequence (prompt, text, longest output) within ``max_context_tokens`` and the model's positions, a warning
when a count was clipped, and mentions that cut a spaCy token handled by ``alignment_mode``."""

import logging

import pytest
import spacy

import tiny
from spacy_padellm.decoding.settings import SettingsError
from spacy_padellm.decoding.types import DocResult, MentionPrediction


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


@pytest.fixture(scope="module")
def nlp(tiny_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_model)})
    return nlp


@pytest.fixture(scope="module")
def wiring_nlp(tiny_untrained):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_untrained), "max_mention_tokens": 4})
    return nlp


def test_repeated_sentences_give_what_they_give_one_at_a_time(nlp):
    one_at_a_time = [ents(nlp(text)) for text, _ in tiny.SENTENCES]
    text = " ".join(t for t, _ in tiny.SENTENCES * 12)
    doc = nlp(text)
    expected = sum(len(found) for found in one_at_a_time) * 12
    assert doc._.padellm["windows"] == len(tiny.SENTENCES) * 12
    assert len(doc.ents) >= 0.95 * expected
    assert ents(doc) == [pair for found in one_at_a_time * 12 for pair in found]
    assert doc.ents[-1].end_char > len(text) - 40  # the end of the doc too


def test_window_sentences_null_packs_sentences_up_to_the_context(tiny_untrained):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_untrained), "window_sentences": None})
    assert nlp(" ".join(t for t, _ in tiny.SENTENCES))._.padellm["windows"] == 1
    nlp.get_pipe("padellm_ner").use_settings(nlp.get_pipe("padellm_ner").settings.replace(window_sentences=2))
    assert nlp(" ".join(t for t, _ in tiny.SENTENCES))._.padellm["windows"] == 3


def test_windows_fit_the_positions_with_their_prompt(wiring_nlp, monkeypatch):
    """A sentence of thousands of tokens is cut into windows whose prompt, text and longest output fit the
    tiny model's 512 positions (the default ``max_context_tokens`` is 512 too)."""
    ner = wiring_nlp.get_pipe("padellm_ner")
    decoder = ner.decoder
    decode, seen = decoder.decode, []

    def recording(requests):
        seen.extend(r.text for r in requests)
        return decode(requests)

    monkeypatch.setattr(decoder, "decode", recording)
    doc = wiring_nlp("Japan beat Syria in the Asian Cup " * 150)
    assert doc._.padellm["failed"] == 0 and doc._.padellm["windows"] == len(seen) > 1
    budget = ner.window_budget()
    assert budget.max_tokens == 512 and budget.overhead > 20
    assert all(budget.length(text) <= 512 for text in seen)
    assert max(budget.length(text) for text in seen) > 400  # windows are not cut needlessly short


@pytest.mark.parametrize("value, message", [
    (1024, r"'max_context_tokens' is 1024, more than the 512 positions the model has"),
    (24, r"'max_context_tokens' is 24, but the prompt and the longest output take \d+ tokens"),
])
def test_max_context_tokens_the_model_cannot_meet_is_an_error_before_any_doc(tiny_untrained, value, message):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_untrained), "max_context_tokens": value})
    with pytest.raises(SettingsError, match=r"\[padellm_ner\] " + message):
        nlp.initialize()


def _answering(ner, monkeypatch, result):
    """Make ``ner``'s decoder answer ``result(request)`` for every window."""
    monkeypatch.setattr(ner.decoder, "decode", lambda requests: [result(r) for r in requests])


def test_a_clipped_count_warns_once_per_pipe_call(wiring_nlp, monkeypatch, caplog):
    ner = wiring_nlp.get_pipe("padellm_ner")
    _answering(ner, monkeypatch, lambda r: DocResult(capped_counts=int("Bonn" in r.text)))
    texts = ["Paris .", "Bonn .", "Rome .", "Bonn and Bonn ."]
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        docs = list(wiring_nlp.pipe(texts, batch_size=1))
    assert [d._.padellm["capped_counts"] for d in docs] == [0, 1, 0, 1]
    warnings = [r for r in caplog.records if "max_count" in r.getMessage()]
    assert len(warnings) == 1 and "doc 1 of this call" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spacy_padellm"):
        wiring_nlp("Bonn .")
        list(wiring_nlp.pipe(["Paris ."]))
    assert len([r for r in caplog.records if "max_count" in r.getMessage()]) == 1


@pytest.mark.parametrize("mode, expected, misaligned", [
    ("strict", [], 2),
    ("contract", [], 2),
    ("expand", [("東京でJapanとSyriaが", "LOC")], 0),
])
def test_alignment_mode_of_mentions_inside_a_token(tiny_untrained, monkeypatch, mode, expected, misaligned):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": str(tiny_untrained), "alignment_mode": mode})
    preds = [MentionPrediction("LOC", 1, "Japan", 0.9, 2, 0.9), MentionPrediction("LOC", 2, "Syria", 0.8, 2, 0.9)]
    _answering(ner, monkeypatch, lambda r: DocResult(predictions=preds))
    doc = nlp("東京でJapanとSyriaが。")
    assert ents(doc) == expected and doc._.padellm["misaligned"] == misaligned
    assert ner.stats["misaligned"] == misaligned


def test_unknown_alignment_mode_is_an_error_at_add_pipe():
    with pytest.raises(SettingsError, match="'alignment_mode' must be one of strict, contract, expand"):
        spacy.blank("en").add_pipe("padellm_ner", config={"labels": ["PER"], "alignment_mode": "nearest"})


@pytest.mark.parametrize("engine", ["static", "dynamic"])
def test_pipe_equals_call_on_repeated_words(tiny_model, engine):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_model), "engine": engine})
    texts = [t for t, _ in tiny.SENTENCES[:3]] + ["Jordan " * 30, "Jordan " * 30 + ".",
                                                   " ".join(t for t, _ in tiny.SENTENCES * 3)]
    single = [(ents(nlp(t)), nlp(t)._.padellm) for t in texts]
    for batch_size in (2, 64):
        assert [(ents(d), d._.padellm) for d in nlp.pipe(texts, batch_size=batch_size)] == single
