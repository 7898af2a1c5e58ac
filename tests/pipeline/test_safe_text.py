"""The tokenizer guard ``padellm_ner`` puts on ``nlp.tokenizer``: texts UTF-8 cannot hold are cleaned and
counted, and everything else is the wrapped tokenizer's (pipe, serialisation, attributes, pickling)."""

import pickle

import pytest
import spacy

import tiny
from spacy_padellm.pipeline.safe_text import REPLACED_KEY, SafeTokenizer, guard_tokenizer, replaced_count

SPECIAL = [{"ORTH": "Bon"}, {"ORTH": "nie"}]


def words(doc):
    return [t.text for t in doc]


@pytest.fixture
def blank():
    nlp = spacy.blank("en")
    guard_tokenizer(nlp)
    return nlp


def test_clean_texts_go_through_unchanged(blank):
    plain = spacy.blank("en")
    for text in ["Bonn is in Germany .", "東京でJapanとSyriaが。", "\ufffd \U0010ffff", ""]:
        doc = blank(text)
        assert words(doc) == words(plain(text)) and replaced_count(doc) == 0 and REPLACED_KEY not in doc.user_data


def test_lone_surrogates_are_replaced_one_for_one(blank):
    doc = blank("Bonn \ud800 Berlin \udc80\udfff")
    assert doc.text == "Bonn \ufffd Berlin \ufffd\ufffd" and replaced_count(doc) == 3
    assert words(doc) == words(spacy.blank("en")(doc.text))


def test_tokenizer_pipe_cleans_each_text(blank):
    docs = list(blank.tokenizer.pipe(["a", "b \ud800", "é", "\udfff\udfff"], batch_size=2))
    assert [d.text for d in docs] == ["a", "b \ufffd", "é", "\ufffd\ufffd"]
    assert [replaced_count(d) for d in docs] == [0, 1, 0, 2]


def test_wrapping_is_idempotent(blank):
    guard = blank.tokenizer
    guard_tokenizer(blank)
    assert blank.tokenizer is guard and not isinstance(guard.inner, SafeTokenizer)


def test_attributes_are_read_and_written_through(blank):
    guard = blank.tokenizer
    assert guard.vocab is blank.vocab
    guard.add_special_case("Bonnie", SPECIAL)
    assert words(blank("Bonnie .")) == ["Bon", "nie", "."]
    assert guard.explain("Bonnie")[0] == ("SPECIAL-1", "Bon")
    rules = guard.rules
    guard.rules = {}
    assert guard.inner.rules == {} and words(blank("Bonnie")) == ["Bonnie"]
    guard.rules = rules
    guard.infix_finditer = None
    assert guard.inner.infix_finditer is None
    assert not hasattr(guard, "initialize")  # spaCy asks the tokenizer whether it has one


def test_pickled_and_in_processes(blank):
    blank.tokenizer.add_special_case("Bonnie", SPECIAL)
    again = pickle.loads(pickle.dumps(blank))
    assert isinstance(again.tokenizer, SafeTokenizer)
    doc = again("Bonnie \ud800")
    assert words(doc) == ["Bon", "nie", "\ufffd"] and replaced_count(doc) == 1
    docs = list(blank.pipe(["a \ud800", "b", "\udfff c \udfff"], n_process=2, batch_size=1))
    assert [replaced_count(d) for d in docs] == [1, 0, 2] and docs[2].text == "\ufffd c \ufffd"


def test_bytes_are_the_wrapped_tokenizers(blank):
    blank.tokenizer.add_special_case("Bonnie", SPECIAL)
    data = blank.to_bytes()
    assert blank.tokenizer.to_bytes() == blank.tokenizer.inner.to_bytes()
    other = spacy.blank("en")
    guard_tokenizer(other)
    other.from_bytes(data)
    assert isinstance(other.tokenizer, SafeTokenizer) and words(other("Bonnie")) == ["Bon", "nie"]


def test_replacing_the_tokenizer_removes_the_guard(blank):
    blank.tokenizer = blank.tokenizer.inner
    with pytest.raises(UnicodeEncodeError):
        blank("\ud800")


# -- with padellm_ner ----------------------------------------------------------------------------------------


def test_padellm_ner_wraps_the_tokenizer_once(tiny_untrained):
    nlp = tiny.pipeline(tiny_untrained)
    assert isinstance(nlp.tokenizer, SafeTokenizer)
    nlp.add_pipe("padellm_ner", name="second", config={"model": str(tiny_untrained)})
    assert not isinstance(nlp.tokenizer.inner, SafeTokenizer)
    doc = nlp("Bonn \ud800 .")
    assert doc._.padellm["replaced"] == 1 and nlp.get_pipe("padellm_ner").stats["replaced"] >= 1


def test_saved_and_loaded_with_the_guard(tiny_untrained, tmp_path):
    nlp = tiny.pipeline(tiny_untrained)
    nlp.tokenizer.add_special_case("Bonnie", SPECIAL)
    nlp.to_disk(tmp_path / "pipeline")
    nlp.tokenizer.inner.to_disk(tmp_path / "plain", exclude=["vocab"])
    assert (tmp_path / "pipeline" / "tokenizer").read_bytes() == (tmp_path / "plain").read_bytes()
    assert nlp.config["nlp"]["tokenizer"]["@tokenizers"] == "spacy.Tokenizer.v1"
    loaded = spacy.load(tmp_path / "pipeline")
    assert isinstance(loaded.tokenizer, SafeTokenizer) and not isinstance(loaded.tokenizer.inner, SafeTokenizer)
    doc = loaded("Bonnie \ud800 .")
    assert words(doc) == ["Bon", "nie", "\ufffd", "."] and doc._.padellm["replaced"] == 1


def test_a_pipeline_with_padellm_ner_pickles(tiny_untrained):
    nlp = tiny.pipeline(tiny_untrained)
    again = pickle.loads(pickle.dumps(nlp))
    assert isinstance(again.tokenizer, SafeTokenizer)
    assert again("Bonn \ud800 .")._.padellm["replaced"] == 1
