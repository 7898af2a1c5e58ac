"""padellm_ner end to end on a tiny model memorised by a test fixture: what a spaCy user does.

Tests of exact entities use ``tiny_model`` (trained); tests of wiring (configuration, errors, serialisation,
counters, score keys) use ``tiny_untrained``, so a training regression does not fail them."""

import json
import shutil
import subprocess
import sys

import pytest
import spacy
from spacy.training import Example

import tiny
from tiny import ents, gold, pipeline
from spacy_padellm.decoding.plain import plain_decode
from spacy_padellm.decoding.types import DocRequest
from spacy_padellm.loading import ModelFolderError
from spacy_padellm.text.protocol import TemplateError


@pytest.fixture(scope="module")
def nlp(tiny_model):
    return pipeline(tiny_model)


def test_entry_point_factory_without_import():
    code = "import spacy; nlp = spacy.blank('en'); print(nlp.add_pipe('padellm_ner', config={'labels': ['PER']}).labels)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "('PER',)" in out.stdout


def test_labels_come_from_model_folder(wiring_nlp):
    assert wiring_nlp.get_pipe("padellm_ner").labels == tuple(tiny.LABELS)


STAT_KEYS = {"docs", "windows", "unparsable_counts", "capped_counts", "truncated_mentions", "not_found",
             "no_free_occurrence", "misaligned", "duplicates_removed", "overlaps_removed", "failed", "replaced"}


def test_pipe_returns_every_doc_in_order_with_counters(wiring_nlp):
    ner = wiring_nlp.get_pipe("padellm_ner")
    texts = [t for t, _ in tiny.SENTENCES] + ["", "  ", "Bonn ."]
    for batch_size in (1, 4, 64):
        before = ner.stats["docs"]
        docs = list(wiring_nlp.pipe(texts, batch_size=batch_size))
        assert [d.text for d in docs] == texts
        assert ner.stats["docs"] == before + len(texts)
        for doc in docs:
            assert set(doc._.padellm) == STAT_KEYS
            assert doc._.padellm["docs"] == 1
            assert doc._.padellm["windows"] == (1 if doc.text.strip() else 0)
            assert all(isinstance(v, int) and v >= 0 for v in doc._.padellm.values())
            assert all(e.label_ in tiny.LABELS and 0.0 < e._.padellm_prob <= 1.0 for e in doc.ents)


def test_score_keys(wiring_nlp, tiny_untrained):
    scores = wiring_nlp.evaluate(tiny.gold_examples(wiring_nlp, tiny.SENTENCES))
    assert {"ents_p", "ents_r", "ents_f", "ents_per_type"} <= set(scores)
    assert all(0.0 <= scores[k] <= 1.0 for k in ("ents_p", "ents_r", "ents_f"))
    assert set(scores["ents_per_type"]) == set(tiny.LABELS)  # every gold label is missed or found
    nested = spacy.blank("en")
    ner = nested.add_pipe("padellm_ner", config={"model": str(tiny_untrained), "spans_key": "sc"})
    examples = tiny.gold_examples(nested, tiny.NESTED, "sc")
    for eg in examples:
        eg.predicted.spans["sc"] = [eg.predicted.char_span(s.start_char, s.end_char, label=s.label_)
                                    for s in eg.reference.spans["sc"]]
    scores = ner.score(examples)
    assert set(scores) == {"spans_sc_p", "spans_sc_r", "spans_sc_f", "spans_sc_per_type"}
    assert scores["spans_sc_f"] == 1.0


def test_config_survives_save_and_load(tiny_untrained, tmp_path):
    config = {"model": str(tiny_untrained), "labels": ["PER", "LOC"], "spans_key": "sc", "max_count": 7,
              "max_mention_tokens": 3, "deduplicate": False, "text_format": "tokens", "engine": "dynamic"}
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config=config)
    nlp.to_disk(tmp_path / "pipeline")
    meta = json.loads((tmp_path / "pipeline" / "padellm_ner" / "model" / "padellm.json").read_text())
    assert meta["labels"] == ["PER", "LOC"] and meta["text_format"] == "tokens"
    # The saved pipeline must not depend on the original model folder.
    shutil.copytree(tmp_path / "pipeline", tmp_path / "moved")
    shutil.rmtree(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "moved")
    saved = loaded.config["components"]["padellm_ner"]
    assert {k: saved[k] for k in config if k != "model"} == {k: v for k, v in config.items() if k != "model"}
    ner = loaded.get_pipe("padellm_ner")
    assert ner.labels == ("PER", "LOC") and ner.spans_key == "sc" and ner.text_format == "tokens"
    assert {k: ner.cfg[k] for k in ("max_count", "max_mention_tokens", "deduplicate", "engine")} == {
        "max_count": 7, "max_mention_tokens": 3, "deduplicate": False, "engine": "dynamic"}
    assert (ner.decoder.max_count, ner.decoder.max_mention_tokens) == (7, 3)
    doc = loaded("Bonn and Japan .")
    assert "sc" in doc.spans and doc.ents == () and doc._.padellm["docs"] == 1


def test_call_returns_exact_entities(nlp):
    for (text, _), expected in zip(tiny.SENTENCES, gold(tiny.SENTENCES)):
        assert ents(nlp(text)) == expected


def test_pipe_equals_call(nlp):
    texts = [t for t, _ in tiny.SENTENCES]
    for batch_size in (1, 4, 64):
        docs = list(nlp.pipe(texts, batch_size=batch_size))
        assert [ents(d) for d in docs] == gold(tiny.SENTENCES)


def test_repeated_string_gets_distinct_spans(nlp):
    text = "Nadim Ladki reported from Jordan and Jordan again ."
    doc = nlp(text)
    jordans = [(e.start_char, e.end_char) for e in doc.ents if e.text == "Jordan"]
    assert len(jordans) == 2 and jordans[0] != jordans[1]


def test_probabilities_and_stats(nlp):
    doc = nlp(tiny.SENTENCES[0][0])
    assert all(0.0 < e._.padellm_prob <= 1.0 for e in doc.ents)
    assert doc._.padellm["windows"] == 1 and doc._.padellm["not_found"] == 0


def test_empty_and_whitespace_docs(nlp):
    docs = list(nlp.pipe(["", "   ", "\n\t", tiny.SENTENCES[0][0]]))
    assert len(docs) == 4
    assert [len(d.ents) for d in docs[:3]] == [0, 0, 0]
    assert ents(docs[3]) == gold(tiny.SENTENCES)[0]


def test_long_doc_is_windowed_and_mapped_back(nlp):
    text = " ".join(t for t, _ in tiny.SENTENCES)
    doc = nlp(text)
    assert doc._.padellm["windows"] == len(tiny.SENTENCES)  # one sentence a window
    expected = [pair for sent in gold(tiny.SENTENCES) for pair in sent]
    assert ents(doc) == expected
    for ent in doc.ents:
        assert text[ent.start_char:ent.end_char] == ent.text


def test_save_and_load_roundtrip(nlp, tmp_path):
    nlp.to_disk(tmp_path / "pipeline")
    assert (tmp_path / "pipeline" / "padellm_ner" / "model" / "padellm.json").exists()
    # The saved pipeline must not depend on the original model folder.
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "pipeline", moved)
    shutil.rmtree(tmp_path / "pipeline")
    loaded = spacy.load(moved)
    assert [ents(d) for d in loaded.pipe([t for t, _ in tiny.SENTENCES])] == gold(tiny.SENTENCES)


def test_nlp_evaluate_f1_is_one(nlp):
    scores = nlp.evaluate(tiny.gold_examples(nlp, tiny.SENTENCES))
    assert scores["ents_f"] == 1.0
    assert set(scores["ents_per_type"]) == {"PER", "LOC", "ORG", "MISC"}


def test_spacy_evaluate_cli(nlp, tmp_path):
    nlp.to_disk(tmp_path / "pipeline")
    tiny.write_docbin(tmp_path / "test.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "metrics.json"
    subprocess.run([sys.executable, "-m", "spacy", "evaluate", str(tmp_path / "pipeline"), str(tmp_path / "test.spacy"),
                    "--output", str(out)], check=True, capture_output=True)
    metrics = json.loads(out.read_text())
    assert metrics["ents_f"] == 1.0


def test_nested_spans_go_to_span_group(tiny_nested_model):
    nlp = pipeline(tiny_nested_model, spans_key="sc")
    for text, mentions in tiny.NESTED:
        doc = nlp(text)
        got = sorted((s.start_char, s.end_char, s.label_) for s in doc.spans["sc"])
        assert got == sorted(tiny.char_spans(text, mentions))
        assert len(doc.spans["sc"].attrs["scores"]) == len(doc.spans["sc"])
    assert nlp.evaluate(tiny.gold_examples(nlp, tiny.NESTED, "sc"))["spans_sc_f"] == 1.0


def test_flat_mode_on_nested_model_resolves_overlaps(tiny_nested_model):
    nlp = pipeline(tiny_nested_model)
    doc = nlp(tiny.NESTED[0][0])
    spans = [(e.start_char, e.end_char) for e in doc.ents]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert doc._.padellm["overlaps_removed"] >= 1


def test_engine_matches_plain_greedy_decoding(nlp):
    ner = nlp.get_pipe("padellm_ner")
    decoder = ner.decoder
    requests = [DocRequest(t, list(tiny.LABELS)) for t, _ in tiny.SENTENCES] + [DocRequest("Bonn and Japan .", ["LOC", "PER"])]
    fast = decoder.decode(requests)
    plain = plain_decode(decoder.model, decoder.encoder, requests)
    for a, b in zip(fast, plain):
        assert a.counts == b.counts
        assert [(p.label, p.k, p.text) for p in a.predictions] == [(p.label, p.k, p.text) for p in b.predictions]
        for p, q in zip(a.predictions, b.predictions):
            assert p.prob == pytest.approx(q.prob, rel=1e-3)


def test_engine_small_row_budget_same_result(tiny_model):
    nlp = pipeline(tiny_model, max_batch_rows=3)
    assert [ents(d) for d in nlp.pipe([t for t, _ in tiny.SENTENCES])] == gold(tiny.SENTENCES)


def test_untrained_model_output_is_handled(tiny_base):
    """Garbage model output (counts that are not numbers, unfindable mentions) never crashes."""
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_base), "labels": ["PER", "LOC"], "max_mention_tokens": 5})
    docs = list(nlp.pipe([t for t, _ in tiny.SENTENCES]))
    assert len(docs) == len(tiny.SENTENCES)
    total = sum(d._.padellm["unparsable_counts"] for d in docs)
    assert total > 0


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(tmp_path / "nope"), "labels": ["PER"]})


def test_incomplete_model_folder_fails_at_construction(tmp_path, tiny_untrained):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_untrained, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="safetensors"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(broken)})
    (broken / "padellm.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(broken)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFolderError, match="not a model folder"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(empty)})


def test_pickled_weights_are_refused(tmp_path, tiny_base):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_base, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="pickled"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(folder)})


def test_empty_labels_is_a_clear_error(tiny_base):
    nlp = pipeline(tiny_base)
    with pytest.raises(ValueError, match="no labels"):
        nlp.initialize()


def test_initialize_takes_labels_from_examples(tiny_base):
    nlp = pipeline(tiny_base)
    doc = nlp.make_doc("Japan beat Syria")
    doc.ents = [doc.char_span(0, 5, label="LOC")]
    nlp.initialize(lambda: [Example(nlp.make_doc(doc.text), doc)])
    assert nlp.get_pipe("padellm_ner").labels == ("LOC",)


def test_invalid_template_fails_at_construction():
    with pytest.raises(TemplateError, match="lacks the slot"):
        spacy.blank("en").add_pipe("padellm_ner", config={"labels": ["PER"], "template": {
            "prefix": "{txt}", "label": "{label}", "count": "{n}\n", "mention": "<{k}>"}})
    with pytest.raises(ValueError, match="positive integer"):
        spacy.blank("en").add_pipe("padellm_ner", config={"labels": ["PER"], "max_count": 0})
