"""text/windows.py: sentence-aligned windows within a length budget, sentences from tokens, the model's view."""

import random

from spacy_padellm.text.windows import SENTENCE_END, make_windows, model_view, sentences_from_tokens


def tokens_of(text):
    """(start, end, text) of the space-separated tokens of ``text``."""
    out, pos = [], 0
    for word in text.split(" "):
        if word:
            out.append((pos, pos + len(word), word))
        pos += len(word) + 1
    return out


def words(part):
    return len(part.split())


# -- sentences_from_tokens ----------------------------------------------------------------------------------


def test_sentences_end_at_sentence_final_punctuation():
    text = "Hello world . Hi ! Is it ? ok"
    assert sentences_from_tokens(tokens_of(text)) == [(0, 13), (14, 18), (19, 26), (27, 29)]


def test_sentence_end_marks_include_full_width_and_ellipsis():
    assert {".", "!", "?", "。", "！", "？", "…", ";", "；"} == SENTENCE_END
    text = "北京很好。上海很大！"
    toks = [(i, i + 1, ch) for i, ch in enumerate(text)]
    assert sentences_from_tokens(toks) == [(0, 5), (5, 10)]
    assert sentences_from_tokens([(0, 1, "a"), (2, 3, "…"), (4, 5, "b"), (6, 7, ";")]) == [(0, 3), (4, 7)]


def test_punctuation_inside_a_token_does_not_end_a_sentence():
    assert sentences_from_tokens(tokens_of("Mr. Smith left .")) == [(0, 16)]


def test_no_tokens_no_sentences():
    assert sentences_from_tokens([]) == []


# -- make_windows -------------------------------------------------------------------------------------------


def test_blank_text_has_no_window():
    assert make_windows("", [], [], len, 10) == []
    assert make_windows("  \n ", [(0, 4)], [], len, 10) == []


def test_text_that_fits_is_one_window_even_without_sentences():
    assert make_windows("short text", [], [], len, 10) == [(0, 10)]


def test_sentences_are_packed_greedily():
    text = "Aa b. Cc d. Ee f."
    sents = [(0, 5), (6, 11), (12, 17)]
    assert make_windows(text, sents, [], len, 11) == [(0, 11), (12, 17)]
    assert make_windows(text, sents, [], len, 10) == [(0, 5), (6, 11), (12, 17)]
    assert make_windows(text, sents, [], len, 16) == [(0, 11), (12, 17)]


def test_max_sentences_bounds_the_sentences_of_a_window():
    text = "Aa b. Cc d. Ee f."
    sents = [(0, 5), (6, 11), (12, 17)]
    assert make_windows(text, sents, [], len, 100, max_sentences=1) == sents
    assert make_windows(text, sents, [], len, 100, max_sentences=2) == [(0, 11), (12, 17)]
    assert make_windows(text, sents, [], len, 100, max_sentences=3) == [(0, 17)]
    assert make_windows(text, sents, [], len, 10, max_sentences=2) == sents  # the length still bounds it
    assert make_windows(text, sents, [], len, 100) == [(0, 17)]


def test_pieces_of_a_long_sentence_count_as_sentences():
    text = "aaa bbb ccc ddd . e ."
    toks = [t[:2] for t in tokens_of(text)]
    assert make_windows(text, [(0, 17), (18, 21)], toks, len, 8, max_sentences=1) == [(0, 7), (8, 15), (16, 17), (18, 21)]


def test_length_is_measured_by_length_fn():
    text = "a b c . d e . f g h i ."
    toks = tokens_of(text)
    sents = sentences_from_tokens(toks)
    assert sents == [(0, 7), (8, 13), (14, 23)]
    # 4 + 3 words fit in 7; the third sentence (5 words) does not fit with them
    assert make_windows(text, sents, [t[:2] for t in toks], words, 7) == [(0, 13), (14, 23)]


def test_long_sentence_is_split_at_tokens():
    text = "aaa bbb ccc ddd"
    toks = [t[:2] for t in tokens_of(text)]
    assert make_windows(text, [(0, 15)], toks, len, 7) == [(0, 7), (8, 15)]
    assert make_windows(text, [(0, 15)], toks, len, 11) == [(0, 11), (12, 15)]


def test_pieces_of_a_long_sentence_pack_with_the_next_sentence():
    text = "a b c d e f . g ."
    toks = tokens_of(text)
    sents = sentences_from_tokens(toks)
    assert sents == [(0, 13), (14, 17)]
    # the 7-word sentence is split into pieces of at most 3 words; the last piece takes the next sentence
    assert make_windows(text, sents, [t[:2] for t in toks], words, 3) == [(0, 5), (6, 11), (12, 17)]


def test_a_single_token_longer_than_the_budget_is_kept_whole():
    text = "abcdefghij kl"
    toks = [t[:2] for t in tokens_of(text)]
    assert make_windows(text, [(0, 13)], toks, len, 4) == [(0, 10), (11, 13)]


def test_whitespace_only_windows_are_dropped():
    text = "aaaa.    "
    assert make_windows(text, [(0, 5), (5, 9)], [], len, 5) == [(0, 5)]


def test_windows_cover_every_token_once_in_order():
    rng = random.Random(0)
    vocab = ["a", "bb", "ccc", "dddd", ".", "!", "Jordan", "日本"]
    for _ in range(200):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 40)))
        toks = tokens_of(text)
        sents = sentences_from_tokens(toks)
        budget = rng.randint(1, 30)
        windows = make_windows(text, sents, [t[:2] for t in toks], len, budget)
        assert windows == sorted(windows)
        assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))  # no overlap
        for start, end, _ in toks:
            assert sum(1 for ws, we in windows if ws <= start and end <= we) == 1
        for ws, we in windows:
            # within budget, unless the window is a single token
            assert len(text[ws:we]) <= budget or any((ws, we) == t[:2] for t in toks)


# -- model_view ---------------------------------------------------------------------------------------------


TEXT = "Hello  world\n. Bye"
TOKENS = [(0, "Hello"), (7, "world"), (13, "."), (15, "Bye")]


def test_raw_view_is_the_text_slice_with_offsets_relative_to_the_window():
    assert model_view(TEXT, TOKENS, 0, 18) == (TEXT, [(0, 5, 0, 5), (7, 12, 7, 12), (13, 14, 13, 14), (15, 18, 15, 18)])
    assert model_view(TEXT, TOKENS, 7, 14, "raw") == ("world\n.", [(0, 5, 7, 12), (6, 7, 13, 14)])


def test_tokens_view_joins_tokens_with_single_spaces():
    assert model_view(TEXT, TOKENS, 0, 18, "tokens") == (
        "Hello world . Bye", [(0, 5, 0, 5), (6, 11, 7, 12), (12, 13, 13, 14), (14, 17, 15, 18)])
    assert model_view(TEXT, TOKENS, 7, 14, "tokens") == ("world .", [(0, 5, 7, 12), (6, 7, 13, 14)])


def test_tokens_crossing_the_window_edge_are_left_out():
    assert model_view(TEXT, TOKENS, 2, 14, "tokens") == ("world .", [(0, 5, 7, 12), (6, 7, 13, 14)])
    assert model_view(TEXT, TOKENS, 0, 10, "raw") == ("Hello  wor", [(0, 5, 0, 5)])


def test_views_map_back_to_the_same_token_text():
    for fmt in ("raw", "tokens"):
        view, mapping = model_view(TEXT, TOKENS, 0, len(TEXT), fmt)
        assert [view[a:b] for a, b, _, _ in mapping] == [TEXT[c:d] for _, _, c, d in mapping] == [t for _, t in TOKENS]


def test_empty_window():
    assert model_view(TEXT, TOKENS, 5, 7, "tokens") == ("", [])
    assert model_view(TEXT, TOKENS, 5, 7, "raw") == ("  ", [])
