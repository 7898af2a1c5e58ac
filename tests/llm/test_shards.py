"""llm/shards.py without a model: shards are consecutive token slices of whole sentences covering the doc,
at most ``window_sentences`` sentences each, cut again where the longest prompt passes ``context_length``."""

import pytest
import spacy

from spacy_padellm.llm.shards import check_window_sentences, shard_doc

TEXT = "Japan beat Syria . Peter met Jordan in Bonn . China lost again ."


def words(text):
    return text  # the prompt is the text alone: its length in words is the text's


def texts(shards):
    return [s.text for s in shards]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


@pytest.mark.parametrize("window_sentences, expected", [
    (1, ["Japan beat Syria . ", "Peter met Jordan in Bonn . ", "China lost again ."]),
    (2, ["Japan beat Syria . Peter met Jordan in Bonn . ", "China lost again ."]),
    (None, [TEXT]),
])
def test_groups_of_window_sentences(nlp, window_sentences, expected):
    shards = shard_doc(nlp(TEXT), 0, window_sentences, None, words)
    assert texts(shards) == expected and "".join(texts(shards)) == TEXT


def test_context_length_cuts_a_group_again(nlp):
    shards = shard_doc(nlp(TEXT), 0, None, 8, words)  # 8 words: one sentence of 6 words (x 1.1) fits, two do not
    assert texts(shards) == ["Japan beat Syria . ", "Peter met Jordan in Bonn . ", "China lost again ."]


def test_sentences_set_on_the_doc_are_used(nlp):
    doc = nlp("Japan beat Syria and Peter met Jordan .")
    for token in doc:
        token.is_sent_start = token.i in (0, 4)
    assert texts(shard_doc(doc, 0, 1, None, words)) == ["Japan beat Syria and ", "Peter met Jordan ."]


def test_whitespace_and_one_sentence_docs_are_themselves(nlp):
    for text in ("", "  ", "Japan beat Syria ."):
        doc = nlp(text)
        assert shard_doc(doc, 0, 1, 100, words) == [doc]


def test_shard_mapper_makes_the_second_cut(nlp):
    seen = []

    def mapper(doc, i_doc, context_length, render):
        seen.append((doc.text, i_doc, context_length, render(doc, 0, i_doc, 1)))
        return [doc]

    shard_doc(nlp(TEXT), 3, 2, 4, words, mapper)
    assert [s[:3] for s in seen] == [("Japan beat Syria . Peter met Jordan in Bonn . ", 3, 4),
                                     ("China lost again .", 3, 4)]


def test_window_sentences_must_be_positive_or_null():
    assert check_window_sentences(None) is None and check_window_sentences(3) == 3
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="'window_sentences' must be null or a positive integer"):
            check_window_sentences(bad)
