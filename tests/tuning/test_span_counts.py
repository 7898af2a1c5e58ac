"""label_counts counts per label as spaCy's scorers do: their micro and per-type scores follow from it."""

import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.training import Example

from spacy_padellm.pipeline.scoring import score_padellm
from spacy_padellm.tuning.bias_choice import micro_f1
from spacy_padellm.tuning.span_counts import label_counts


def _doc(vocab, words, spans, key=None, spaces=None):
    doc = Doc(vocab, words=words, spaces=spaces)
    made = [Span(doc, s, e, label=label) for s, e, label in spans]
    if key:
        doc.spans[key] = made
    else:
        doc.ents = made
    return doc


def _check(examples, key=None):
    prefix = f"spans_{key}" if key else "ents"
    scores = score_padellm(examples, spans_key=key)
    counts = label_counts(examples, ["PER", "LOC", "ORG"], key)
    assert micro_f1(counts.values()) == pytest.approx(scores[f"{prefix}_f"], abs=1e-12)
    for label, prf in scores[f"{prefix}_per_type"].items():
        assert micro_f1([counts[label]]) == pytest.approx(prf["f"], abs=1e-12)
    return counts


def test_flat_counts_follow_get_ner_prf_across_tokenisations():
    vocab = spacy.blank("en").vocab
    gold = _doc(vocab, ["New", "York", "'s", "Peter", "Blackburn", "met", "Jordan", "."],
                [(0, 2, "LOC"), (3, 5, "PER"), (6, 7, "PER")],
                spaces=[True, False, True, True, True, True, True, False])
    # predicted tokens differ ("York's" is one token); "Jordan" gets the wrong label, "met" is a false positive
    pred = _doc(vocab, ["New", "York's", "Peter", "Blackburn", "met", "Jordan", "."],
                [(0, 2, "LOC"), (2, 4, "PER"), (4, 5, "ORG"), (5, 6, "LOC")],
                spaces=[True, True, True, True, True, True, False])
    counts = _check([Example(pred, gold)])
    assert counts["PER"] == (1, 0, 1) and counts["ORG"] == (0, 1, 0) and counts["LOC"] == (0, 2, 1)


def test_flat_counts_skip_predictions_over_unannotated_tokens():
    vocab = spacy.blank("en").vocab
    words = ["Peter", "went", "to", "Bonn"]
    gold = Doc(vocab, words=words, ents=["B-PER", "O", "O", None])  # "Bonn" carries no annotation
    pred = _doc(vocab, words, [(0, 1, "PER"), (3, 4, "LOC")])
    counts = _check([Example(pred, gold)])
    assert counts["PER"] == (1, 0, 0) and counts["LOC"] == (0, 0, 0)


def test_nested_counts_follow_score_spans():
    vocab = spacy.blank("en").vocab
    words = ["IL-2", "gene", "binds", "NF-AT"]
    gold = _doc(vocab, words, [(0, 1, "PER"), (0, 2, "ORG"), (3, 4, "PER")], key="sc")
    pred = _doc(vocab, words, [(0, 1, "PER"), (0, 2, "LOC"), (3, 4, "PER"), (2, 4, "PER")], key="sc")
    counts = _check([Example(pred, gold)], key="sc")
    assert counts == {"LOC": (0, 1, 0), "ORG": (0, 0, 1), "PER": (2, 1, 0)}
