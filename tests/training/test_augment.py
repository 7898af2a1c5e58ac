import json
import random

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from spacy_padellm.training.augment import augment_docs, mention_bank, replace_mentions, replaceable
from spacy_padellm.training.convert import convert


def _doc(nlp, text, spans, key="sc"):
    words = text.split()  # tokens as written, as the GENIA files have them
    doc = Doc(nlp.vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
    objs = [Span(doc, s, e, label=label) for s, e, label in spans]
    if key is None:
        doc.ents = objs
    else:
        doc.spans[key] = objs
    return doc


def _spans(doc, key="sc"):
    group = doc.ents if key is None else doc.spans[key]
    return sorted((s.text, s.label_) for s in group)


@pytest.fixture
def nlp():
    return spacy.blank("en")


def test_replaceable_keeps_outermost_uncrossed_spans():
    spans = [(0, 3, "DNA"), (0, 1, "protein"), (4, 6, "A"), (5, 7, "B"), (8, 9, "X"), (8, 9, "Y"), (10, 11, "Z")]
    # (0, 3) holds (0, 1); (4, 6) and (5, 7) cross; (8, 9) has two labels
    assert replaceable(spans) == [(0, 3, "DNA"), (10, 11, "Z")]


def test_nested_mention_is_replaced_with_what_it_holds(nlp):
    a = _doc(nlp, "the IL-2 gene is active .", [(1, 3, "DNA"), (1, 2, "protein")])
    b = _doc(nlp, "we saw c-fos promoter binding", [(2, 4, "DNA"), (2, 3, "protein")])
    bank = mention_bank([a, b], "sc")
    assert [m.words for m in bank["DNA"]] == [("IL-2", "gene"), ("c-fos", "promoter")]
    copy = replace_mentions(a, bank, random.Random(0), rate=1.0, spans_key="sc")
    assert copy.text == "the c-fos promoter is active ."
    assert _spans(copy) == [("c-fos", "protein"), ("c-fos promoter", "DNA")]
    # the non-overlapping subset is in doc.ents, as convert writes it
    assert [(e.text, e.label_) for e in copy.ents] == [("c-fos promoter", "DNA")]


def test_spans_after_a_replacement_move_with_the_text(nlp):
    a = _doc(nlp, "IL-2 binds NF-kappa B in T cells", [(0, 1, "protein"), (2, 4, "protein"), (5, 7, "cell_type")])
    b = _doc(nlp, "p53 in monocytes", [(0, 1, "protein"), (2, 3, "cell_type")])
    bank = mention_bank([a, b], "sc")
    copy = replace_mentions(a, bank, random.Random(1), rate=1.0, spans_key="sc")
    for span in copy.spans["sc"]:
        assert span.text in {"IL-2", "NF-kappa B", "p53", "T cells", "monocytes"}
    assert [s.label_ for s in sorted(copy.spans["sc"], key=lambda s: s.start)] == ["protein", "protein", "cell_type"]
    assert copy.text != a.text


def test_no_donor_of_another_text_gives_no_copy(nlp):
    a = _doc(nlp, "IL-2 is here", [(0, 1, "protein")])
    b = _doc(nlp, "so is IL-2", [(2, 3, "protein")])
    assert replace_mentions(a, mention_bank([a, b], "sc"), random.Random(0), 1.0, "sc") is None


def test_augment_docs_flat_ents_deterministic(nlp):
    docs = [_doc(nlp, "Paris is in France .", [(0, 1, "LOC"), (3, 4, "LOC")], None),
            _doc(nlp, "Berlin and Madrid met John .", [(0, 1, "LOC"), (2, 3, "LOC"), (4, 5, "PER")], None),
            _doc(nlp, "Mary stayed home .", [(0, 1, "PER")], None)]
    out = augment_docs(docs, copies=3, rate=0.5, seed=7)
    again = augment_docs(docs, copies=3, rate=0.5, seed=7)
    assert [d.text for d in out] == [d.text for d in again]
    assert out[:3] == docs and len(out) > 3
    assert len({d.text for d in out}) == len(out)  # no copy repeats a text
    for doc in out[3:]:
        for ent in doc.ents:
            assert ent.text in {"Paris", "France", "Berlin", "Madrid", "John", "Mary"}
    with pytest.raises(ValueError):
        augment_docs(docs, copies=-1)
    with pytest.raises(ValueError):
        augment_docs(docs, copies=1, rate=0.0)


def test_convert_writes_the_copies(tmp_path, nlp):
    lines = [["IL-2 gene expression in T cells", [0, 2, "IL-2 gene", "DNA"], [0, 1, "IL-2", "protein"],
              [4, 6, "T cells", "cell_type"]],
             ["c-fos promoter activity in monocytes", [0, 2, "c-fos promoter", "DNA"], [0, 1, "c-fos", "protein"],
              [4, 5, "monocytes", "cell_type"]]]
    src = tmp_path / "train.jsonl"
    src.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf8")
    report = convert(src, tmp_path / "out", spans_key="sc", augment=2, augment_rate=1.0, show_progress=False)
    assert report.n_docs == 2 and report.n_augmented >= 1
    assert "mention-replaced copies" in report.summary()
    docs = list(DocBin().from_disk(tmp_path / "out" / "train.spacy").get_docs(nlp.vocab))
    assert len(docs) == 2 + report.n_augmented
    texts = {json.loads(line)["text"] for line in open(tmp_path / "out" / "train.padellm.jsonl", encoding="utf8")}
    assert texts == {doc.text for doc in docs}
    swapped = [doc for doc in docs[2:] if doc.text.startswith("c-fos promoter expression")]
    assert swapped and ("c-fos", "protein") in _spans(swapped[0])
    with pytest.raises(ValueError, match="rate"):  # refused before the file is read
        convert(tmp_path / "missing.jsonl", tmp_path / "out2", augment=1, augment_rate=1.5, show_progress=False)


def test_sentence_starts_are_kept(nlp):
    words = ["IL-2", "binds", ".", "p53", "does", "not", "."]
    doc = Doc(nlp.vocab, words=words, spaces=[True] * 6 + [False], sent_starts=[True, False, False, True, False,
                                                                               False, False])
    doc.spans["sc"] = [Span(doc, 0, 1, label="protein"), Span(doc, 3, 4, label="protein")]
    donor = _doc(nlp, "NF-kappa B here", [(0, 2, "protein")])
    copy = replace_mentions(doc, mention_bank([doc, donor], "sc"), random.Random(3), rate=1.0, spans_key="sc")
    assert [s.text.split()[-1] for s in copy.sents] == [".", "."] and len(list(copy.sents)) == 2
    flat = _doc(nlp, "Paris is big", [(0, 1, "LOC")], None)
    other = _doc(nlp, "Rome too", [(0, 1, "LOC")], None)
    assert not replace_mentions(flat, mention_bank([flat, other]), random.Random(0), 1.0).has_annotation("SENT_START")
