"""text/align.py: predicted (label, k, mention, prob) triples to character spans of the text."""

import pytest

from spacy_padellm.text.align import AlignedSpan, AlignStats, align_mentions, normalize


def tokens_of(text):
    """(start, end) of the space-separated tokens of ``text``."""
    out, pos = [], 0
    for word in text.split(" "):
        if word:
            out.append((pos, pos + len(word)))
        pos += len(word) + 1
    return out


def spans(text, preds, tokens=None, mode="expand"):
    found, stats = align_mentions(text, preds, tokens, mode)
    return [(s.start, s.end, s.label, text[s.start:s.end]) for s in found], stats


# -- normalize ----------------------------------------------------------------------------------------


def test_normalize_plain_text_is_lower_cased_with_identity_index():
    assert normalize("Hello World") == ("hello world", list(range(11)))
    assert normalize("") == ("", [])


def test_normalize_collapses_whitespace_runs_and_strips_the_ends():
    # "  New \t York\n" -> "new york"; each kept char points back at its original position
    assert normalize("  New \t York\n") == ("new york", [2, 3, 4, 5, 8, 9, 10, 11])
    assert normalize("a\nb") == ("a b", [0, 1, 2])


def test_normalize_drop_spaces_removes_all_whitespace():
    assert normalize("New  York", drop_spaces=True) == ("newyork", [0, 1, 2, 5, 6, 7, 8])
    assert normalize(" a b ", drop_spaces=True) == ("ab", [1, 3])
    assert normalize("   ", drop_spaces=True) == ("", [])


def test_normalize_capital_sigma_is_lowered_char_by_char():
    # str.lower() turns a final capital sigma into the final form; char by char it is always "σ",
    # so a mention and the text it was copied from normalise the same way wherever they are cut.
    assert normalize("ΟΔΟΣ") == ("οδοσ", [0, 1, 2, 3])
    assert normalize("ΟΔΟΣ Α") == ("οδοσ α", [0, 1, 2, 3, 4, 5])


# -- occurrences and tolerance -----------------------------------------------------------------------------


def test_case_insensitive_match_keeps_the_original_offsets():
    text = "JAPAN beat Syria"
    got, stats = spans(text, [("LOC", 1, "japan", 0.9)])
    assert got == [(0, 5, "LOC", "JAPAN")]
    assert stats == AlignStats(aligned=1)


def test_whitespace_runs_in_text_or_mention_are_tolerated():
    text = "He flew to New \n York ."
    got, _ = spans(text, [("LOC", 1, "New York", 0.9)])
    assert got == [(11, 21, "LOC", "New \n York")]
    got, _ = spans("He flew to New York .", [("LOC", 1, "New   York", 0.9)])
    assert got == [(11, 19, "LOC", "New York")]


def test_whitespace_is_ignored_when_nothing_matches_with_it():
    got, _ = spans("He flew to NewYork .", [("LOC", 1, "New York", 0.9)])
    assert got == [(11, 18, "LOC", "NewYork")]
    got, _ = spans("He flew to New York .", [("LOC", 1, "NewYork", 0.9)])
    assert got == [(11, 19, "LOC", "New York")]


def test_whitespace_level_is_used_only_when_the_collapsed_level_finds_nothing():
    # "ab" occurs verbatim at 5; the space-free level would also find "a b" at 0, but is not consulted.
    got, _ = spans("a b, ab", [("X", 1, "ab", 0.9)])
    assert got == [(5, 7, "X", "ab")]


def test_cjk_text_without_spaces():
    text = "李开复在北京说：北京很好。"
    got, stats = spans(text, [("LOC", 1, "北京", 0.9), ("LOC", 2, "北京", 0.8), ("PER", 1, "李开复", 0.7)])
    assert got == [(0, 3, "PER", "李开复"), (4, 6, "LOC", "北京"), (8, 10, "LOC", "北京")]
    assert stats.aligned == 3


# -- token boundaries ---------------------------------------------------------------------------------


def test_occurrence_on_token_boundaries_is_preferred():
    text = "Jordanian troops left Jordan ."
    tokens = tokens_of(text)
    got, _ = spans(text, [("LOC", 1, "Jordan", 0.9)], tokens)
    assert got == [(22, 28, "LOC", "Jordan")]
    got, _ = spans(text, [("LOC", 1, "Jordan", 0.9)])  # without tokens: the first occurrence
    assert got == [(0, 6, "LOC", "Jordan")]


def test_span_cutting_a_token_is_expanded_to_whole_tokens():
    text = "The Ladkis reported ."
    tokens = tokens_of(text)
    got, _ = spans(text, [("PER", 1, "Ladki", 0.9)], tokens)
    assert got == [(4, 10, "PER", "Ladkis")]
    got, _ = spans(text, [("PER", 1, "e Lad", 0.9)], tokens)  # both ends cut a token
    assert got == [(0, 10, "PER", "The Ladkis")]


def test_occurrences_that_snap_to_one_span_are_one_occurrence():
    text = "abab cd"
    tokens = tokens_of(text)
    got, stats = spans(text, [("X", 1, "ab", 0.9), ("X", 2, "ab", 0.8)], tokens)
    assert got == [(0, 4, "X", "abab")]
    assert stats == AlignStats(aligned=1, no_free_occurrence=1)


def test_alignment_modes_on_a_mention_inside_a_token():
    text = "東京でJapanとSyriaが。"
    tokens = [(0, 15), (15, 16)]  # spaCy's English tokenizer: one token for the run, one for "。"
    preds = [("LOC", 1, "Japan", 0.9), ("LOC", 2, "Syria", 0.8)]
    got, stats = spans(text, preds, tokens, "strict")
    assert got == [] and stats == AlignStats(misaligned=2)
    got, stats = spans(text, preds, tokens, "contract")  # no token lies inside either mention
    assert got == [] and stats == AlignStats(misaligned=2)
    got, stats = spans(text, preds, tokens, "expand")  # both widen to the one token: one span
    assert got == [(0, 15, "LOC", "東京でJapanとSyriaが")] and stats == AlignStats(aligned=1, no_free_occurrence=1)


def test_alignment_modes_on_a_mention_cutting_tokens():
    text = "The Ladkis met Peter Blackburnes ."
    tokens = tokens_of(text)
    pred = [("PER", 1, "Peter Blackburn", 0.9)]
    assert spans(text, pred, tokens, "strict") == ([], AlignStats(misaligned=1))
    assert spans(text, pred, tokens, "contract") == ([(15, 20, "PER", "Peter")], AlignStats(aligned=1))
    assert spans(text, pred, tokens, "expand") == ([(15, 32, "PER", "Peter Blackburnes")], AlignStats(aligned=1))


def test_every_mode_prefers_an_occurrence_on_token_boundaries():
    text = "Jordanian troops left Jordan ."
    for mode in ("strict", "contract", "expand"):
        got, stats = spans(text, [("LOC", 1, "Jordan", 0.9)], tokens_of(text), mode)
        assert got == [(22, 28, "LOC", "Jordan")] and stats.misaligned == 0


def test_strict_and_contract_apply_only_with_tokens():
    got, stats = spans("東京でJapan", [("LOC", 1, "Japan", 0.9)], None, "strict")
    assert got == [(3, 8, "LOC", "Japan")] and stats.misaligned == 0


def test_unknown_alignment_mode_is_an_error():
    with pytest.raises(ValueError, match="strict, contract, expand"):
        align_mentions("a", [], [(0, 1)], "nearest")


# -- repeated mentions and reading order --------------------------------------------------------------------


def test_kth_mention_takes_the_kth_occurrence_in_k_order():
    text = "Jordan met Jordan in Jordan ."
    # given out of order: sorted by k before assignment
    got, stats = spans(text, [("PER", 3, "Jordan", 0.7), ("PER", 1, "Jordan", 0.9), ("PER", 2, "Jordan", 0.8)],
                       tokens_of(text))
    assert got == [(0, 6, "PER", "Jordan"), (11, 17, "PER", "Jordan"), (21, 27, "PER", "Jordan")]
    found, _ = align_mentions(text, [("PER", 2, "Jordan", 0.8), ("PER", 1, "Jordan", 0.9)])
    assert [(s.start, s.k, s.prob) for s in found] == [(0, 1, 0.9), (11, 2, 0.8)]
    assert stats.aligned == 3


def test_next_mention_prefers_an_occurrence_after_the_previous_one():
    text = "A met B and A ."
    got, _ = spans(text, [("PER", 1, "B", 0.9), ("PER", 2, "A", 0.9)], tokens_of(text))
    assert got == [(6, 7, "PER", "B"), (12, 13, "PER", "A")]
    # no free occurrence after the previous one: the first free occurrence before it
    text = "A met B ."
    got, _ = spans(text, [("PER", 1, "B", 0.9), ("PER", 2, "A", 0.9)], tokens_of(text))
    assert got == [(0, 1, "PER", "A"), (6, 7, "PER", "B")]


def test_labels_do_not_use_up_each_others_occurrences():
    text = "Jordan in Jordan ."
    got, _ = spans(text, [("PER", 1, "Jordan", 0.9), ("LOC", 1, "Jordan", 0.8)], tokens_of(text))
    assert got == [(0, 6, "LOC", "Jordan"), (0, 6, "PER", "Jordan")]  # sorted by (start, end, label)


def test_more_mentions_than_occurrences_are_dropped_and_counted():
    text = "Jordan and Jordan ."
    got, stats = spans(text, [("LOC", k, "Jordan", 0.9) for k in (1, 2, 3)], tokens_of(text))
    assert [g[0] for g in got] == [0, 11]
    assert stats == AlignStats(aligned=2, no_free_occurrence=1)


def test_mentions_not_found_and_empty_mentions_are_counted():
    text = "Japan beat Syria ."
    got, stats = spans(text, [("LOC", 1, "Japan", 0.9), ("LOC", 2, "Iraq", 0.9), ("PER", 1, "  ", 0.5),
                              ("PER", 2, "", 0.5)], tokens_of(text))
    assert got == [(0, 5, "LOC", "Japan")]
    assert stats == AlignStats(aligned=1, not_found=1, empty=2)


def test_aligned_span_keeps_label_prob_mention_and_k():
    found, _ = align_mentions("Peter met Paul .", [("PER", 2, "paul", 0.25), ("PER", 1, "Peter", 0.5)])
    assert found == [AlignedSpan(0, 5, "PER", 0.5, "Peter", 1), AlignedSpan(10, 14, "PER", 0.25, "paul", 2)]


def test_no_predictions():
    assert align_mentions("Some text .", []) == ([], AlignStats())


def test_align_stats_add():
    total = AlignStats(aligned=1, not_found=2)
    total.add(AlignStats(aligned=3, not_found=1, no_free_occurrence=4, empty=5))
    assert total == AlignStats(aligned=4, not_found=3, no_free_occurrence=4, empty=5)


# -- a character whose lower case is two characters -----------------------------------------------------


def test_mentions_after_a_char_with_a_two_char_lower_case_keep_their_offsets():
    text = "Visit İzmir and Ankara"
    got, _ = spans(text, [("LOC", 1, "İzmir", 0.9), ("LOC", 2, "Ankara", 0.9)], tokens_of(text))
    assert got == [(6, 11, "LOC", "İzmir"), (16, 22, "LOC", "Ankara")]
    text = "İstanbul and Ankara"  # a mention that ends the text once raised IndexError
    got, _ = spans(text, [("LOC", 1, "Ankara", 0.9)], tokens_of(text))
    assert got == [(13, 19, "LOC", "Ankara")]


def test_normalize_keeps_one_index_per_output_char():
    # What the aligner relies on, checked on text where it holds (and on a char whose lower case is two chars).
    for text in ("Hello  World", " a\tb ", "ΟΔΟΣ x", "日本，東京", "İzmir  İ"):
        for drop in (False, True):
            norm, index = normalize(text, drop)
            assert len(norm) == len(index)
            assert all(c in text[i].lower() or (c == " " and text[i].isspace()) for c, i in zip(norm, index))
