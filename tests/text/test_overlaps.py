"""text/overlaps.py: one label per character span (the most probable), then a non-overlapping subset."""

from dataclasses import dataclass

from spacy_padellm.text.align import AlignedSpan
from spacy_padellm.text.overlaps import one_label_per_span, resolve_overlaps


def span(start, end, label, prob):
    return AlignedSpan(start, end, label, prob, f"m{start}", 1)


def key(spans):
    return [(s.start, s.end, s.label) for s in spans]


# -- one_label_per_span --------------------------------------------------------------------------------------------


def test_same_span_under_several_labels_keeps_the_most_probable():
    spans = [span(0, 6, "LOC", 0.6), span(0, 6, "PER", 0.9), span(0, 6, "ORG", 0.3)]
    kept, removed = one_label_per_span(spans)
    assert key(kept) == [(0, 6, "PER")] and removed == 2


def test_different_spans_are_all_kept_sorted():
    spans = [span(10, 16, "LOC", 0.2), span(0, 6, "PER", 0.9), span(0, 3, "PER", 0.1), span(0, 6, "LOC", 0.95)]
    kept, removed = one_label_per_span(spans)
    assert key(kept) == [(0, 3, "PER"), (0, 6, "LOC"), (10, 16, "LOC")] and removed == 1
    assert [s.prob for s in kept] == [0.1, 0.95, 0.2]


def test_equal_probabilities_keep_the_first():
    kept, removed = one_label_per_span([span(0, 6, "LOC", 0.5), span(0, 6, "PER", 0.5)])
    assert key(kept) == [(0, 6, "LOC")] and removed == 1
    kept, _ = one_label_per_span([span(0, 6, "PER", 0.5), span(0, 6, "LOC", 0.5)])
    assert key(kept) == [(0, 6, "PER")]


def test_overlapping_spans_are_not_deduplicated():
    kept, removed = one_label_per_span([span(0, 6, "LOC", 0.5), span(0, 7, "PER", 0.9), span(1, 6, "ORG", 0.9)])
    assert len(kept) == 3 and removed == 0


def test_deduplicate_empty():
    assert one_label_per_span([]) == ([], 0)


# -- resolve_overlaps ---------------------------------------------------------------------------------------


def test_most_probable_span_wins_an_overlap():
    spans = [span(0, 10, "ORG", 0.5), span(5, 8, "LOC", 0.9), span(10, 12, "PER", 0.1)]
    kept, removed = resolve_overlaps(spans)
    assert key(kept) == [(5, 8, "LOC"), (10, 12, "PER")] and removed == 1


def test_touching_spans_do_not_overlap():
    spans = [span(4, 8, "B", 0.5), span(0, 4, "A", 0.5), span(8, 9, "C", 0.5)]
    kept, removed = resolve_overlaps(spans)
    assert key(kept) == [(0, 4, "A"), (4, 8, "B"), (8, 9, "C")] and removed == 0


def test_ties_go_to_the_longer_then_the_earlier_span():
    kept, removed = resolve_overlaps([span(5, 8, "B", 0.5), span(0, 10, "A", 0.5)])
    assert key(kept) == [(0, 10, "A")] and removed == 1
    kept, removed = resolve_overlaps([span(2, 6, "B", 0.5), span(0, 4, "A", 0.5)])
    assert key(kept) == [(0, 4, "A")] and removed == 1


def test_a_removed_span_does_not_block_others():
    # B (0.9) removes A (0.8); C (0.7) overlaps only A, so C stays.
    spans = [span(0, 6, "A", 0.8), span(0, 3, "B", 0.9), span(4, 9, "C", 0.7)]
    kept, removed = resolve_overlaps(spans)
    assert key(kept) == [(0, 3, "B"), (4, 9, "C")] and removed == 1


def test_nested_chain():
    spans = [span(0, 20, "A", 0.4), span(2, 10, "B", 0.6), span(3, 5, "C", 0.8), span(6, 9, "D", 0.7),
             span(12, 15, "E", 0.3)]
    kept, removed = resolve_overlaps(spans)
    assert key(kept) == [(3, 5, "C"), (6, 9, "D"), (12, 15, "E")] and removed == 2


def test_any_object_with_start_end_prob_works_and_input_is_untouched():
    @dataclass
    class Plain:
        start: int
        end: int
        prob: float

    spans = [Plain(0, 5, 0.1), Plain(3, 7, 0.2)]
    kept, removed = resolve_overlaps(spans)
    assert kept == [Plain(3, 7, 0.2)] and removed == 1
    assert spans == [Plain(0, 5, 0.1), Plain(3, 7, 0.2)]
    assert one_label_per_span([Plain(0, 5, 0.1), Plain(0, 5, 0.2)]) == ([Plain(0, 5, 0.2)], 1)


def test_resolve_overlaps_empty():
    assert resolve_overlaps([]) == ([], 0)
