"""Nested entities and Chinese through the same workflow as flat English.

Nested: gold spans with overlaps -> `convert` (doc.spans["sc"]) -> training examples -> a tiny model trained
here -> padellm_ner with spans_key -> doc.spans["sc"] equal to the gold, spans_sc_f 1.0 from `spacy
evaluate`; flat mode resolves the overlaps into valid doc.ents; de-duplication and a span gold under two
labels. Chinese: spacy.blank("zh") with character segmentation, the aligner on characters (k-th mention
to k-th occurrence, full-width punctuation, ASCII inside Chinese), and a tiny model through the zh template.
"""

import json
import subprocess
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin
from spacy.training import Example

from spacy_padellm.text.align import AlignedSpan, align_mentions
from spacy_padellm.training.convert import doc_spans, read_docs
from spacy_padellm.pipeline.output import write_spans
from spacy_padellm.text.protocol import TEMPLATES

ZH_CONFIG = {"nlp": {"tokenizer": {"segmenter": "char"}}}


def zh_nlp():
    return spacy.blank("zh", config=ZH_CONFIG)


def gold_docs(path, vocab):
    return list(DocBin().from_disk(path).get_docs(vocab))


def spans_of(doc, key=None):
    spans = doc.spans[key] if key else doc.ents
    return sorted((s.start_char, s.end_char, s.label_) for s in spans)


def char_tokens(text):
    doc = zh_nlp().make_doc(text)
    return [(t.idx, t.idx + len(t)) for t in doc if not t.is_space]


# --------------------------------------------------------------------------------------------------
# Nested: round trip through convert, training and the component


def test_nested_convert_keeps_every_gold_span(nested_model, nested_zh_data):
    _, docbin, report = nested_model
    assert report.nested and report.spans_key == "sc" and report.offsets == "token-exclusive"
    docs = gold_docs(docbin, spacy.blank("en").vocab)
    records = nested_zh_data["nested"] + nested_zh_data["nested_dup"]
    for doc, record in zip(docs, records):
        want = sorted((label, mention) for _, _, mention, label in record[1:])
        assert sorted((s.label_, s.text) for s in doc.spans["sc"]) == want
        ents = {(e.start, e.end) for e in doc.ents}  # the non-overlapping subset
        assert all(a[1] <= b[0] for a, b in zip(sorted(ents), sorted(ents)[1:]))
    examples = [json.loads(line) for line in report.outputs[1].read_text(encoding="utf-8").splitlines()]
    # Every nested mention is a training example: IL-2 (protein, k=1 and k=2) of the third sentence included.
    third = [(e["label"], e["k"], e["mention"]) for e in examples if e["text"] == records[2][0] and e["count"]]
    assert ("protein", 1, "IL-2") in third and ("protein", 2, "IL-2") in third
    assert ("protein", 3, "IL-2 receptor") in third and ("cell_type", 1, "T cells") in third


def test_nested_round_trip_span_group_equals_gold(nested_model, nested_zh_data):
    model, docbin, _ = nested_model
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(model), "spans_key": "sc"})
    gold = gold_docs(docbin, nlp.vocab)[: len(nested_zh_data["nested"])]
    preds = list(nlp.pipe(d.text for d in gold))
    for pred, ref in zip(preds, gold):
        assert spans_of(pred, "sc") == spans_of(ref, "sc")
        assert pred._.padellm["overlaps_removed"] == 0
        assert len(pred.spans["sc"].attrs["scores"]) == len(pred.spans["sc"])
    scores = nlp.evaluate([Example(nlp.make_doc(g.text), g) for g in gold])
    assert scores["spans_sc_f"] == 1.0 and scores["spans_sc_p"] == 1.0


def test_nested_spacy_evaluate_cli(nested_model, nested_zh_data, tmp_path):
    model, docbin, _ = nested_model
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(model), "spans_key": "sc"})
    nlp.to_disk(tmp_path / "pipeline")
    test = tmp_path / "test.spacy"
    DocBin(docs=gold_docs(docbin, nlp.vocab)[: len(nested_zh_data["nested"])]).to_disk(test)
    out = tmp_path / "metrics.json"
    subprocess.run([sys.executable, "-m", "spacy", "evaluate", str(tmp_path / "pipeline"), str(test), "--output", str(out)],
                   check=True, capture_output=True, cwd=Path(__file__).resolve().parents[2])
    metrics = json.loads(out.read_text())
    assert metrics["spans_sc_f"] == 1.0


def _recording_spans_key(model: Path, folder: Path, value) -> Path:
    """A copy of ``model`` whose padellm.json records ``spans_key`` = ``value`` (as the trainer writes it for
    nested data)."""
    import shutil

    shutil.copytree(model, folder)
    meta = json.loads((folder / "padellm.json").read_text())
    meta["spans_key"] = value
    (folder / "padellm.json").write_text(json.dumps(meta))
    return folder


def test_model_recording_a_span_key_is_nested_without_config(nested_model, nested_zh_data, tmp_path):
    """A model folder that records spans_key (trained on nested data) writes that span group when the
    component's spans_key is null, also after a save/load round trip and in `nlp.evaluate`; "" is flat."""
    model, docbin, _ = nested_model
    recorded = _recording_spans_key(model, tmp_path / "model", "sc")
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": str(recorded)})
    assert ner.spans_key == "sc" and ner.cfg["spans_key"] is None
    gold = gold_docs(docbin, nlp.vocab)[: len(nested_zh_data["nested"])]
    for pred, ref in zip(nlp.pipe(d.text for d in gold), gold):
        assert spans_of(pred, "sc") == spans_of(ref, "sc") and not pred.ents
    assert nlp.evaluate([Example(nlp.make_doc(g.text), g) for g in gold])["spans_sc_f"] == 1.0
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("padellm_ner").spans_key == "sc"
    assert spans_of(loaded(gold[0].text), "sc") == spans_of(gold[0], "sc")
    flat = spacy.blank("en")
    ner = flat.add_pipe("padellm_ner", config={"model": str(recorded), "spans_key": ""})
    doc = flat(gold[0].text)
    assert ner.spans_key is None and "sc" not in doc.spans
    assert set(spans_of(doc)) < set(spans_of(gold[0], "sc"))  # overlaps resolved
    other = spacy.blank("en")
    other.add_pipe("padellm_ner", config={"model": str(recorded), "spans_key": "nested"})
    assert spans_of(other(gold[0].text), "nested") == spans_of(gold[0], "sc")


def test_load_pipeline_spans_key_for_model_and_pipeline_folders(nested_model, tmp_path):
    """load_pipeline (evaluate, tune, error_analysis): spans_key "" keeps a nested model flat, and a key given for
    a spaCy pipeline folder reaches its padellm_ner."""
    from spacy_padellm.pipeline.load import load_pipeline

    recorded = _recording_spans_key(nested_model[0], tmp_path / "model", "sc")
    assert load_pipeline(str(recorded)).get_pipe("padellm_ner").spans_key == "sc"
    assert load_pipeline(str(recorded), spans_key="").get_pipe("padellm_ner").spans_key is None
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(nested_model[0])})
    nlp.to_disk(tmp_path / "pipeline")
    assert load_pipeline(str(tmp_path / "pipeline")).get_pipe("padellm_ner").spans_key is None
    assert load_pipeline(str(tmp_path / "pipeline"), spans_key="sc").get_pipe("padellm_ner").spans_key == "sc"


def test_bad_recorded_span_key_is_a_model_folder_error(nested_model, tmp_path):
    import pytest

    from spacy_padellm.loading import ModelFolderError

    bad = _recording_spans_key(nested_model[0], tmp_path / "model", 3)
    with pytest.raises(ModelFolderError, match="'spans_key' in padellm.json must be a non-empty string or null"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(bad)})


def test_flat_mode_on_nested_predictions_resolves_overlaps(nested_model, nested_zh_data):
    model, docbin, _ = nested_model
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(model)})
    gold = gold_docs(docbin, nlp.vocab)[: len(nested_zh_data["nested"])]
    removed = 0
    for ref in gold:
        doc = nlp(ref.text)
        ents = spans_of(doc)
        assert all(a[1] <= b[0] for a, b in zip(ents, ents[1:]))  # valid doc.ents: no overlap
        assert set(ents) <= set(spans_of(ref, "sc"))  # every entity is one of the nested gold spans
        removed += doc._.padellm["overlaps_removed"]
    # IL-2 / IL-2 gene, CD28 / CD28 promoter, Jurkat T cells / T cells, IL-2 / IL-2 receptor
    assert removed >= 4


def test_span_gold_under_two_labels_dedup_keeps_one(nested_model, nested_zh_data):
    """The one case where de-duplication removes a correct nested span: a span gold under two labels."""
    model, docbin, _ = nested_model
    ref = gold_docs(docbin, spacy.blank("en").vocab)[-1]
    assert ref.text == nested_zh_data["nested_dup"][0][0]
    for dedupe in (False, True):
        nlp = spacy.blank("en")
        nlp.add_pipe("padellm_ner", config={"model": str(model), "spans_key": "sc", "deduplicate": dedupe})
        doc = nlp(ref.text)
        got, want = spans_of(doc, "sc"), spans_of(ref, "sc")
        if not dedupe:
            assert got == want
        else:
            assert doc._.padellm["duplicates_removed"] == 1
            assert set(got) < set(want) and len(want) - len(got) == 1
            assert [s for s in got if s[:2] == (0, 5)] and len([s for s in got if s[:2] == (0, 5)]) == 1


def test_write_spans_nested_and_flat_without_model():
    nlp = spacy.blank("en")
    text = "Jurkat T cells express IL-2 receptor ."
    spans = [AlignedSpan(0, 14, "cell_line", 0.9, "Jurkat T cells", 1), AlignedSpan(7, 14, "cell_type", 0.95, "T cells", 1),
             AlignedSpan(23, 27, "protein", 0.8, "IL-2", 1), AlignedSpan(23, 36, "protein", 0.7, "IL-2 receptor", 2),
             AlignedSpan(23, 27, "DNA", 0.6, "IL-2", 1)]
    nested, stats = nlp.make_doc(text), {}
    write_spans(nested, spans, "sc", True, stats)
    assert [(s.text, s.label_) for s in nested.spans["sc"]] == [
        ("Jurkat T cells", "cell_line"), ("T cells", "cell_type"), ("IL-2", "protein"), ("IL-2 receptor", "protein")]
    assert stats == {"duplicates_removed": 1}
    flat, stats = nlp.make_doc(text), {}
    write_spans(flat, spans, None, True, stats)
    # most probable first: T cells (0.95) beats Jurkat T cells; IL-2 (0.8) beats IL-2 receptor
    assert [(e.text, e.label_) for e in flat.ents] == [("T cells", "cell_type"), ("IL-2", "protein")]
    assert stats == {"duplicates_removed": 1, "overlaps_removed": 2}


# --------------------------------------------------------------------------------------------------
# Chinese: segmentation and the aligner on characters


def test_blank_zh_segments_characters():
    default = spacy.blank("zh")
    assert default.tokenizer.segmenter == "char"  # spaCy 3.8's default for zh, no download needed
    nlp = zh_nlp()
    assert nlp.config["nlp"]["tokenizer"]["segmenter"] == "char"
    text = "（新华社）张三在ABC公司，1.5亿。"
    words = [t.text for t in nlp(text)]
    assert words == list(text)  # every character is a token, full-width punctuation and ASCII included
    assert [t.text for t in default(text)] == words


def test_zh_aligner_kth_mention_to_kth_occurrence():
    text = "北京的朋友说：北京很好，北京很大。"
    preds = [("LOC", 2, "北京", 0.9), ("LOC", 1, "北京", 0.8), ("LOC", 3, "北京", 0.7)]
    spans, stats = align_mentions(text, preds, char_tokens(text))
    assert [(s.start, s.end, s.k) for s in spans] == [(0, 2, 1), (7, 9, 2), (12, 14, 3)]
    assert stats.aligned == 3
    # a fourth mention of the same label has no free occurrence left
    spans, stats = align_mentions(text, preds + [("LOC", 4, "北京", 0.5)], char_tokens(text))
    assert len(spans) == 3 and stats.no_free_occurrence == 1


def test_zh_aligner_repeated_string_in_a_longer_mention():
    # The first mention of a label sits at its first occurrence; other labels do not use it up.
    text = "上海人在上海工作。"
    spans, _ = align_mentions(text, [("LOC", 1, "上海", 0.9), ("PER", 1, "上海人", 0.8)], char_tokens(text))
    assert [(text[s.start:s.end], s.label) for s in spans] == [("上海", "LOC"), ("上海人", "PER")]
    assert [(s.start, s.end) for s in spans] == [(0, 2), (0, 3)]
    spans, _ = align_mentions(text, [("LOC", 1, "上海", 0.9), ("LOC", 2, "上海", 0.9)], char_tokens(text))
    assert [(s.start, s.end) for s in spans] == [(0, 2), (4, 6)]


def test_zh_aligner_full_width_punctuation_and_mixed_ascii():
    text = "（新华社）张三在ABC公司工作，《花千骨》：ABC公司在上海。"
    preds = [("ORG", 1, "新华社", 0.9), ("ORG", 2, "abc公司", 0.9), ("ORG", 3, "ABC 公司", 0.9),
             ("MISC", 1, "《花千骨》", 0.9), ("TV", 1, "花千骨", 0.9), ("PER", 1, "李四", 0.9), ("LOC", 1, "上海。", 0.9)]
    spans, stats = align_mentions(text, preds, char_tokens(text))
    got = [(text[s.start:s.end], s.label, s.start) for s in spans]
    assert ("新华社", "ORG", 1) in got  # inside full-width parentheses, which stay outside the span
    assert ("ABC公司", "ORG", 8) in got and ("ABC公司", "ORG", 22) in got  # case and space tolerant, k-th occurrence
    assert ("《花千骨》", "MISC", 16) in got and ("花千骨", "TV", 17) in got
    assert ("上海。", "LOC", 28) in got  # a mention may hold full-width punctuation
    assert stats.not_found == 1  # 李四


def test_zh_convert_and_written_spans_line_up(nested_zh_data, tmp_path):
    path = tmp_path / "zh.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in nested_zh_data["zh"]), encoding="utf-8")
    result = read_docs(path, zh_nlp())
    assert result.offsets == "char-inclusive" and result.n_skipped == 0
    for doc, record in zip(result.docs, nested_zh_data["zh"]):
        assert [t.text for t in doc] == list(record[0])
        assert [(s.start_char, s.end_char, s.label_) for s in doc_spans(doc)] == sorted(
            (s, e + 1, label) for s, e, _, label in record[1:])
        # the protocol's mentions, aligned back on characters, land on the gold spans
        ks, preds = {}, []
        for span in doc_spans(doc):
            ks[span.label_] = ks.get(span.label_, 0) + 1
            preds.append((span.label_, ks[span.label_], span.text, 1.0))
        aligned, _ = align_mentions(doc.text, preds, [(t.idx, t.idx + len(t)) for t in doc])
        assert [(s.start, s.end, s.label) for s in aligned] == [(s.start_char, s.end_char, s.label_) for s in doc_spans(doc)]
        out, stats = zh_nlp().make_doc(doc.text), {}
        write_spans(out, aligned, None, True, stats)
        assert spans_of(out) == spans_of(doc)


# --------------------------------------------------------------------------------------------------
# Chinese: a tiny model through convert --lang zh, the zh template and padellm_ner


def test_zh_tiny_model_end_to_end(zh_model, nested_zh_data, tmp_path):
    model, docbin, report = zh_model
    assert report.offsets == "char-inclusive" and report.labels == nested_zh_data["zh_labels"]
    meta = json.loads((model / "padellm.json").read_text(encoding="utf-8"))
    assert meta["template"] == TEMPLATES["zh"].to_dict() and meta["lang"] == "zh"
    nlp = zh_nlp()
    ner = nlp.add_pipe("padellm_ner", config={"model": str(model)})
    assert ner.template == TEMPLATES["zh"]
    gold = gold_docs(docbin, nlp.vocab)
    preds = list(nlp.pipe(d.text for d in gold))
    for pred, ref in zip(preds, gold):
        assert spans_of(pred) == spans_of(ref), pred.text
    assert nlp.evaluate([Example(nlp.make_doc(g.text), g) for g in gold])["ents_f"] == 1.0
    # saved and loaded: still character segmentation, same output
    nlp.to_disk(tmp_path / "zh_pipeline")
    again = spacy.load(tmp_path / "zh_pipeline")
    assert again.tokenizer.segmenter == "char"
    assert [spans_of(d) for d in again.pipe(g.text for g in gold)] == [spans_of(g) for g in gold]


def test_trainer_selects_nested_models_on_the_span_group(train_tiny, tiny_base, tmp_path):
    """[data] spans_key: the dev decoding writes the span group and selection uses spans_<key>_f."""
    import pytest
    import tiny

    from spacy_padellm.training import TrainConfigError

    dev = tiny.write_docbin(tmp_path / "dev.spacy", tiny.NESTED, tiny.NESTED_LABELS, spans_key="sc")
    model, summary = train_tiny(tmp_path / "run", tiny_base, tiny.NESTED, tiny.NESTED_LABELS, steps=40,
                                extra={"dev": str(dev), "spans_key": "sc", "eval_every": 20})
    history = json.loads((model.parent / "history.json").read_text())
    evals = [h for h in history if "dev_f" in h]
    assert [h["step"] for h in evals] == [20, 40]
    assert all(h["dev_metric"] == "spans_sc_f" and "dev_ents_f" not in h for h in evals)
    assert summary["best"]["score"] == max(h["dev_f"] for h in evals)
    assert "spans_sc_f" in summary["best"]["scores"]
    meta = json.loads((model / "padellm.json").read_text())
    assert "spans_sc_f" in meta["dev_scores"]
    assert meta["spans_key"] == "sc"  # the component writes that group by default
    flat_dev = tiny.write_docbin(tmp_path / "flat.spacy", [("It rained all day .", [])], tiny.NESTED_LABELS)
    with pytest.raises(TrainConfigError, match="span group"):
        train_tiny(tmp_path / "bad", tiny_base, tiny.NESTED, tiny.NESTED_LABELS, steps=1,
                   extra={"dev": str(flat_dev), "spans_key": "sc"})


def test_normalize_fast_path_equals_char_by_char():
    """normalize's C-speed path (single spaces only) gives what the char-by-char loop gives, on random text
    with whitespace runs, tabs, newlines, full-width punctuation, capital sigma and a two-char lower case."""
    import random

    from spacy_padellm.text.align import normalize

    def loop(text, drop):
        chars, index, in_space = [], [], False
        for i, ch in enumerate(text):
            if ch.isspace():
                if not drop and not in_space and chars:
                    chars.append(" ")
                    index.append(i)
                in_space = True
                continue
            in_space = False
            chars.append(ch.lower())
            index.extend([i] * len(ch.lower()))
        if chars and chars[-1] == " ":
            chars.pop()
            index.pop()
        return "".join(chars), index

    rng = random.Random(0)
    alphabet = "ab AB\tΣσİ日本，\n  Ü1."
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for drop in (False, True):
            assert normalize(text, drop) == loop(text, drop), (text, drop)
    assert normalize("Hello World") == ("hello world", list(range(11)))
