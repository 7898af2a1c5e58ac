"""The mention trie as paths of chunk ids, its nodes made on demand, holds the same sequences as the long way."""

import inspect
import sys

import pytest

import tiny
from spacy_padellm.decoding import trie_paths
from spacy_padellm.decoding.constraints import MentionTrie, candidate_strings
from spacy_padellm.text.protocol import PromptEncoder, TEMPLATES

TEXTS = [t for t, _ in tiny.SENTENCES] + [
    "U.S.-based Mc Donald's , 1996-12-06 results : 3-1 ( 2-0 )", "Japan's win", "a", "", "  leading and trailing  ",
    "Jordan and Jordan and Jordan", "one two three four five six seven eight nine ten eleven twelve thirteen",
    "Ärzte in São Paulo , Köln", "two  spaces\tand a\ntab", "我在北京工作。", "x" * 30 + " yy"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    corpus = [t for t, _ in tiny.SENTENCES] + TEXTS
    tok = tiny.build_tokenizer(tmp_path_factory.mktemp("tok"), corpus)
    enc = PromptEncoder(tok, TEMPLATES["en"])
    for text in TEXTS[:6]:  # composition is checked on the first calls before it is relied on
        enc.mentions(candidate_strings(text))
    return enc


def long_way(text, encoder, **options):
    trie = MentionTrie(eos_id=encoder.eos_id)
    trie.add_all(encoder._encode_many(candidate_strings(text, **options)))
    return trie


@pytest.mark.parametrize("options", [{}, {"split_punct": False}, {"max_words": 3}, {"max_words": 1}])
def test_same_sequences_as_the_long_way(encoder, options):
    assert encoder.mention_chunk_ids(["Japan"]) is not None  # the path is open for this tokenizer
    for text in TEXTS:
        fast = MentionTrie.build(text, encoder, **options)
        slow = long_way(text, encoder, **options)
        assert fast.sequences() == slow.sequences(), text
        assert len(fast) == len(slow) == len(slow.sequences())


def test_taken_in_the_common_case_only(encoder, monkeypatch):
    walked = []
    real = trie_paths.path_trie
    def counted(*args):
        trie = real(*args)
        walked.extend([1] if trie is not None else [])
        return trie

    monkeypatch.setattr(trie_paths, "path_trie", counted)
    MentionTrie.build("Japan beat Syria .", encoder)
    assert walked == [1]
    for text, options in [("two  spaces", {}), ("我在北京工作。", {}), ("Japan beat Syria .", {"extra": ["Asia"]}),
                          ("Japan beat Syria .", {"char_spans": True})]:
        MentionTrie.build(text, encoder, **options)
    assert walked == [1]
    # excluded strings go the same way, and leave what they should out
    trie = MentionTrie.build("Japan beat Syria .", encoder, exclude=["Japan"])
    assert walked == [1, 1]
    assert not trie.contains(encoder.mention("Japan")) and trie.contains(encoder.mention("Syria"))


@pytest.mark.parametrize("exclude", [["Japan"], ["Jordan"], ["Mc Donald's", "3-1"], ["U.S."], [","], ["and Jordan"],
                                     ["Naoki Soma"], ["", "nowhere"]])
def test_exclusions_leave_out_what_the_long_way_leaves_out(encoder, exclude):
    for text in TEXTS + ["Naoki Soma , Norio Soma and Masami Soma of Somalia", "Japan's Japan , Japan-based"]:
        fast = MentionTrie.build(text, encoder, exclude=exclude, max_words=4)
        slow = long_way(text, encoder, exclude=exclude, max_words=4)
        assert fast.sequences() == slow.sequences(), (text, exclude)
        assert fast.n_nodes == slow.n_nodes  # no node leads only to excluded candidates


def test_not_before_composition_is_checked(tmp_path):
    tok = tiny.build_tokenizer(tmp_path, [t for t, _ in tiny.SENTENCES])
    enc = PromptEncoder(tok, TEMPLATES["en"])
    assert enc.mention_chunk_ids(["Japan"]) is None  # nothing checked yet: the long way
    trie = MentionTrie.build("Japan beat Syria .", enc)
    assert trie.sequences() == long_way("Japan beat Syria .", enc).sequences()


def test_nodes_are_made_as_decoding_reaches_them(encoder):
    text = "U.S.-based Mc Donald's , 1996-12-06 results : 3-1 ( 2-0 )"
    lazy, slow = MentionTrie.build(text, encoder), long_way(text, encoder)
    assert isinstance(lazy, trie_paths.PathTrie)
    for mention in ["Mc Donald's", "U.S.", "1996-12-06 results", "Donald"]:
        ids = encoder.mention(mention)
        a, b = lazy.root, slow.root
        for tok in ids:  # the same choices at every step of the way, and the same end
            assert sorted(lazy.allowed_ids(a)) == sorted(slow.allowed_ids(b))
            a, b = lazy.advance(a, tok), slow.advance(b, tok)
            assert a is not None and b is not None
        assert lazy.ends(a) and slow.ends(b) and sorted(lazy.allowed_ids(a)) == sorted(slow.allowed_ids(b))
        assert lazy.advance(a, -1) is None
    made = len(lazy._children)
    assert made < slow.n_nodes / 2  # only the nodes on those mentions' ways and their siblings
    assert lazy.n_nodes == slow.n_nodes and len(lazy) == len(slow)  # everything, once asked for


def test_word_ids_are_kept_with_the_encoder(encoder, monkeypatch):
    """A word's paths are encoded once per encoder: a later text of known words asks for no chunk ids, and a full
    memo starts again without changing what the trie holds."""
    asked = []
    real = encoder.mention_chunk_ids
    monkeypatch.setattr(encoder, "mention_chunk_ids", lambda chunks: asked.append(list(chunks)) or real(chunks))
    MentionTrie.build("Syria beat Japan twice .", encoder)
    asked.clear()
    trie = MentionTrie.build("Japan beat Syria twice .", encoder)
    assert asked == []
    assert trie.sequences() == long_way("Japan beat Syria twice .", encoder).sequences()
    monkeypatch.setattr(trie_paths, "MAX_CACHED_WORDS", 3)
    for text in [f"Word{i} met Other{i} ." for i in range(4)] + TEXTS:
        assert MentionTrie.build(text, encoder).sequences() == long_way(text, encoder).sequences(), text
    assert len(encoder.memo("trie_words")[True]) <= max(len(t.split()) for t in TEXTS)  # it started again


def test_word_ids_are_not_shared_between_encoders(encoder, tmp_path):
    MentionTrie.build("Japan beat Syria .", encoder)
    tok = tiny.build_tokenizer(tmp_path, [t for t, _ in tiny.SENTENCES])
    other = PromptEncoder(tok, TEMPLATES["en"])
    assert other.memo("trie_words") == {}


def test_exclusions_are_checked_as_decoding_reaches_candidates(encoder, monkeypatch):
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    checked = []
    real = trie_paths.is_excluded
    monkeypatch.setattr(trie_paths, "is_excluded", lambda c, e: checked.append(c) or real(c, e))
    trie = MentionTrie.build(text, encoder, exclude=["seven"])
    assert checked == []
    node = trie.walk(encoder.mention("three four"))
    assert node is not None and trie.ends(node)
    assert trie.walk(encoder.mention("six seven")) is None
    assert 0 < len(checked) < len(candidate_strings(text)) // 3


def test_a_long_text_with_its_longer_candidates_all_excluded(encoder):
    """Whether a kept candidate lies further along a path is looked for level by level, not by recursion (a path of
    400 words under a stack of 150 frames more than the test's own)."""
    text = " ".join(["a"] * 400) + " b"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 150)
    try:
        trie = MentionTrie.build(text, encoder, exclude=["a"], max_words=1000)
        found, gone = trie.contains(encoder.mention("b")), trie.walk(encoder.mention("a"))
    finally:
        sys.setrecursionlimit(limit)
    assert found and gone is None
