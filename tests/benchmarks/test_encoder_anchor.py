"""The encoder anchor of the speed benchmarks: a RoBERTa-shaped token classifier, tiny here, timed on texts."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

import encoder_anchor  # noqa: E402
from encoder_anchor import EncoderAnchor, time_anchor  # noqa: E402

TINY_SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 130, "type_vocab_size": 1}
TEXTS = [text for text, _ in tiny.SENTENCES]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer(None, TEXTS)


def test_tags_every_token_in_input_order_whatever_the_batch(tokenizer):
    anchor = EncoderAnchor(tokenizer, shape=TINY_SHAPE)
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    one = anchor.tag(TEXTS, 1)
    assert [len(tags) for tags in one] == lengths and len(set(lengths)) > 1
    assert all(0 <= tag < encoder_anchor.CONLL_TAGS for tags in one for tag in tags)
    assert anchor.tag(TEXTS, 4) == one  # sorted by length and padded per batch: the same tags
    assert anchor.tag(list(reversed(TEXTS)), 3) == list(reversed(one))
    assert anchor.tag(["", TEXTS[0]], 2) == [[], one[0]]


def test_long_texts_are_cut_to_the_positions_the_model_has(tokenizer):
    anchor = EncoderAnchor(tokenizer, shape=TINY_SHAPE)
    (tags,) = anchor.tag([" ".join(TEXTS * 20)], 1)
    assert len(tags) == TINY_SHAPE["max_position_embeddings"] - 2


def test_timing_report(tokenizer):
    anchor = EncoderAnchor(tokenizer, shape=TINY_SHAPE)
    r = time_anchor(anchor, TEXTS, [1, 4], latency_docs=3)
    assert set(r["batch_sizes"]) == {"1", "4"} and r["docs"] == len(TEXTS) and r["dtype"] == "float32"
    assert r["best"]["sentences_per_second"] == max(row["sentences_per_second"] for row in r["batch_sizes"].values())
    assert r["latency_ms"]["docs"] == 3 and r["latency_ms"]["median"] > 0
    assert r["model"].startswith("RobertaForTokenClassification, 2 layers of 32")
    assert r["parameters"] == sum(p.numel() for p in anchor.model.parameters())


def test_timing_warms_up_on_every_text_and_keeps_the_fastest_round(tokenizer):
    anchor = EncoderAnchor(tokenizer, shape=TINY_SHAPE)
    calls = []
    tag = anchor.tag
    anchor.tag = lambda texts, bs: calls.append((len(texts), bs)) or tag(texts, bs)
    ticks = iter([0.0, 3.0, 10.0, 12.0, 20.0, 24.0] + [30.0 + i for i in range(10)])
    r = time_anchor(anchor, TEXTS, [4], latency_docs=2, now=lambda: next(ticks), rounds=3)
    # one untimed run over every text, then three timed ones, then the latency docs one at a time
    assert calls == [(len(TEXTS), 4)] * 4 + [(1, 1)] * 2
    row = r["batch_sizes"]["4"]
    assert row["runs_s"] == [3.0, 2.0, 4.0] and row["seconds"] == 2.0
    assert row["sentences_per_second"] == round(len(TEXTS) / 2.0, 1)


def test_speed_benchmark_states_padellm_as_a_fraction_of_the_anchor(tiny_model, tmp_path, monkeypatch):
    from speed import main

    monkeypatch.setattr(encoder_anchor, "ROBERTA_BASE", TINY_SHAPE)
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "b.json"
    assert main([str(tiny_model), str(data), "--methods", "padellm", "--max-docs", "6", "--latency-docs", "3",
                 "--batch-sizes", "6", "--anchor", "2,6", "--output", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    anchor, best = r["anchor"], r["methods"]["padellm"]["throughput"]["best"]
    assert set(anchor["batch_sizes"]) == {"2", "6"} and anchor["latency_ms"]["docs"] == 3
    assert r["padellm_vs_anchor"] == round(best["sentences_per_second"] / anchor["best"]["sentences_per_second"], 3)
    assert "--anchor 2,6" in r["command"]
    md = out.with_suffix(".md").read_text()
    assert "Encoder anchor: RobertaForTokenClassification" in md and "| anchor batch size | sent/s |" in md
