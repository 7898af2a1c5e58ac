"""Tests of spacy_padellm.training.convert, on small made-up files and on the real corpora in the shared data folder."""

import json
import os
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Doc, DocBin

from spacy_padellm.training.convert import (
    ConvertError,
    ConvertWarning,
    convert,
    detect_format,
    detect_scheme,
    doc_spans,
    docs_to_examples,
    read_docs,
    tags_to_spans,
)

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PADELLM_DATA", REPO.parent / "shared" / "data"))

needs_data = pytest.mark.skipif(not (DATA / "padellm").is_dir(), reason=f"no NER data in {DATA}")

CONLL03 = {  # split: (sentences, mentions), as in the data README
    "train": (14041, 23499),
    "dev": (3250, 5942),
    "test": (3453, 5648),
}


def read_jsonl(path):
    """The records of a padellm file, split on "\\n" only like the converter does."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def load_docs(path, lang="en"):
    return list(DocBin().from_disk(path).get_docs(spacy.blank(lang).vocab))


def quiet_convert(path, out, **kwargs):
    return convert(path, out, show_progress=False, **kwargs)


def mentions_in_order(record):
    """(label, mention) of a padellm record in reading order (start, then end)."""
    return [(label, mention) for _, _, mention, label in sorted(record[1:], key=lambda s: (s[0], s[1]))]


# --------------------------------------------------------------------------------------------------
# Real data


@pytest.fixture(scope="module")
def conll03(tmp_path_factory):
    """The three conll03 JSONL splits converted once: split -> (report, records, docs)."""
    out = tmp_path_factory.mktemp("conll03")
    converted = {}
    for split in CONLL03:
        path = DATA / "padellm" / "conll03" / f"conll03_{split}.jsonl"
        report = quiet_convert(path, out)
        converted[split] = (report, read_jsonl(path), load_docs(report.outputs[0]))
    return converted


@needs_data
@pytest.mark.parametrize("split", list(CONLL03))
def test_conll03_jsonl(conll03, split):
    report, records, docs = conll03[split]
    n_docs, n_mentions = CONLL03[split]
    assert (report.n_docs, report.n_spans, report.n_skipped) == (n_docs, n_mentions, 0)
    assert report.offsets == "token-inclusive"
    assert report.labels == ["LOC", "MISC", "ORG", "PER"]
    assert not report.nested
    assert len(docs) == len(records) == n_docs
    for doc, record in zip(docs, records):
        assert doc.text == record[0]
        assert [(span.label_, span.text) for span in doc_spans(doc)] == mentions_in_order(record)
    examples = read_jsonl(report.outputs[1])
    assert len(examples) == report.n_examples
    assert sum(1 for ex in examples if ex["count"] > 0) == n_mentions
    # One count-0 example for each (doc, label) without mentions, one per mention otherwise.
    empty = sum(1 for doc in docs for label in report.labels if not any(e.label_ == label for e in doc.ents))
    assert report.n_examples == n_mentions + empty
    assert json.loads(report.outputs[2].read_text(encoding="utf-8")) == report.labels


@needs_data
@pytest.mark.parametrize("split,n_docs", [("dev", 1669), ("test", 1854)])
def test_genia_nested(tmp_path, split, n_docs):
    path = DATA / "padellm" / "genia" / f"genia_{split}.jsonl"
    report = quiet_convert(path, tmp_path)
    records = read_jsonl(path)
    assert report.n_docs == n_docs
    assert report.n_spans == sum(len(r) - 1 for r in records)
    assert report.n_skipped == 0
    assert report.offsets == "token-exclusive"
    assert report.nested and report.spans_key == "sc"
    assert report.labels == sorted(["DNA", "RNA", "cell_type", "cell_line", "protein"])
    docs = load_docs(report.outputs[0])
    overlapping = 0
    for doc, record in zip(docs, records):
        spans = doc_spans(doc, "sc")
        assert [(span.label_, span.text) for span in spans] == mentions_in_order(record)
        ents = list(doc.ents)
        assert {(e.start, e.end, e.label_) for e in ents} <= {(s.start, s.end, s.label_) for s in spans}
        overlapping += len(spans) > len(ents)
    assert overlapping > 0
    examples = read_jsonl(report.outputs[1])
    assert sum(1 for ex in examples if ex["count"] > 0) == report.n_spans


@needs_data
def test_chinese_char_offsets(tmp_path):
    path = DATA / "padellm" / "weibo" / "weibo_dev.jsonl"
    report = quiet_convert(path, tmp_path, lang="zh")
    records = read_jsonl(path)
    assert (report.n_docs, report.n_skipped) == (270, 0)
    assert report.n_spans == sum(len(r) - 1 for r in records) == 389
    assert report.offsets == "char-inclusive"
    docs = load_docs(report.outputs[0], "zh")
    for doc, record in zip(docs, records):
        assert doc.text == record[0]
        assert [(span.label_, span.text) for span in doc_spans(doc)] == mentions_in_order(record)
        for start, end, mention, _ in record[1:]:
            span = doc.char_span(start, end + 1, alignment_mode="strict")
            assert span is not None and span.text == mention


@needs_data
def test_chinese_line_separators_and_whitespace_mentions(tmp_path):
    # ecommerce dev has a U+0085 inside a text and 3 mentions with a surrounding space.
    path = DATA / "padellm" / "ecommerce" / "ecommerce_dev.jsonl"
    report = quiet_convert(path, tmp_path, lang="zh")
    assert (report.n_docs, report.n_spans, report.n_skipped, report.n_trimmed) == (500, 1540, 0, 3)
    docs = load_docs(report.outputs[0], "zh")
    for doc, record in zip(docs, read_jsonl(path)):
        assert doc.text == record[0]
        assert [span.text for span in doc_spans(doc)] == [m.strip() for _, m in mentions_in_order(record)]
    # The examples file holds no raw line breaks that str.splitlines() would split on.
    lines = report.outputs[1].read_text(encoding="utf-8").splitlines()
    assert len(lines) == report.n_examples


@needs_data
def test_conll2003_column_file(tmp_path):
    path = DATA / "conll" / "conll2003" / "test.txt"
    label_map = {"person": "PER", "location": "LOC", "organisation": "ORG", "misc": "MISC"}
    report = quiet_convert(path, tmp_path, label_map=label_map)
    assert (report.n_docs, report.n_spans, report.n_skipped) == (3453, 5628, 0)
    assert report.scheme == "bio"
    assert report.labels == ["LOC", "MISC", "ORG", "PER"]
    docs = load_docs(report.outputs[0])
    # The same sentences as padellm/conll03 (tokens joined by single spaces), up to two quirks of the
    # JSONL copy: brackets are written -LPR- / -RPR-, and the token "None" was lost in 7 sentences.
    records = read_jsonl(DATA / "padellm" / "conll03" / "conll03_test.jsonl")
    assert len(records) == len(docs)
    for doc, record in zip(docs, records):
        assert " ".join(t.text for t in doc if t.text != "None") == " ".join(
            t for t in record[0].replace("-LPR-", "(").replace("-RPR-", ")").split() if t != "None"
        )
    examples = docs_to_examples(docs, report.labels)
    assert len(examples) == report.n_examples
    assert sum(1 for ex in examples if ex.count > 0) == 5628
    assert {ex.label for ex in examples} == set(label_map.values())
    written = read_jsonl(report.outputs[1])
    assert written == [ex.to_dict() for ex in examples]


# --------------------------------------------------------------------------------------------------
# Column files


COLUMNS = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
.\t.\tO\tO

Peter\tB-PER
Blackburn\tI-PER
"""


def test_column_round_trip(tmp_path):
    path = tmp_path / "tiny.iob"
    path.write_text(COLUMNS, encoding="utf-8")
    report = quiet_convert(path, tmp_path / "out")
    assert report.fmt == "conll" and report.scheme == "bio"
    assert (report.n_docs, report.n_spans) == (2, 3)
    assert [p.name for p in report.outputs] == ["tiny.spacy", "tiny.padellm.jsonl", "tiny.labels.json"]
    docs = load_docs(report.outputs[0])
    assert [doc.text for doc in docs] == ["EU rejects German call .", "Peter Blackburn"]
    assert [[(e.text, e.label_) for e in doc.ents] for doc in docs] == [
        [("EU", "ORG"), ("German", "MISC")],
        [("Peter Blackburn", "PER")],
    ]
    # DocBin -> DocBin keeps the entities.
    again = quiet_convert(report.outputs[0], tmp_path / "again")
    assert again.fmt == "spacy"
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in load_docs(again.outputs[0])] == [
        [(e.start, e.end, e.label_) for e in d.ents] for d in docs
    ]
    examples = read_jsonl(report.outputs[1])
    assert examples[:4] == [
        {"text": "EU rejects German call .", "label": "MISC", "count": 1, "k": 1, "mention": "German"},
        {"text": "EU rejects German call .", "label": "ORG", "count": 1, "k": 1, "mention": "EU"},
        {"text": "EU rejects German call .", "label": "PER", "count": 0, "k": 0, "mention": ""},
        {"text": "Peter Blackburn", "label": "MISC", "count": 0, "k": 0, "mention": ""},
    ]


@pytest.mark.parametrize(
    "tags,scheme,spans",
    [
        # BIO: B- starts every entity.
        (["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"], "bio", [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC")]),
        # IOB1: I- starts entities, B- only splits two adjacent ones of a label.
        (
            ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"],
            "iob1",
            [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC"), (5, 6, "ORG")],
        ),
        # BIOES (and BILOU).
        (
            ["B-PER", "E-PER", "S-LOC", "S-LOC", "O", "B-ORG", "I-ORG", "E-ORG"],
            "bioes",
            [(0, 2, "PER"), (2, 3, "LOC"), (3, 4, "LOC"), (5, 8, "ORG")],
        ),
        (["U-LOC", "B-PER", "L-PER"], "bioes", [(0, 1, "LOC"), (1, 3, "PER")]),
        (["O", "O"], "bio", []),
    ],
)
def test_tag_schemes(tags, scheme, spans):
    assert detect_scheme([tags]) == scheme
    assert tags_to_spans(tags) == spans


def test_scheme_in_file(tmp_path):
    path = tmp_path / "iobes.txt"
    path.write_text("Jan\tS-person\nvisits\tO\nNew\tB-location\nYork\tE-location\n", encoding="utf-8")
    report = quiet_convert(path, tmp_path / "out", label_map={"person": "PER"})
    assert report.scheme == "bioes" and report.labels == ["PER", "location"]
    [doc] = load_docs(report.outputs[0])
    assert [(e.text, e.label_) for e in doc.ents] == [("Jan", "PER"), ("New York", "location")]
    with pytest.raises(ConvertError, match=r"iobes\.txt:1: .*not part of the BIO scheme"):
        quiet_convert(path, tmp_path / "out", scheme="bio")


def test_chinese_column_file_has_no_spaces(tmp_path):
    path = tmp_path / "zh.bio"
    path.write_text("北 B-LOC\n京 I-LOC\n欢 O\n迎 O\n", encoding="utf-8")
    report = quiet_convert(path, tmp_path / "out", lang="zh")
    [doc] = load_docs(report.outputs[0], "zh")
    assert doc.text == "北京欢迎"
    assert [(e.text, e.label_) for e in doc.ents] == [("北京", "LOC")]


# --------------------------------------------------------------------------------------------------
# PaDeLLM JSONL


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_padellm_offsets_auto_and_mismatch(tmp_path):
    path = write_jsonl(
        tmp_path / "mini.jsonl",
        [
            ["Peter Blackburn met Angela Merkel .", [0, 1, "Peter Blackburn", "PER"], [3, 4, "Angela Merkel", "PER"]],
            ["Nothing here ."],
            ["In Berlin today", [1, 1, "Berlin", "LOC"], [2, 2, "Bonn", "LOC"]],
        ],
    )
    with pytest.warns(ConvertWarning, match=r"mini\.jsonl:3: .*'Bonn'"):
        report = quiet_convert(path, tmp_path / "out")
    assert report.offsets == "token-inclusive"
    assert (report.n_docs, report.n_spans, report.n_skipped) == (3, 3, 1)
    assert len(report.problems) == 1 and "mini.jsonl:3" in report.problems[0]
    assert "1 spans skipped" in report.summary()
    docs = load_docs(report.outputs[0])
    assert [[e.text for e in d.ents] for d in docs] == [["Peter Blackburn", "Angela Merkel"], [], ["Berlin"]]


@pytest.mark.parametrize(
    "offsets,spans",
    [
        ("token-exclusive", [[0, 2, "New York", "LOC"], [5, 6, "NYCity", "LOC"]]),
        ("char-exclusive", [[0, 8, "New York", "LOC"], [12, 17, "rainy", "MISC"], [22, 25, "NYC", "LOC"]]),
        ("char-inclusive", [[0, 7, "New York", "LOC"], [12, 16, "rainy", "MISC"], [22, 24, "NYC", "LOC"]]),
    ],
)
def test_padellm_offset_conventions(tmp_path, offsets, spans):
    # "NYCity" is one token for the English tokenizer: the converter splits it at the span boundary.
    path = write_jsonl(tmp_path / "conv.jsonl", [["New York is rainy, as NYCity is."] + spans])
    report = quiet_convert(path, tmp_path / "out")
    assert report.offsets == offsets and report.n_skipped == 0
    [doc] = load_docs(report.outputs[0])
    assert [(e.text, e.label_) for e in doc.ents] == [(m, label) for _, _, m, label in spans]
    forced = quiet_convert(path, tmp_path / "forced", offsets=offsets)
    assert forced.n_spans == len(spans)


def test_spans_key_labels_and_docbin_input(tmp_path):
    path = write_jsonl(
        tmp_path / "nest.jsonl",
        [
            [
                "the IL-2 gene promoter",
                [1, 3, "IL-2 gene", "DNA"],
                [1, 2, "IL-2", "protein"],
                [1, 4, "IL-2 gene promoter", "DNA"],
            ]
        ],
    )
    report = quiet_convert(path, tmp_path / "out", labels=["protein", "DNA", "RNA"])
    assert report.nested and report.spans_key == "sc"
    assert report.labels == ["protein", "DNA", "RNA"]
    [doc] = load_docs(report.outputs[0])
    assert [(s.text, s.label_) for s in doc_spans(doc, "sc")] == [
        ("IL-2", "protein"),
        ("IL-2 gene", "DNA"),
        ("IL-2 gene promoter", "DNA"),
    ]
    assert [e.text for e in doc.ents] == ["IL-2 gene promoter"]  # longest first
    examples = docs_to_examples([doc], report.labels, spans_key="sc")
    assert [(ex.label, ex.count, ex.k, ex.mention) for ex in examples] == [
        ("protein", 1, 1, "IL-2"),
        ("DNA", 2, 1, "IL-2 gene"),
        ("DNA", 2, 2, "IL-2 gene promoter"),
        ("RNA", 0, 0, ""),
    ]
    # A DocBin read through its span group, with a label left out of the label set.
    again = quiet_convert(report.outputs[0], tmp_path / "again", spans_key="sc", labels=["DNA"])
    assert (again.n_spans, again.n_filtered, again.labels) == (2, 1, ["DNA"])
    with pytest.raises(ConvertError, match="no span group 'nope'"):
        quiet_convert(report.outputs[0], tmp_path / "again", spans_key="nope")


def test_flat_data_with_spans_key(tmp_path):
    path = write_jsonl(tmp_path / "flat.jsonl", [["Paris is nice", [0, 0, "Paris", "LOC"]]])
    report = quiet_convert(path, tmp_path / "out", spans_key="ner")
    assert not report.nested and report.spans_key == "ner"
    [doc] = load_docs(report.outputs[0])
    assert [s.text for s in doc.spans["ner"]] == [e.text for e in doc.ents] == ["Paris"]


def test_read_docs_and_examples_api():
    nlp = spacy.blank("en")
    doc = Doc(nlp.vocab, words=["Anna", "likes", "Rome"], spaces=[True, True, False])
    doc.ents = [doc.char_span(0, 4, "PER"), doc.char_span(11, 15, "LOC")]
    examples = docs_to_examples([doc])
    assert [(ex.label, ex.mention) for ex in examples] == [("LOC", "Rome"), ("PER", "Anna")]


# --------------------------------------------------------------------------------------------------
# Errors and format detection


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("bad.jsonl", '["ok"]\n["broken", \n', r"bad\.jsonl:2: not valid JSON"),
        ("bad.jsonl", '["ok"]\n{"text": "x"}\n', r"bad\.jsonl:2: expected a JSON array"),
        ("bad.jsonl", '["a b", [0, 1, "a b"]]\n', r"bad\.jsonl:1: entity 1"),
        ("bad.txt", "EU B-ORG\nrejects\n", r"bad\.txt:2: expected a token and a tag"),
        ("bad.txt", "EU B-ORG\n\nPeter X-PER\n", r"bad\.txt:3: invalid tag 'X-PER'"),
        ("empty.jsonl", "", r"empty\.jsonl is empty"),
        ("empty.txt", "\n\n", r"empty\.txt is empty"),
    ],
)
def test_malformed_input(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConvertError, match=match):
        quiet_convert(path, tmp_path / "out")


def test_unknown_options(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [["x"]])
    with pytest.raises(ValueError, match="conll, padellm, spacy"):
        quiet_convert(path, tmp_path / "out", fmt="brat")
    with pytest.raises(ValueError, match="Unknown offsets"):
        quiet_convert(path, tmp_path / "out", offsets="bytes")
    with pytest.raises(ConvertError, match="does not exist"):
        quiet_convert(tmp_path / "missing.txt", tmp_path / "out")


def test_no_convention_matches(tmp_path):
    path = write_jsonl(tmp_path / "off.jsonl", [["a b c", [7, 9, "zzz", "X"]]])
    with pytest.raises(ConvertError, match="no offset convention"):
        quiet_convert(path, tmp_path / "out")


def test_detect_format(tmp_path):
    (tmp_path / "a.data").write_text('["text", [0, 0, "text", "X"]]\n', encoding="utf-8")
    (tmp_path / "b.data").write_text("EU B-ORG\n", encoding="utf-8")
    assert detect_format(tmp_path / "x.spacy") == "spacy"
    assert detect_format(tmp_path / "x.jsonl") == "padellm"
    assert detect_format(tmp_path / "a.data") == "padellm"
    assert detect_format(tmp_path / "b.data") == "conll"
    result = read_docs(tmp_path / "a.data", "en")
    assert result.fmt == "padellm" and result.n_spans == 1
