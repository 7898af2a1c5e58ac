"""pipeline/output.py without a model: doc_spans maps aligned mentions from the model's view back to the
doc, write_spans de-duplicates and writes doc.ents or a span group; both add to the per-doc counters."""

import spacy

from spacy_padellm.pipeline.output import doc_spans, write_spans
from spacy_padellm.text.align import AlignedSpan
from spacy_padellm.text.windows import model_view

NLP = spacy.blank("en")
DOC_TEXT = "Jordan  met\nJordan in Amman ."


def view(fmt, start=0, end=len(DOC_TEXT)):
    doc = NLP.make_doc(DOC_TEXT)
    tokens = [(t.idx, t.text) for t in doc if not t.is_space]
    return model_view(DOC_TEXT, tokens, start, end, fmt)


# -- doc_spans ----------------------------------------------------------------------------------------------


def test_doc_spans_maps_the_tokens_view_back_to_doc_offsets():
    text, mapping = view("tokens")
    assert text == "Jordan met Jordan in Amman ."
    stats = {}
    got = doc_spans(text, mapping, [("PER", 1, "Jordan", 0.9), ("PER", 2, "Jordan", 0.8), ("LOC", 1, "Amman", 0.7)],
                    stats, "strict")
    assert [(s.start, s.end, s.label, s.prob, s.k) for s in got] == [
        (0, 6, "PER", 0.9, 1), (12, 18, "PER", 0.8, 2), (22, 27, "LOC", 0.7, 1)]
    assert [DOC_TEXT[s.start:s.end] for s in got] == ["Jordan", "Jordan", "Amman"]
    assert stats == {"not_found": 0, "no_free_occurrence": 0, "misaligned": 0}


def test_doc_spans_maps_a_window_of_the_raw_view_back_to_doc_offsets():
    text, mapping = view("raw", 13, len(DOC_TEXT))  # "ordan in Amman .": the cut token is not in the mapping
    assert text == "ordan in Amman ."
    got = doc_spans(text, mapping, [("LOC", 1, "Amman", 0.7), ("LOC", 2, "in Amman", 0.5)], {}, "strict")
    assert [(s.start, s.end, s.label) for s in got] == [(19, 27, "LOC"), (22, 27, "LOC")]
    assert [s.mention for s in got] == ["in Amman", "Amman"]


def test_doc_spans_drops_or_widens_a_mention_cutting_a_token_by_the_alignment_mode():
    text, mapping = view("tokens")
    stats = {}
    assert doc_spans(text, mapping, [("LOC", 1, "Amma", 0.7)], stats, "strict") == []
    assert stats["misaligned"] == 1
    assert doc_spans(text, mapping, [("LOC", 1, "Amma", 0.7)], stats, "contract") == []
    assert stats["misaligned"] == 2
    got = doc_spans(text, mapping, [("LOC", 1, "Amma", 0.7)], stats, "expand")
    assert [(s.start, s.end) for s in got] == [(22, 27)] and stats["misaligned"] == 2
    got = doc_spans(text, mapping, [("LOC", 1, "in Amma", 0.7)], stats, "contract")  # "in" lies inside it
    assert [(s.start, s.end) for s in got] == [(19, 21)]


def test_doc_spans_maps_a_mention_inside_a_token_of_a_cjk_run():
    doc = NLP.make_doc("東京でJapanとSyriaが。")  # two tokens: the run and "。"
    text, mapping = model_view(doc.text, [(t.idx, t.text) for t in doc], 0, len(doc.text), "raw")
    preds = [("LOC", 1, "Japan", 0.9), ("LOC", 2, "Syria", 0.8)]
    stats = {}
    assert doc_spans(text, mapping, preds, stats, "strict") == [] and stats["misaligned"] == 2
    got = doc_spans(text, mapping, preds, stats, "expand")
    assert [(s.start, s.end, s.label) for s in got] == [(0, 15, "LOC")]


def test_doc_spans_adds_to_the_counters():
    text, mapping = view("tokens")
    stats = {"not_found": 2, "no_free_occurrence": 1, "windows": 1}
    got = doc_spans(text, mapping, [("PER", 1, "Bonn", 0.9), ("PER", 2, "  ", 0.9), ("LOC", 1, "Amman", 0.9),
                                    ("LOC", 2, "Amman", 0.9), ("LOC", 3, "Amma", 0.9)], stats, "strict")
    assert len(got) == 1
    # not_found counts empty mentions too
    assert stats == {"not_found": 4, "no_free_occurrence": 2, "misaligned": 1, "windows": 1}


# -- write_spans --------------------------------------------------------------------------------------------


SPANS = [AlignedSpan(0, 6, "PER", 0.9, "Jordan", 1), AlignedSpan(0, 6, "LOC", 0.4, "Jordan", 1),
         AlignedSpan(12, 27, "MISC", 0.3, "Jordan in Amman", 1), AlignedSpan(22, 27, "LOC", 0.8, "Amman", 1)]


def test_write_spans_flat_dedupes_resolves_overlaps_and_sets_probabilities():
    doc, stats = NLP.make_doc(DOC_TEXT), {}
    write_spans(doc, SPANS, None, True, stats)
    assert [(e.start_char, e.end_char, e.label_, e._.padellm_prob) for e in doc.ents] == [
        (0, 6, "PER", 0.9), (22, 27, "LOC", 0.8)]
    assert stats == {"duplicates_removed": 1, "overlaps_removed": 1}


def test_write_spans_flat_without_dedupe_leaves_it_to_overlap_resolution():
    doc, stats = NLP.make_doc(DOC_TEXT), {"overlaps_removed": 5}
    write_spans(doc, SPANS, None, False, stats)
    assert [(e.start_char, e.label_) for e in doc.ents] == [(0, "PER"), (22, "LOC")]
    assert stats == {"overlaps_removed": 7}  # added to; no duplicates_removed key


def test_write_spans_nested_keeps_overlaps_and_records_scores():
    doc, stats = NLP.make_doc(DOC_TEXT), {}
    write_spans(doc, SPANS, "sc", True, stats)
    group = doc.spans["sc"]
    assert [(s.start_char, s.end_char, s.label_) for s in group] == [(0, 6, "PER"), (12, 27, "MISC"), (22, 27, "LOC")]
    assert group.attrs["scores"] == [0.9, 0.3, 0.8]
    assert [s._.padellm_prob for s in group] == [0.9, 0.3, 0.8]
    assert doc.ents == ()
    assert stats == {"duplicates_removed": 1}
    doc, stats = NLP.make_doc(DOC_TEXT), {}
    write_spans(doc, SPANS, "sc", False, stats)
    assert len(doc.spans["sc"]) == 4 and stats == {}


def test_spans_off_token_boundaries_are_dropped():
    # "ordan" starts inside a token: doc.char_span in strict mode gives None, and the span is left out.
    spans = [AlignedSpan(1, 6, "PER", 0.9, "ordan", 1), AlignedSpan(22, 27, "LOC", 0.8, "Amman", 1)]
    flat, nested = NLP.make_doc(DOC_TEXT), NLP.make_doc(DOC_TEXT)
    write_spans(flat, spans, None, True, {})
    write_spans(nested, spans, "sc", True, {})
    assert [e.text for e in flat.ents] == ["Amman"]
    assert [s.text for s in nested.spans["sc"]] == ["Amman"] and nested.spans["sc"].attrs["scores"] == [0.8]


def test_write_spans_with_nothing_clears_the_output():
    doc = NLP.make_doc(DOC_TEXT)
    doc.ents = [doc.char_span(0, 6, label="OLD")]
    write_spans(doc, [], None, True, {})
    assert doc.ents == ()
    write_spans(doc, [], "sc", True, {})
    assert len(doc.spans["sc"]) == 0 and doc.spans["sc"].attrs["scores"] == []
