"""The paper's autoregressive baselines (AutoRegStruct, AutoRegAug) and the reference-style PaDeLLM decoding:
formats, parsers on garbage, the greedy engine, training with [data] protocol, and padellm_ner decoding modes."""

import json
import random
import re

import pytest
import spacy
from spacy.training import Example

import tiny
from spacy_padellm.baselines.decoder import AutoRegEncoder, hf_greedy_generate
from spacy_padellm.baselines.parse import parse_aug, parse_struct
from spacy_padellm.baselines.targets import Sentence, aug_target, group_records, locate_mentions, struct_target
from spacy_padellm.baselines.templates import AUTOREG_TEMPLATES
from spacy_padellm.decoding.plain import plain_decode
from spacy_padellm.decoding.types import DocRequest
from spacy_padellm.text.protocol import TrainingExample, build_examples
from spacy_padellm.training import TrainConfigError, TrainSettings, load_settings, train
from spacy_padellm.training.data import read_sentences

LABELS = tiny.LABELS
# One model per protocol learns the flat and the nested sentences (a label set of six).
ALL_LABELS = tiny.LABELS + tiny.NESTED_LABELS


def gold(data):
    return [[(text[s:e], label) for s, e, label in tiny.char_spans(text, mentions)] for text, mentions in data]


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def spans_of(data):
    return [tiny.char_spans(text, mentions) for text, mentions in data]


# --- Formats and parsers (no model) -----------------------------------------------------------------


def test_struct_target_format_and_roundtrip():
    text, mentions = tiny.SENTENCES[0]
    target = struct_target([(label, m) for m, label in mentions], LABELS)
    assert target == "LOC: Japan; Syria\nMISC: Asian Cup"
    assert struct_target([], LABELS) == ""
    for template in AUTOREG_TEMPLATES.values():
        for text, mentions in tiny.SENTENCES:
            pairs = [(label, m) for m, label in mentions]
            out = struct_target(pairs, LABELS, template)
            parsed = parse_struct(out, LABELS, template)
            expected = [(label, m) for label in LABELS for lab, m in pairs if lab == label]
            assert [(lab, m) for lab, m, _, _ in parsed.mentions] == expected
            assert parsed.unparsable == parsed.unknown_labels == 0
    zh = AUTOREG_TEMPLATES["zh"]
    assert struct_target([("LOC", "日本"), ("LOC", "叙利亚")], ["LOC"], zh) == "LOC：日本；叙利亚"
    assert zh.struct_prompt.format(text="x") == "文本：\nx\n实体：\n"


def test_aug_target_format_and_exact_offsets():
    text, mentions = tiny.SENTENCES[0]
    out, dropped = aug_target(text, tiny.char_spans(text, mentions))
    assert out == "[ Japan | LOC ] beat [ Syria | LOC ] in the [ Asian Cup | MISC ] ." and dropped == 0
    for (text, mentions), spans in zip(tiny.SENTENCES + tiny.NESTED, spans_of(tiny.SENTENCES + tiny.NESTED)):
        out, dropped = aug_target(text, spans)
        parsed = parse_aug(out, text, ALL_LABELS)
        assert not parsed.text_mismatch and dropped == 0
        assert sorted((s, e, label) for label, _, s, e in parsed.mentions) == sorted(spans)
    nested_text = tiny.NESTED[0][0]
    out, _ = aug_target(nested_text, spans_of(tiny.NESTED)[0])
    assert out.startswith("[ [ IL-2 | protein ] gene | DNA ] expression")


def test_aug_brackets_in_text_need_no_escaping():
    text = "He said [ 1 ] in ( Bonn ) | ok , the [ Bonn ] office ."
    first = text.index("Bonn")
    second = text.index("Bonn", first + 1)
    out, _ = aug_target(text, [(second, second + 4, "LOC"), (first, first + 4, "LOC")])
    parsed = parse_aug(out, text, LABELS)
    assert not parsed.text_mismatch and parsed.unparsable == 0
    assert [(s, e) for _, _, s, e in parsed.mentions] == [(first, first + 4), (second, second + 4)]


def test_aug_crossing_spans_are_dropped_from_targets():
    text = "New York City Hall"
    out, dropped = aug_target(text, [(0, 13, "LOC"), (4, 18, "ORG")])
    assert dropped == 1 and out == "[ New York City | LOC ] Hall"


def test_aug_parser_unknown_labels_mismatch_and_truncation():
    text = "Japan beat Syria in the Asian Cup ."
    parsed = parse_aug("[ Japan | FOO ] beat [ Syria | LOC ] in the Asian Cup .", text, LABELS)
    assert parsed.unknown_labels == 1 and not parsed.text_mismatch
    assert parsed.mentions == [("LOC", "Syria", 11, 16)]
    # The model changed the text: strings without offsets, for the aligner.
    parsed = parse_aug("[ Japan | LOC ] beats [ Syria | LOC ] .", text, LABELS)
    assert parsed.text_mismatch and parsed.mentions == [("LOC", "Japan", None, None), ("LOC", "Syria", None, None)]
    # Cut by the token budget: a prefix of the text keeps exact offsets; a cut mention is dropped.
    full, _ = aug_target(text, tiny.char_spans(text, tiny.SENTENCES[0][1]))
    for cut in range(len(full)):
        parsed = parse_aug(full[:cut], text, LABELS, truncated=True)
        assert not parsed.text_mismatch
        for label, mention, s, e in parsed.mentions:
            assert text[s:e] == mention
    assert len(parse_aug(full[: full.index("beat")], text, LABELS, truncated=True).mentions) == 1
    # An opener the model never closed.
    parsed = parse_aug("[ Japan beat [ Syria | LOC ] in the Asian Cup .", text, LABELS)
    assert parsed.mentions == [("LOC", "Syria", 11, 16)] and parsed.unparsable == 1


def test_struct_parser_garbage_is_counted():
    out = "LOC: Japan; Syria\nFOO: x\nno separator here\n\nPER : Peter Blackburn\nMISC:\nLOC：Amman"
    parsed = parse_struct(out, LABELS)
    assert [(label, m) for label, m, _, _ in parsed.mentions] == [
        ("LOC", "Japan"), ("LOC", "Syria"), ("PER", "Peter Blackburn"), ("LOC", "Amman")]
    assert parsed.unknown_labels == 1 and parsed.unparsable == 1
    # A label that holds a colon itself is read whole.
    parsed = parse_struct("B:X: a; b\nPERSON: c", ["B:X", "PER"])
    assert [(label, m) for label, m, _, _ in parsed.mentions] == [("B:X", "a"), ("B:X", "b")]
    assert parsed.unknown_labels == 1
    # Truncated: the last (possibly cut) line is dropped.
    parsed = parse_struct("LOC: Japan\nMISC: Asi", LABELS, truncated=True)
    assert [(label, m) for label, m, _, _ in parsed.mentions] == [("LOC", "Japan")]


def struct_garbage_counts(output, truncated):
    """(unparsable, unknown_labels) that parse_struct must report, by its rules: of the non-blank lines
    (the last one dropped when truncated), one without a label separator is unparsable, one with a
    separator that does not follow a label of LABELS is an unknown label."""
    lines = [line for line in output.split("\n")[: -1 if truncated else None] if line.strip()]
    no_sep = [line for line in lines if not re.search("[:：]", line)]
    known = [line for line in lines
             if any(re.match(rf"\s*{re.escape(label)}\s*[:：]", line) for label in LABELS)]
    return len(no_sep), len(lines) - len(no_sep) - len(known)


def test_parsers_never_crash_on_garbage():
    rng = random.Random(0)
    pieces = list("[]|:;：；\n LOCPERab ") + ["[ ", " | LOC ]", " | FOO ]", " | ", "LOC: ", "; ", "\x00", "é"]
    without_closers = 0
    for _ in range(3000):
        out = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20)))
        truncated = rng.random() < 0.5
        struct, aug = parse_struct(out, LABELS, truncated=truncated), parse_aug(out, text, LABELS, truncated)
        assert (struct.unparsable, struct.unknown_labels) == struct_garbage_counts(out, truncated), out
        if "|" not in out and not truncated:
            # No closer: every opener is unmatched, literal text if that gives the input, else unparsable.
            without_closers += 1
            assert aug.mentions == [] and aug.unknown_labels == 0
            assert aug.unparsable == (0 if out == text else out.count("[ ")), (out, text)
            assert aug.text_mismatch == (text not in (out, out.replace("[ ", ""))), (out, text)
            # The same output against the texts it can be read as: its openers are the input's brackets
            # (nothing unparsable), or markup of mentions the model never closed (each one unparsable).
            as_is, unclosed = parse_aug(out, out, LABELS), parse_aug(out, out.replace("[ ", ""), LABELS)
            assert (as_is.unparsable, as_is.text_mismatch, as_is.mentions) == (0, False, []), out
            assert (unclosed.unparsable, unclosed.text_mismatch) == (out.count("[ "), False), out
        for parsed in (struct, aug):
            for label, mention, s, e in parsed.mentions:
                assert label in LABELS and mention == mention.strip() and mention
                if s is not None:
                    assert text[s:e] == mention
    assert without_closers > 100  # the case above was checked often enough
    assert parse_struct(None, LABELS).unparsable == 1
    assert parse_aug(None, "x", LABELS).unparsable == 1


def test_records_grouped_into_sentences_in_file_order(tmp_path):
    data = tiny.SENTENCES + [tiny.SENTENCES[4], tiny.SENTENCES[5], tiny.SENTENCES[4]]  # repeated texts stay apart
    path = tiny.write_examples(tmp_path / "x.padellm.jsonl", data, LABELS)
    sentences = read_sentences(str(path))
    assert [s.text for s in sentences] == [t for t, _ in data]
    for sentence, (text, mentions) in zip(sentences, data):
        by_label = [(label, m) for label in LABELS for m, lab in mentions if lab == label]
        assert sentence.mentions == by_label
        spans, missing = locate_mentions(sentence.text, sentence.mentions)
        assert missing == 0 and sorted(spans) == sorted(tiny.char_spans(text, mentions))
    # Interleaved records of two texts are grouped by text.
    records = [TrainingExample(**ex.to_dict()) for text, m in tiny.SENTENCES[:2]
               for ex in build_examples(text, [(lab, x) for x, lab in m], LABELS)]
    mixed = records[::2] + records[1::2]
    assert [len(s.mentions) for s in group_records(mixed)] == [3, 3]


def test_locate_prefers_free_word_occurrences():
    text = "Jordanian Jordan met Jordan"
    spans, missing = locate_mentions(text, [("PER", "Jordan"), ("LOC", "Jordan")])
    assert missing == 0 and spans == [(10, 16, "PER"), (21, 27, "LOC")]
    assert locate_mentions(text, [("PER", "Amman")]) == ([], 1)


def test_training_ids_keep_the_piece_discipline(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_base))
    text, mentions = tiny.SENTENCES[0]
    sentence = Sentence(text, [(label, m) for m, label in mentions])
    for protocol in ("autoreg_struct", "autoreg_aug"):
        enc = AutoRegEncoder(tok, protocol)
        prompt, target = enc.example(sentence, LABELS)
        assert target[-1] == tok.eos_token_id and prompt == enc.prompt(text)
        target_text = enc.target_text(sentence, LABELS)[0]
        assert prompt == tok(enc.template.struct_prompt.format(text=text) if protocol == "autoreg_struct"
                             else enc.template.aug_prompt.format(text=text), add_special_tokens=False)["input_ids"]
        assert target[:-1] == tok(target_text, add_special_tokens=False)["input_ids"]
    empty = AutoRegEncoder(tok, "autoreg_struct").example(Sentence("It rained .", []), LABELS)[1]
    assert empty == [tok.eos_token_id]


def test_protocol_setting_is_checked(tiny_base, tmp_path):
    from spacy_padellm.baselines import templates
    from spacy_padellm.training import settings as training

    assert training.PROTOCOLS == templates.PROTOCOLS
    assert load_settings(None, {"data.protocol": "autoreg_aug"}).protocol == "autoreg_aug"
    with pytest.raises(TrainConfigError, match="did you mean 'protocol'"):
        load_settings(None, {"data.protocl": "autoreg_aug"})
    path = tiny.write_examples(tmp_path / "t.padellm.jsonl", tiny.SENTENCES, LABELS)
    with pytest.raises(TrainConfigError, match="did you mean 'autoreg_aug'"):
        train(TrainSettings(base_model=str(tiny_base), train=str(path), protocol="autoreg-aug", device="cpu"),
              progress=False, log=lambda *_: None)


# --- The greedy engine and the reference-style decoder -----------------------------------------------


def _load(folder):
    from spacy_padellm.loading import load_model, resolve_model

    return load_model(resolve_model(str(folder)))


def test_hf_greedy_generate_batched_equals_alone(tiny_base, struct_model):
    import torch

    for folder, budget in ((tiny_base, 7), (struct_model[0], 30)):
        model, tok = _load(folder)
        enc = AutoRegEncoder(tok, "autoreg_struct")
        prompts = [enc.prompt(t) for t, _ in tiny.SENTENCES + tiny.NESTED] + [[tok.eos_token_id]]
        alone = [hf_greedy_generate(model, [p], eos_id=tok.eos_token_id, max_new_tokens=budget)[0] for p in prompts]
        for rows in (64, 3):
            batched = hf_greedy_generate(model, prompts, eos_id=tok.eos_token_id, max_new_tokens=budget,
                                         max_batch_rows=rows)
            assert [b[0] for b in batched] == [a[0] for a in alone]
            assert [b[2] for b in batched] == [a[2] for a in alone]
            assert [b[1] for b in batched] == pytest.approx([a[1] for a in alone], rel=1e-4, abs=1e-4)
        # Against plain no-cache greedy decoding of one prompt.
        ids = list(prompts[0])
        out = []
        with torch.no_grad():
            for _ in range(budget):
                tok_id = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
                if tok_id == tok.eos_token_id:
                    break
                out.append(tok_id)
        assert alone[0][0] == out
    assert any(a[2] for a in alone) and any(len(a[0]) for a in alone)  # the trained model reaches EOS


def _same(results_a, results_b):
    for a, b in zip(results_a, results_b):
        assert a.counts == b.counts
        assert (a.unparsable_counts, a.capped_counts, a.truncated_mentions) == (
            b.unparsable_counts, b.capped_counts, b.truncated_mentions)
        assert [(p.label, p.k, p.text, p.count) for p in a.predictions] == [
            (p.label, p.k, p.text, p.count) for p in b.predictions]
        for p, q in zip(a.predictions, b.predictions):
            assert p.prob == pytest.approx(q.prob, rel=1e-3)
            assert p.count_prob == pytest.approx(q.count_prob, rel=1e-3)


def test_reference_generate_decoder_equals_reference_decode(tiny_model, tiny_base):
    from spacy_padellm.text.protocol import PromptEncoder
    from spacy_padellm.decoding.reference import ReferenceDecoder

    requests = [DocRequest(t, list(LABELS)) for t, _ in tiny.SENTENCES]
    requests.append(DocRequest("Bonn and Japan .", ["LOC", "PER"]))
    model, tok = _load(tiny_model)
    enc = PromptEncoder(tok)
    expected = plain_decode(model, enc, requests)
    assert sum(len(r.predictions) for r in expected) >= 14  # the memorised sentences have 14 mentions
    for rows in (256, 2):
        _same(ReferenceDecoder(model, enc, max_batch_rows=rows).decode(requests), expected)
    # An untrained model: unparsable counts and truncated mentions come out the same way too.
    model, tok = _load(tiny_base)
    enc = PromptEncoder(tok)
    requests = [DocRequest(t, ["PER", "LOC"]) for t, _ in tiny.SENTENCES[:3]]
    kwargs = dict(max_count=3, max_count_tokens=3, max_mention_tokens=4)
    expected = plain_decode(model, enc, requests, **kwargs)
    assert sum(r.unparsable_counts for r in expected) > 0
    _same(ReferenceDecoder(model, enc, **kwargs).decode(requests), expected)


def test_reference_decoding_in_the_component(tiny_model):
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": str(tiny_model), "decoding": "reference"})
    assert [ents(d) for d in nlp.pipe([t for t, _ in tiny.SENTENCES], batch_size=4)] == gold(tiny.SENTENCES)
    assert type(ner.decoder).__name__ == "ReferenceDecoder" and ner.decoder.stats.forward_passes > 0


# --- Trained autoregressive models through padellm_ner -----------------------------------------------


def _train_protocol(protocol, tiny_base, tmp_path_factory, train_tiny, steps):
    """Full fine-tuning on the flat and nested sentences from the .padellm.jsonl records (grouped into
    sentences by the trainer), with the flat sentences as dev set (evaluated once, at the end)."""
    tmp = tmp_path_factory.mktemp(protocol)
    dev = tiny.write_docbin(tmp / "dev.spacy", tiny.SENTENCES, LABELS)
    return train_tiny(tmp, tiny_base, tiny.SENTENCES + tiny.NESTED, ALL_LABELS, steps=steps, lr=6e-3,
                      extra={"protocol": protocol, "dev": str(dev)})


@pytest.fixture(scope="module")
def struct_model(tiny_base, tmp_path_factory, train_tiny):
    return _train_protocol("autoreg_struct", tiny_base, tmp_path_factory, train_tiny, steps=100)


@pytest.fixture(scope="module")
def aug_model(tiny_base, tmp_path_factory, train_tiny):
    return _train_protocol("autoreg_aug", tiny_base, tmp_path_factory, train_tiny, steps=130)


@pytest.fixture(params=["autoreg_struct", "autoreg_aug"])
def trained(request, struct_model, aug_model):
    return request.param, (struct_model if request.param == "autoreg_struct" else aug_model)


def test_model_folder_records_protocol_and_dev_uses_it(trained):
    protocol, (folder, summary) = trained
    meta = json.loads((folder / "padellm.json").read_text())
    assert meta["protocol"] == protocol and meta["labels"] == ALL_LABELS
    assert meta["autoreg_template"] == AUTOREG_TEMPLATES["en"].to_dict()
    # The dev evaluation during training decoded with the protocol's own decoder.
    assert summary["best"]["scores"]["ents_f"] == 1.0


def test_pipe_returns_exact_entities(trained):
    protocol, (folder, _) = trained
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": str(folder)})  # decoding: the model's protocol
    assert ner.decoding == protocol
    texts = [t for t, _ in tiny.SENTENCES]
    docs = list(nlp.pipe(texts, batch_size=64))
    assert [ents(d) for d in docs] == gold(tiny.SENTENCES)
    stats = docs[0]._.padellm
    assert stats["windows"] == 1 and stats["truncated_outputs"] == 0 and stats["unparsable_outputs"] == 0
    assert stats["rewrite_mismatches"] == 0 and stats["not_found"] == 0
    assert all(0.0 < e._.padellm_prob <= 1.0 for d in docs for e in d.ents)
    # Explicit decoding equal to the model's protocol, one doc at a time, and empty docs.
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("padellm_ner", config={"model": str(folder), "decoding": protocol, "labels": LABELS})
    docs = list(nlp2.pipe(["", "  "] + texts, batch_size=1))
    assert [ents(d) for d in docs] == [[], []] + gold(tiny.SENTENCES)


def test_aug_offsets_are_exact_without_the_aligner(aug_model):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(aug_model[0])})
    ner = nlp.get_pipe("padellm_ner")
    text = tiny.SENTENCES[4][0]  # "Nadim Ladki reported from Jordan and Jordan again ."
    result = ner.decoder.decode([DocRequest(text, LABELS)])[0]
    located = [(p.label, p.start, p.end) for p in result.predictions]
    assert located == [(label, s, e) for s, e, label in tiny.char_spans(text, tiny.SENTENCES[4][1])]
    assert result.output.startswith("[ Nadim Ladki | PER ] reported")


def test_plugged_in_engine_and_exact_offsets_reach_the_doc(tiny_base):
    """Another engine plugs in through the generate callable; AutoRegAug offsets decide the span where the
    aligner (first free occurrence) would pick another one."""
    from spacy_padellm.loading import ModelSource

    model, tok = _load(tiny_base)
    outputs = {"Jordan met Jordan .": "Jordan met [ Jordan | LOC ] .",
               "Bonn and Bonn": "[ Bonn | LOC ] and Bonn changed"}  # the second: text changed, strings aligned
    calls = []

    def generate(prompts, *, max_new_tokens):
        calls.append((len(prompts), max_new_tokens))
        texts = [tok.decode(p).split("\n")[1] for p in prompts]
        return [(tok(outputs[t], add_special_tokens=False)["input_ids"], -0.5, True) for t in texts]

    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": None, "labels": ["LOC"], "decoding": "autoreg_aug"})
    ner.set_model(model, tok, ModelSource(location="<fake>", meta={"labels": ["LOC"], "protocol": "autoreg_aug"}),
                  generate=generate)
    docs = list(nlp.pipe(list(outputs)))
    assert [(e.start_char, e.end_char, e.label_) for e in docs[0].ents] == [(11, 17, "LOC")]
    assert [(e.start_char, e.end_char) for e in docs[1].ents] == [(0, 4)]
    assert docs[1]._.padellm["rewrite_mismatches"] == 1 and docs[0]._.padellm["rewrite_mismatches"] == 0
    assert docs[0].ents[0]._.padellm_prob == pytest.approx(0.6065, rel=1e-3)
    assert calls and calls[0][0] == 2 and calls[0][1] > 256  # aug budget: the text's tokens + max_new_tokens


def test_nlp_evaluate_f1_is_one(trained):
    _, (folder, _) = trained
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(folder), "labels": LABELS})
    scores = nlp.evaluate(tiny.gold_examples(nlp, tiny.SENTENCES))
    assert scores["ents_f"] == 1.0 and set(scores["ents_per_type"]) == set(LABELS)


def test_nested_spans_go_to_span_group(trained):
    _, (folder, _) = trained
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(folder), "spans_key": "sc", "labels": tiny.NESTED_LABELS})
    examples = []
    for (text, mentions), expected in zip(tiny.NESTED, spans_of(tiny.NESTED)):
        doc = nlp(text)
        assert sorted((s.start_char, s.end_char, s.label_) for s in doc.spans["sc"]) == sorted(expected)
        ref = nlp.make_doc(text)
        ref.spans["sc"] = [ref.char_span(s, e, label=l) for s, e, l in expected]
        examples.append(Example(nlp.make_doc(text), ref))
    assert nlp.evaluate(examples)["spans_sc_f"] == 1.0


def test_long_doc_is_windowed_and_mapped_back(trained):
    _, (folder, _) = trained
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(folder), "labels": LABELS})  # one sentence a window
    text = " ".join(t for t, _ in tiny.SENTENCES)
    doc = nlp(text)
    assert doc._.padellm["windows"] == len(tiny.SENTENCES)
    assert ents(doc) == [pair for sent in gold(tiny.SENTENCES) for pair in sent]


def test_save_and_load_keep_the_decoding(aug_model, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(aug_model[0]), "labels": LABELS})
    nlp.to_disk(tmp_path / "pipeline")
    meta = json.loads((tmp_path / "pipeline" / "padellm_ner" / "model" / "padellm.json").read_text())
    assert meta["protocol"] == "autoreg_aug" and "autoreg_template" in meta
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("padellm_ner").decoding == "autoreg_aug"
    assert [ents(d) for d in loaded.pipe([t for t, _ in tiny.SENTENCES])] == gold(tiny.SENTENCES)


def test_short_budget_truncates_without_crashing(trained):
    protocol, (folder, _) = trained
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(folder), "labels": LABELS, "max_new_tokens": 3})
    docs = list(nlp.pipe([t for t, _ in tiny.SENTENCES]))
    assert sum(d._.padellm["truncated_outputs"] for d in docs) > 0
    for doc, expected in zip(docs, gold(tiny.SENTENCES)):
        assert set(ents(doc)) <= set(expected)


def test_mismatched_decoding_is_a_clear_error(tiny_model, struct_model, aug_model, tiny_base):
    with pytest.raises(ValueError, match="decoding 'autoreg_struct' does not fit .*protocol 'padellm'"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(tiny_model), "decoding": "autoreg_struct"})
    with pytest.raises(ValueError, match="decoding 'reference' does not fit .*protocol 'autoreg_struct'"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(struct_model[0]), "decoding": "reference"})
    with pytest.raises(ValueError, match="decoding 'autoreg_struct' does not fit .*protocol 'autoreg_aug'"):
        spacy.blank("en").add_pipe("padellm_ner", config={"model": str(aug_model[0]), "decoding": "autoreg_struct"})
    with pytest.raises(ValueError, match="'decoding' must be null or one of"):
        spacy.blank("en").add_pipe("padellm_ner", config={"labels": ["PER"], "decoding": "autoreg"})
    with pytest.raises(ValueError, match="'max_new_tokens' must be a positive integer"):
        spacy.blank("en").add_pipe("padellm_ner", config={"labels": ["PER"], "max_new_tokens": 0})
    # A model folder without a recorded protocol (a plain HF folder) may be decoded either way.
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"model": str(tiny_base), "labels": ["PER"], "decoding": "autoreg_aug",
                                        "max_new_tokens": 4})
    doc = nlp(tiny.SENTENCES[0][0])
    assert doc._.padellm["windows"] == 1
