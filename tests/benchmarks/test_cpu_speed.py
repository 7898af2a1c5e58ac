"""``python benchmarks/cpu_speed.py`` on the tiny memorised model: gold read from PaDeLLM JSONL, every variant scored."""

import json
import sys
from pathlib import Path

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from cpu_speed import load_conll03, main, span_f1  # noqa: E402


def _jsonl(path: Path) -> Path:
    """tiny.SENTENCES as CoNLL03 PaDeLLM JSONL: token offsets, end inclusive."""
    lines = []
    for text, mentions in tiny.SENTENCES:
        tokens = text.split(" ")
        rec, used = [text], set()
        for mention, label in mentions:  # a repeated mention: its next occurrence
            words = mention.split(" ")
            start = next(i for i in range(len(tokens)) if tokens[i: i + len(words)] == words and i not in used)
            used.add(start)
            rec.append([start, start + len(words) - 1, mention, label])
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def test_gold_spans_and_scores(tmp_path):
    gold = load_conll03(_jsonl(tmp_path / "t.jsonl"), 100)
    assert len(gold) == len(tiny.SENTENCES)
    for (text, spans), (_, mentions) in zip(gold, tiny.SENTENCES):
        assert sorted((text[s:e], label) for s, e, label in spans) == sorted(mentions)

    class Ent:
        def __init__(self, start, end, label):
            self.start_char, self.end_char, self.label_ = start, end, label

    class Doc:
        def __init__(self, ents):
            self.ents = ents

    first = gold[0][1]
    preds = [Doc([Ent(*first[0]), Ent(0, 1, "PER")])] + [Doc([]) for _ in gold[1:]]
    n_gold = sum(len(spans) for _, spans in gold)
    assert span_f1(preds, gold) == {"p": 0.5, "r": round(1 / n_gold, 4),
                                    "f": round(2 * 0.5 * (1 / n_gold) / (0.5 + 1 / n_gold), 4)}


def test_variants_side_by_side(tiny_model, tmp_path):
    out = tmp_path / "cpu.json"
    assert main(["--model", str(tiny_model), "--data", str(_jsonl(tmp_path / "t.jsonl")), "--docs", "6",
                 "--chunk", "4", "--variants", "bucketed,fp32,int8,bf16", "--output", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    assert list(results) == ["bucketed", "fp32", "int8", "bf16"] and report["docs"] == 6 and report["baseline"] == "bucketed"
    assert all(r["sentences"] == 6 and r["sentences_per_s"] > 0 for r in results.values())
    assert results["fp32"]["span"] == results["bucketed"]["span"] and results["fp32"]["span"]["f"] > 0.9
    assert results["bf16"]["span"]["f"] > 0.9
    assert results["bucketed"]["speedup"] == 1.0
    assert out.with_suffix(".png").stat().st_size > 0
    assert main(["--variants", "fp64"]) == 1


def test_another_model_is_timed_in_the_same_rotation(tiny_model, tmp_path):
    out = tmp_path / "two.json"
    assert main(["--model", str(tiny_model), "--also-model", str(tiny_model), "--data", str(_jsonl(tmp_path / "t.jsonl")),
                 "--docs", "6", "--chunk", "3", "--variants", "fp32,bf16", "--output", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    other = f"{tiny_model.name}/"
    assert list(report["results"]) == ["fp32", "bf16", other + "fp32", other + "bf16"]
    assert report["results"][other + "fp32"]["span"] == report["results"]["fp32"]["span"]
    assert report["results"][other + "fp32"]["description"].startswith(str(tiny_model))
    assert list(report["also"]) == [str(tiny_model)] and report["baseline"] == "fp32"


def test_encoder_anchor_is_timed_alongside_without_a_score(tiny_model, tmp_path, monkeypatch):
    import encoder_anchor
    from test_encoder_anchor import TINY_SHAPE

    from spacy_padellm.decoding import quantize

    monkeypatch.setattr(encoder_anchor, "ROBERTA_BASE", TINY_SHAPE)
    for bf16 in (False, True):
        monkeypatch.setattr(quantize, "cpu_has_bf16", lambda: bf16)
        out = tmp_path / f"cpu{bf16}.json"
        assert main(["--model", str(tiny_model), "--data", str(_jsonl(tmp_path / "t.jsonl")), "--docs", "6",
                     "--chunk", "3", "--variants", "fp32", "--peer-encoder", "--encoder-batch-size", "2",
                     "--output", str(out), "--no-progress"]) == 0
        results = json.loads(out.read_text())["results"]
        anchors = ["roberta_base_fp32", "roberta_base_bf16"][: 2 if bf16 else 1]
        assert list(results) == ["fp32"] + anchors
        for name in anchors:
            assert results[name]["sentences"] == 6 and "span" not in results[name]
            assert "2 layers of 32" in results[name]["description"]
        assert results["fp32"]["span"]["f"] > 0.9
