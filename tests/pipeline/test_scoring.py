"""pipeline/scoring.py: spaCy's exact-span scores (flat and nested) and the paper's string-level metric,
on hand-made Examples with hand-computed numbers."""

import pytest
import spacy
from spacy.training import Example
from spacy.util import registry

from spacy_padellm.pipeline.scoring import gold_spans, score_padellm, string_level_prf, string_level_scores

NLP = spacy.blank("en")


def doc(text, spans, key=None):
    """A doc of ``text`` with (start_char, end_char, label) spans as ents (or the span group ``key``)."""
    d = NLP.make_doc(text)
    made = [d.char_span(s, e, label=label) for s, e, label in spans]
    assert all(m is not None for m in made)
    if key:
        d.spans[key] = made
    else:
        d.ents = made
    return d


TEXT1 = "Japan beat Syria in the Asian Cup ."
GOLD1 = [(0, 5, "LOC"), (11, 16, "LOC"), (24, 33, "MISC")]
TEXT2 = "Jordan met Jordan in Amman ."
GOLD2 = [(0, 6, "PER"), (11, 17, "PER"), (21, 26, "LOC")]


def flat_examples():
    # 1: Japan right; Syria with the wrong label; "Asian" cuts the gold "Asian Cup".
    # 2: both Jordans right; Amman missed.
    return [
        Example(doc(TEXT1, [(0, 5, "LOC"), (11, 16, "PER"), (24, 29, "MISC")]), doc(TEXT1, GOLD1)),
        Example(doc(TEXT2, [(0, 6, "PER"), (11, 17, "PER")]), doc(TEXT2, GOLD2)),
    ]


# -- exact spans --------------------------------------------------------------------------------------------


def test_flat_scores_are_exact_span_micro_prf():
    scores = score_padellm(flat_examples())
    # tp = Japan, Jordan, Jordan = 3; fp = Syria/PER, Asian/MISC = 2; fn = Syria/LOC, Asian Cup, Amman = 3
    assert scores["ents_p"] == pytest.approx(3 / 5)
    assert scores["ents_r"] == pytest.approx(3 / 6)
    assert scores["ents_f"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    per = scores["ents_per_type"]
    assert set(per) == {"LOC", "PER", "MISC"}
    assert per["LOC"] == pytest.approx({"p": 1.0, "r": 1 / 3, "f": 0.5})  # tp 1, fn 2 (Syria, Amman)
    assert per["PER"] == pytest.approx({"p": 2 / 3, "r": 1.0, "f": 0.8})  # tp 2, fp 1
    assert per["MISC"] == pytest.approx({"p": 0.0, "r": 0.0, "f": 0.0})


def test_flat_perfect_and_empty():
    perfect = [Example(doc(TEXT1, GOLD1), doc(TEXT1, GOLD1))]
    assert score_padellm(perfect)["ents_f"] == pytest.approx(1.0)
    nothing = [Example(doc(TEXT1, []), doc(TEXT1, GOLD1))]
    scores = score_padellm(nothing)
    assert (scores["ents_p"], scores["ents_r"], scores["ents_f"]) == (0.0, 0.0, 0.0)
    # no gold and no prediction: nothing to score
    assert score_padellm([Example(doc("It rained .", []), doc("It rained .", []))])["ents_f"] is None


def test_nested_scores_read_the_span_group_and_allow_overlap():
    text = "IL-2 gene expression requires NF-kappa B ."
    gold = [(0, 4, "protein"), (0, 9, "DNA"), (30, 40, "protein")]
    pred = [(0, 4, "protein"), (0, 9, "DNA"), (0, 9, "protein"), (5, 9, "DNA")]
    scores = score_padellm([Example(doc(text, pred, "sc"), doc(text, gold, "sc"))], spans_key="sc")
    # tp = IL-2/protein, IL-2 gene/DNA; fp = IL-2 gene/protein, gene/DNA; fn = NF-kappa B
    assert scores["spans_sc_p"] == pytest.approx(2 / 4)
    assert scores["spans_sc_r"] == pytest.approx(2 / 3)
    assert scores["spans_sc_f"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["spans_sc_per_type"]["DNA"] == pytest.approx({"p": 0.5, "r": 1.0, "f": 2 / 3})
    assert scores["spans_sc_per_type"]["protein"] == pytest.approx({"p": 0.5, "r": 0.5, "f": 0.5})
    assert not any(k.startswith("ents_") for k in scores)


def test_nested_scores_skip_references_without_the_span_group():
    text = "IL-2 gene ."
    annotated = Example(doc(text, [(0, 4, "protein")], "sc"), doc(text, [(0, 4, "protein")], "sc"))
    unannotated = Example(doc(text, [(0, 9, "DNA")], "sc"), NLP.make_doc(text))  # would be an fp if scored
    scores = score_padellm([annotated, unannotated], spans_key="sc")
    assert scores["spans_sc_p"] == pytest.approx(1.0) and scores["spans_sc_r"] == pytest.approx(1.0)


def test_registered_scorer_is_score_padellm():
    assert registry.scorers.get("spacy_padellm.scorer.v1")() is score_padellm


def test_gold_spans_reads_ents_or_the_span_group():
    d = doc(TEXT1, GOLD1)
    d.spans["sc"] = [d.char_span(0, 5, label="X")]
    assert [(s.text, s.label_) for s in gold_spans(d)] == [("Japan", "LOC"), ("Syria", "LOC"), ("Asian Cup", "MISC")]
    assert [(s.text, s.label_) for s in gold_spans(d, "sc")] == [("Japan", "X")]
    assert gold_spans(d, "missing") == []


# -- string level -------------------------------------------------------------------------------------------


class S:
    """A stand-in span: what string_level_prf reads (label_ and text)."""

    def __init__(self, text, label):
        self.text, self.label_ = text, label


def test_string_level_counts_sets_of_label_and_string_per_sentence():
    pairs = [
        # gold has Jordan twice: one (PER, Jordan) pair; the prediction's one Jordan matches it in full
        ([S("Jordan", "PER"), S("Amman", "PER")], [S("Jordan", "PER"), S("Jordan", "PER"), S("Amman", "LOC")]),
        # whitespace is normalised; a string outside the gold is an fp; a missed gold string an fn
        ([S("New  York", "LOC"), S("Iraq", "LOC")], [S("New York", "LOC"), S("Bonn", "LOC")]),
        ([], []),
    ]
    scores = string_level_prf(pairs)
    # tp: (PER, Jordan), (LOC, New York) = 2; fp: (PER, Amman), (LOC, Iraq) = 2; fn: (LOC, Amman), (LOC, Bonn) = 2
    assert scores["string_p"] == pytest.approx(0.5)
    assert scores["string_r"] == pytest.approx(0.5)
    assert scores["string_f"] == pytest.approx(0.5)
    assert list(scores["string_per_type"]) == ["LOC", "PER"]
    assert scores["string_per_type"]["PER"] == pytest.approx({"p": 0.5, "r": 1.0, "f": 2 / 3})  # tp 1, fp 1
    assert scores["string_per_type"]["LOC"] == pytest.approx({"p": 0.5, "r": 1 / 3, "f": 0.4})  # tp 1, fp 1, fn 2


def test_string_level_is_per_sentence_not_per_corpus():
    # the same string in two sentences counts twice; a prediction does not match gold of another sentence
    pairs = [([S("Japan", "LOC")], [S("Japan", "LOC")]), ([S("Japan", "LOC")], [S("Syria", "LOC")])]
    scores = string_level_prf(pairs)
    assert scores["string_p"] == pytest.approx(0.5) and scores["string_r"] == pytest.approx(0.5)


def test_string_level_is_case_sensitive():
    pairs = [([S("japan", "LOC")], [S("Japan", "LOC")]), ([S("Jordan", "LOC")], [S("Jordan", "LOC")])]
    scores = string_level_prf(pairs)
    assert (scores["string_p"], scores["string_r"]) == pytest.approx((0.5, 0.5))


def test_string_level_empty():
    assert string_level_prf([]) == {"string_p": 0.0, "string_r": 0.0, "string_f": 0.0, "string_per_type": {}}


def test_string_level_scores_from_examples():
    scores = string_level_scores(flat_examples())
    # sentence 1: tp (LOC, Japan); fp (PER, Syria), (MISC, Asian); fn (LOC, Syria), (MISC, Asian Cup)
    # sentence 2: tp (PER, Jordan) once (a set); fn (LOC, Amman)
    assert scores["string_p"] == pytest.approx(2 / 4)
    assert scores["string_r"] == pytest.approx(2 / 5)
    assert scores["string_f"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    assert scores["string_per_type"]["LOC"] == pytest.approx({"p": 1.0, "r": 1 / 3, "f": 0.5})
    # position-blind: the predicted Jordan at the wrong place still matches
    moved = [Example(doc(TEXT2, [(11, 17, "PER")]), doc(TEXT2, [(0, 6, "PER")]))]
    assert string_level_scores(moved)["string_f"] == pytest.approx(1.0)


def test_string_level_scores_nested_reads_the_span_group():
    text = "IL-2 gene ."
    ex = Example(doc(text, [(0, 4, "protein"), (0, 9, "DNA")], "sc"), doc(text, [(0, 9, "DNA")], "sc"))
    scores = string_level_scores([ex], spans_key="sc")
    assert (scores["string_p"], scores["string_r"]) == pytest.approx((0.5, 1.0))
    assert string_level_scores([ex])["string_f"] == 0.0  # flat: no ents on either side


def test_scored_prefix_names_the_span_group_a_dict_holds():
    from spacy_padellm.pipeline.scoring import scored_prefix

    assert scored_prefix({"spans_sc_p": 1.0, "spans_sc_f": 1.0, "string_f": 1.0}) == "spans_sc"
    assert scored_prefix({"ents_f": 1.0, "string_f": 1.0}) == "ents" and scored_prefix({}) == "ents"
