"""``python benchmarks/speed.py`` on the tiny memorised model: the report's shape and its numbers."""

import json
import sys
from pathlib import Path

import pytest
import torch

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from speed import main  # noqa: E402


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("benchmark")
    data = tiny.write_docbin(tmp / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp / "b.json"
    argv = [str(tiny_model), str(data), "--max-docs", "6", "--latency-docs", "6",
            "--reference-docs", "3", "--batch-sizes", "1,4", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    return out, json.loads(out.read_text())


def test_outputs_written(report):
    out, _ = report
    for suffix in (".json", ".md", ".png"):
        path = out.with_suffix(suffix)
        assert path.exists() and path.stat().st_size > 0, path
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out.with_suffix(".md").read_text()
    assert "| padellm |" in md and "| reference |" in md


def test_metadata(report):
    _, r = report
    assert r["command"].startswith("python benchmarks/speed.py ") and "--batch-sizes 1,4" in r["command"]
    assert r["timestamp"] and r["environment"]["device_name"].startswith("cpu: ")
    assert r["environment"]["torch"] and r["environment"]["transformers"]
    assert r["settings"]["docs"] == 6 and r["settings"]["batch_sizes"] == [1, 4]
    assert r["peak_gpu_memory_mb"] is None


def test_accuracy(report):
    _, r = report
    pad, ref = r["methods"]["padellm"], r["methods"]["reference"]
    assert pad["f1"]["docs"] == 6 and ref["f1"]["docs"] == 3
    assert pad["f1"]["span_metric"] == "ents_f"
    for m in (pad, ref):
        assert m["f1"]["span_f"] == 1.0 and m["f1"]["string_f"] == 1.0
    assert pad["agreement_with_reference"] == 1.0


def test_latency_and_decoding(report):
    _, r = report
    pad, ref = r["methods"]["padellm"], r["methods"]["reference"]
    assert pad["latency_ms"]["docs"] == 6 and ref["latency_ms"]["docs"] == 3
    for m in (pad, ref):
        lat = m["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"] and lat["mean"] > 0
        assert len(lat["values"]) == lat["docs"]
        dec = m["decoding"]
        assert dec["prompt_tokens_per_sentence"] > 0 and dec["generated_tokens_per_sequence"] > 0
        assert dec["sequences_per_sentence"] >= len(tiny.LABELS)
        assert m["peak_gpu_memory_mb"] is None
    assert ref["decoding"]["forward_passes_per_sentence"] > pad["decoding"]["forward_passes_per_sentence"]
    assert ref["decoding"]["prompt_tokens_per_sentence"] > pad["decoding"]["prompt_tokens_per_sentence"]
    sp = pad["speedup_vs_reference"]
    assert sp["docs"] == 3 and sp["median_latency_ratio"] > 0 and r["speedup"] == sp["median_latency_ratio"]
    assert ref["speedup_vs_reference"]["median_latency_ratio"] == 1.0


def test_throughput(report):
    _, r = report
    pad, ref = r["methods"]["padellm"], r["methods"]["reference"]
    assert ref["throughput"] is None
    rows = pad["throughput"]["batch_sizes"]
    assert set(rows) == {"1", "4"}
    assert all(row["sentences_per_second"] > 0 and row["words_per_second"] > 0 for row in rows.values())
    # batching shares forward passes between docs
    assert rows["4"]["forward_passes_per_sentence"] < rows["1"]["forward_passes_per_sentence"]
    best = pad["throughput"]["best"]
    assert best["sentences_per_second"] == max(row["sentences_per_second"] for row in rows.values())


def test_unknown_method_is_an_error(tiny_model, tmp_path, capsys):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES[:1], tiny.LABELS)
    assert main([str(tiny_model), str(data), "--methods", "nope", "--no-progress"]) == 1
    assert "unknown method" in capsys.readouterr().err


def test_drafts_side_by_side(tiny_model, tmp_path):
    """padellm (drafts copied from the text) against padellm_nodraft: same entities, fewer passes."""
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "d.json"
    argv = [str(tiny_model), str(data), "--methods",
            "padellm,padellm_nodraft,padellm_words,padellm_nospan,padellm_dynamic",
            "--max-docs", "6", "--latency-docs", "6", "--batch-sizes", "6", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    m = json.loads(out.read_text())["methods"]
    pad, nod = m["padellm"], m["padellm_nodraft"]
    assert pad["f1"]["span_f"] == nod["f1"]["span_f"] == 1.0
    assert pad["agreement_with_plain"] == nod["agreement_with_plain"] == 1.0
    for ablation in ("padellm_words", "padellm_nospan"):  # span drafts from capitalised words, and none
        assert m[ablation]["f1"]["span_f"] == 1.0 and m[ablation]["agreement_with_plain"] == 1.0
    assert pad["decoding"]["forward_passes_per_sentence"] < nod["decoding"]["forward_passes_per_sentence"]
    assert 0 < pad["decoding"]["draft_acceptance"] <= 1
    assert nod["decoding"]["draft_acceptance"] is None


def test_decoding_settings_reach_the_pipeline(tiny_model, tmp_path):
    """``--set`` changes the pipeline's decoding settings; the report records them and the command."""
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "s.json"
    argv = [str(tiny_model), str(data), "--methods", "padellm", "--max-docs", "4", "--latency-docs", "2",
            "--batch-sizes", "4", "--set", "draft_tokens=0", "--set", "max_batch_rows=2", "--output", str(out),
            "--no-progress"]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    settings = r["settings"]["decode_settings"]
    assert (settings["draft_tokens"], settings["max_batch_rows"], r["settings"]["max_batch_rows"]) == (0, 2, 2)
    assert r["command"].endswith("--set draft_tokens=0 --set max_batch_rows=2 --no-progress")
    assert r["methods"]["padellm"]["f1"]["span_f"] == 1.0
    assert main([str(tiny_model), str(data), "--set", "draft_tokns=0", "--no-progress"]) == 1


def test_tradeoff_points_are_each_methods_latency_and_f1(report):
    from report import tradeoff_points

    _, data = report
    points = {name: (ms, f1) for name, ms, f1 in tradeoff_points(data)}
    assert set(points) == set(data["methods"])
    for name, (ms, f1) in points.items():
        assert ms == data["methods"][name]["latency_ms"]["median"] and f1 == data["methods"][name]["f1"]["span_f"]


def test_int8_weight_only_side_by_side(tiny_model, tmp_path):
    """padellm_int8w: the same engine and settings on int8 weights, its own F1, latency and throughput rows."""
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "q.json"
    argv = [str(tiny_model), str(data), "--methods", "padellm,padellm_int8w", "--max-docs", "6",
            "--latency-docs", "3", "--batch-sizes", "6", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    m = json.loads(out.read_text())["methods"]
    assert m["padellm_int8w"]["f1"]["span_f"] == m["padellm"]["f1"]["span_f"] == 1.0
    assert m["padellm_int8w"]["throughput"]["batch_sizes"]["6"]["sentences_per_second"] > 0
    assert m["padellm_int8w"]["latency_ms"]["docs"] == 3


def test_int8_weight_only_method_runs_on_quantized_weights(tiny_model):
    from methods import METHODS

    from spacy_padellm.decoding.factory import build_decoder
    from spacy_padellm.decoding.quantize import Int8WeightOnly
    from spacy_padellm.decoding.settings import DecodeSettings
    from spacy_padellm.loading import load_model, resolve_model
    from spacy_padellm.text.protocol import PromptEncoder

    model, tokenizer = load_model(resolve_model(str(tiny_model)), device="cpu")
    engine = build_decoder(model, PromptEncoder(tokenizer), DecodeSettings(max_count=5, draft_tokens=2), "padellm")
    decoder = METHODS["padellm_int8w"].build(engine)
    assert decoder.lm is not engine.lm and isinstance(decoder.lm.lm_head, Int8WeightOnly)
    assert isinstance(engine.lm.lm_head, torch.Tensor)
    assert decoder.settings.quantize == "int8-weight-only" and decoder.settings.max_count == 5
    assert decoder.settings.draft_tokens == 2


def test_throughput_only_run_writes_its_plot(tiny_model, tmp_path):
    """``--latency-docs 0`` (throughput and F1 alone): the report and its plot are written, no error."""
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "t.json"
    argv = [str(tiny_model), str(data), "--methods", "padellm", "--max-docs", "4", "--latency-docs", "0",
            "--batch-sizes", "4", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.read_text())["methods"]["padellm"]["throughput"]
