"""Each reader of ``convert`` on tiny files written in tmp_path: the format edges the converter
tests do not reach (line endings, byte-order marks, columns, scheme names, whitespace, offset ties,
files that are not what they claim to be), and the span step shared by all readers."""

import json
import warnings

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_padellm.training.convert import ConvertError, ConvertWarning, read_docs
from spacy_padellm.training.readers.conll import read_conll_docs
from spacy_padellm.training.readers.docbin import read_docbin_docs
from spacy_padellm.training.readers.padellm_jsonl import (
    PadellmRecord,
    detect_offsets,
    read_padellm_docs,
    read_padellm_records,
)
from spacy_padellm.training.readers.raw import RawDoc, read_lines, warn_skipped, words_doc
from spacy_padellm.training.spans import set_doc_spans


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def spans_of(raw):
    return [(raw.doc[s:e].text, label) for s, e, label in raw.spans]


# --------------------------------------------------------------------------------------------------
# Shared helpers


def test_read_lines_bom_crlf_and_unicode_separators(tmp_path):
    path = write(tmp_path / "x.txt", "\ufeffa\r\nb\u2028c\r\n\nd")
    assert read_lines(path) == ["a", "b\u2028c", "", "d"]


def test_read_lines_rejects_other_encodings_and_blank_files(tmp_path):
    with pytest.raises(ConvertError, match=r"latin\.txt is not UTF-8 text"):
        read_lines(write(tmp_path / "latin.txt", "Müller B-PER\n", encoding="latin-1"))
    with pytest.raises(ConvertError, match=r"blank\.txt is empty"):
        read_lines(write(tmp_path / "blank.txt", " \n\t\n"))


def test_words_doc_spacing(nlp):
    assert words_doc(nlp, ["a", "b"], space_between=True).text == "a b"
    assert words_doc(nlp, ["北", "京"], space_between=False).text == "北京"
    assert len(words_doc(nlp, [], space_between=True)) == 0


def test_warn_skipped_caps_the_number_of_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_skipped([f"problem {i}" for i in range(25)])
    messages = [str(w.message) for w in caught]
    assert all(w.category is ConvertWarning for w in caught)
    assert messages[:20] == [f"problem {i}" for i in range(20)]
    assert messages[20:] == ["... and 5 more skipped spans (ConvertReport.problems lists them all)"]


# --------------------------------------------------------------------------------------------------
# CoNLL / IOB column files


def test_conll_columns_line_endings_and_docstart(tmp_path, nlp):
    text = ("\ufeff-DOCSTART- -X- -X- O\r\n\r\n"
            "EU NNP B-NP B-ORG\r\nrejects VBZ B-VP O\r\n\r\n\r\n"
            "Peter NNP B-NP B-PER\r\nBlackburn NNP I-NP I-PER\r\n")
    info = {}
    raws = read_conll_docs(write(tmp_path / "c.txt", text), nlp, "auto", info, show_progress=False)
    assert info == {"scheme": "bio"}
    assert [r.doc.text for r in raws] == ["EU rejects", "Peter Blackburn"]
    assert [r.where for r in raws] == [f"{tmp_path / 'c.txt'}:3", f"{tmp_path / 'c.txt'}:7"]  # first token's line
    assert [spans_of(r) for r in raws] == [[("EU", "ORG")], [("Peter Blackburn", "PER")]]


def test_conll_tab_separated_tokens_may_hold_spaces(tmp_path, nlp):
    raws = read_conll_docs(write(tmp_path / "t.tsv", "New York\tB-LOC\ncity\tO\n"), nlp, "auto", {}, False)
    assert [t.text for t in raws[0].doc] == ["New York", "city"]
    assert spans_of(raws[0]) == [("New York", "LOC")]


@pytest.mark.parametrize("given,used", [("IOB2", "bio"), ("bilou", "bioes"), ("iobes", "bioes"), ("IOB1", "iob1")])
def test_conll_scheme_names_and_aliases(tmp_path, nlp, given, used):
    info = {}
    read_conll_docs(write(tmp_path / "s.txt", "Jan B-PER\n"), nlp, given, info, False)
    assert info["scheme"] == used


def test_conll_errors(tmp_path, nlp):
    with pytest.raises(ConvertError, match="Unknown tag scheme 'bilo'"):
        read_conll_docs(write(tmp_path / "a.txt", "Jan B-PER\n"), nlp, "bilo", {}, False)
    with pytest.raises(ConvertError, match=r"b\.txt:2: tag 'U-LOC' is not part of the IOB1 scheme"):
        read_conll_docs(write(tmp_path / "b.txt", "Jan B-PER\nRome U-LOC\n"), nlp, "iob1", {}, False)
    with pytest.raises(ConvertError, match=r"c\.txt:1: empty token"):
        read_conll_docs(write(tmp_path / "c.txt", "\tB-PER\n"), nlp, "auto", {}, False)
    with pytest.raises(ConvertError, match=r"d\.txt is empty \(no tokens\)"):
        read_conll_docs(write(tmp_path / "d.txt", "-DOCSTART- O\n\n"), nlp, "auto", {}, False)
    with pytest.raises(ConvertError, match=r"e\.txt:1: invalid tag 'B-'"):
        read_conll_docs(write(tmp_path / "e.txt", "Jan B-\n"), nlp, "auto", {}, False)


# --------------------------------------------------------------------------------------------------
# PaDeLLM JSONL


def jsonl(path, records):
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def test_padellm_records_keep_line_numbers_and_unicode_separators(tmp_path):
    path = write(tmp_path / "r.jsonl", '["a\u2028b", [0, 0, "a", "X"]]\r\n\n["c"]\n')
    assert read_padellm_records(path, show_progress=False) == [
        PadellmRecord(1, "a\u2028b", [(0, 0, "a", "X")]),
        PadellmRecord(3, "c", []),
    ]


@pytest.mark.parametrize("entity", [[True, 1, "a", "X"], [0, 1, "a", ""], [0, 1, 2, "X"], [0, "1", "a", "X"]])
def test_padellm_entity_shape_is_checked(tmp_path, entity):
    with pytest.raises(ConvertError, match=r"e\.jsonl:1: entity 1 is .*expected \[start, end, mention, label\]"):
        read_padellm_records(jsonl(tmp_path / "e.jsonl", [["a b", entity]]), show_progress=False)


def test_padellm_detect_offsets_tie_follows_the_language():
    # "A" is token 0 (token-inclusive) and character 0 (char-inclusive): a tie.
    records = [PadellmRecord(1, "A b", [(0, 0, "A", "X")])]
    assert detect_offsets(records, "en")[0] == "token-inclusive"
    assert detect_offsets(records, "zh")[0] == "char-inclusive"
    assert detect_offsets([PadellmRecord(1, "no spans", [])], "en") == (
        "token-inclusive", {"token-inclusive": 0, "token-exclusive": 0, "char-inclusive": 0, "char-exclusive": 0})


def test_padellm_token_mentions_match_with_any_spacing(tmp_path, nlp):
    path = jsonl(tmp_path / "t.jsonl", [["in  New   York today", [1, 2, "New York", "LOC"], [1, 2, " New\tYork ", "GPE"]]])
    problems, info = [], {}
    [raw] = read_padellm_docs(path, nlp, "token-inclusive", problems, info, show_progress=False)
    assert raw.doc.text == "in New York today"  # token data: one space between tokens
    assert spans_of(raw) == [("New York", "LOC"), ("New York", "GPE")] and problems == []
    assert info == {"offsets": "token-inclusive", "n_trimmed": 0}


def test_padellm_char_spans_trimmed_or_skipped(tmp_path, nlp):
    path = jsonl(tmp_path / "w.jsonl", [["go to  Rome now", [5, 11, "  Rome", "LOC"], [5, 7, "  ", "LOC"]]])
    problems, info = [], {}
    [raw] = read_padellm_docs(path, nlp, "char-exclusive", problems, info, show_progress=False)
    assert spans_of(raw) == [("Rome", "LOC")]
    assert info["n_trimmed"] == 1
    assert problems == [f"{path}:1: span [5, 7, '  ', 'LOC'] is only whitespace; skipped"]


def test_padellm_out_of_range_span_is_reported(tmp_path, nlp):
    path = jsonl(tmp_path / "o.jsonl", [["a b", [0, 0, "a", "X"], [5, 9, "zzz", "X"]]])
    problems = []
    read_padellm_docs(path, nlp, "token-inclusive", problems, {}, show_progress=False)
    assert problems == [f"{path}:1: span [5, 9, 'zzz', 'X'] gives nothing (out of range) under token-inclusive "
                        "offsets, not its mention; skipped"]


def test_padellm_auto_records_the_matches(tmp_path, nlp):
    path = jsonl(tmp_path / "m.jsonl", [["Rome is big", [0, 4, "Rome", "LOC"]]])
    info = {}
    read_padellm_docs(path, nlp, "auto", [], info, show_progress=False)
    assert info["offsets"] == "char-exclusive"
    assert info["offset_matches"] == {"token-inclusive": 0, "token-exclusive": 0, "char-inclusive": 0,
                                      "char-exclusive": 1}


# --------------------------------------------------------------------------------------------------
# DocBin


def test_docbin_reader(tmp_path, nlp):
    doc = Doc(nlp.vocab, words=["Anna", "in", "Rome"])
    doc.ents = [doc.char_span(0, 4, "PER")]
    doc.spans["all"] = [doc.char_span(0, 4, "PER"), doc.char_span(8, 12, "LOC")]
    path = tmp_path / "d.spacy"
    DocBin(docs=[doc, Doc(nlp.vocab, words=["x"])]).to_disk(path)
    raws = read_docbin_docs(path, nlp, None, show_progress=False)
    assert [r.where for r in raws] == [f"{path}: doc 0", f"{path}: doc 1"]
    assert [spans_of(r) for r in raws] == [[("Anna", "PER")], []]
    raws = read_docbin_docs(path, nlp, "all", show_progress=False)
    assert [spans_of(r) for r in raws] == [[("Anna", "PER"), ("Rome", "LOC")], []]  # a doc without the group: none


def test_docbin_reader_rejects_other_files(tmp_path, nlp):
    with pytest.raises(ConvertError, match=r"x\.spacy is not a spaCy DocBin"):
        read_docbin_docs(write(tmp_path / "x.spacy", "not a docbin"), nlp, None, show_progress=False)
    DocBin().to_disk(tmp_path / "e.spacy")
    with pytest.raises(ConvertError, match=r"e\.spacy is empty \(no docs\)"):
        read_docbin_docs(tmp_path / "e.spacy", nlp, None, show_progress=False)


# --------------------------------------------------------------------------------------------------
# The span step shared by all readers


def raw_doc(nlp, spans):
    return RawDoc(Doc(nlp.vocab, words=["a", "b", "c", "d"]), "f:1", spans)


def test_set_doc_spans_duplicates_labels_and_nesting(nlp):
    problems = []
    raws = [raw_doc(nlp, [(0, 2, "x"), (0, 2, "X"), (2, 3, "Y"), (3, 4, "Z")]), raw_doc(nlp, [(1, 3, "X")])]
    result = set_doc_spans(raws, "conll", "X, Y", None, {"x": "X"}, problems)
    assert problems == ["f:1: duplicate span X [0, 2) ('a b'); skipped"]
    assert (result.n_spans, result.n_skipped, result.n_filtered) == (3, 1, 1)
    assert result.labels == ["X", "Y"] and not result.nested and result.spans_key is None
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in result.docs] == [[(0, 2, "X"), (2, 3, "Y")],
                                                                                    [(1, 3, "X")]]
    nested = set_doc_spans([raw_doc(nlp, [(0, 3, "X"), (1, 2, "Y")])], "conll", None, None, None, [])
    assert nested.nested and nested.spans_key == "sc" and nested.labels == ["X", "Y"]
    assert [(e.start, e.end) for e in nested.docs[0].ents] == [(0, 3)]
    with pytest.raises(ConvertError, match="names a label twice"):
        set_doc_spans([raw_doc(nlp, [])], "conll", ["X", "X"], None, None, [])


def test_read_docs_warns_after_reading(tmp_path):
    path = jsonl(tmp_path / "s.jsonl", [["a b", [0, 0, "a", "X"], [1, 1, "zzz", "X"]]])
    with pytest.warns(ConvertWarning, match=r"s\.jsonl:1: span \[1, 1, 'zzz', 'X'\]"):
        result = read_docs(path, "en")
    assert (result.fmt, result.offsets, result.n_spans, result.n_skipped) == ("padellm", "token-inclusive", 1, 1)
