"""``python benchmarks/learning_curve.py``: subsets spread over a file, each candidate scored on test, and the fit of
the test score to the log of the training sentences."""

import json
import math
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

import learning_curve  # noqa: E402
import train_candidates  # noqa: E402
from test_train_candidates import tiny_config  # noqa: E402


def test_split_takes_every_kth_line_and_splits_on_newlines_only(tmp_path):
    source = tmp_path / "train.jsonl"
    lines = [json.dumps([f"text {i}" + ("\u2028more" if i == 3 else "")], ensure_ascii=False) for i in range(10)]
    source.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    written = learning_curve.split(source, tmp_path / "out", [4, 1])
    assert written[4].name == "train_every4.jsonl"
    assert written[4].read_text(encoding="utf-8").split("\n")[:-1] == [lines[0], lines[4], lines[8]]
    assert written[1].read_text(encoding="utf-8").split("\n")[:-1] == lines  # the line separator kept inside a text
    with pytest.raises(SystemExit, match="positive"):
        learning_curve.split(source, tmp_path / "none", [2, 0])
    assert not (tmp_path / "none").exists()  # checked before anything is written


def test_the_fit_is_least_squares_in_log2_of_the_sentences():
    a, b = learning_curve.fit_log2([(100, 0.50), (200, 0.53), (400, 0.56), (800, 0.59)])
    assert b == pytest.approx(0.03) and a + b * math.log2(100) == pytest.approx(0.50)
    assert learning_curve.sentences_needed(a, b, 0.62) == pytest.approx(1600)
    assert learning_curve.sentences_needed(a, -0.01, 0.9) is None  # a curve that falls never gets there
    assert learning_curve.sentences_needed(0.5, 1e-4, 0.9) is None  # nor one that rises too slowly to count
    with pytest.raises(ValueError, match="two training sizes"):
        learning_curve.fit_log2([(100, 0.5), (100, 0.6)])


def test_each_candidate_is_scored_on_test_and_fitted(tiny_base, tmp_path, capsys):
    half = tiny.SENTENCES[::2]
    small = tiny.write_examples(tmp_path / "small.padellm.jsonl", half, tiny.LABELS)
    tiny.write_docbin(tmp_path / "small.spacy", half, tiny.LABELS)
    full = tiny.write_examples(tmp_path / "full.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    tiny.write_docbin(tmp_path / "full.spacy", tiny.SENTENCES, tiny.LABELS)
    dev = tiny.write_docbin(tmp_path / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    test = tiny.write_docbin(tmp_path / "test.spacy", tiny.SENTENCES[:3], tiny.LABELS)
    config = tiny_config(tmp_path, tiny_base, full, dev)
    out = tmp_path / "curve"
    assert train_candidates.main([str(config), "--out", str(out), "--common", "training.max_steps=3",
                                  "--candidate", f"full:paths.train={full}",
                                  "--candidate", f"half:paths.train={small}"]) == 0
    output = tmp_path / "curve.json"
    assert learning_curve.main(["score", str(out), "--test", str(test), "--target", "0.99", "--at", "1000",
                                "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert [(r["name"], r["sentences"]) for r in report["rows"]] == [("half", len(half)), ("full", len(tiny.SENTENCES))]
    for row in report["rows"]:
        scored = json.loads((out / row["name"] / "test.json").read_text())
        assert row["test_string_f"] == scored["string_f"] and row["test_span_f"] == scored["ents_f"]
        assert row["dev_span_f"] is not None and row["steps"] == 3
    fit = report["fit"]
    (n0, f0), (n1, f1) = [(r["sentences"], r["test_string_f"]) for r in report["rows"]]
    assert fit["b_per_doubling"] == pytest.approx((f1 - f0) / math.log2(n1 / n0), abs=1e-4)
    need = learning_curve.sentences_needed(fit["a"], fit["b_per_doubling"], 0.99)
    assert fit["at_sentences"] == 1000 and fit["sentences_for_target"] == (None if need is None else round(need))
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| training sentences | candidate |" in output.with_suffix(".md").read_text()
    assert "Fit: test string F1" in capsys.readouterr().out


def test_a_failed_candidate_is_left_out_and_missing_values_show_as_dashes(tmp_path, capsys):
    out = tmp_path / "curve"
    (out / "broken" / "best").mkdir(parents=True)  # a best model from before it failed
    (out / "candidates.json").write_text(json.dumps({"candidates": [
        {"name": "broken", "settings": {"paths.train": "x.padellm.jsonl"}, "error": "CUDA out of memory"}]}))
    report = learning_curve.main(["score", str(out), "--test", "t.spacy", "--output", str(tmp_path / "c.json")])
    assert report == 0 and json.loads((tmp_path / "c.json").read_text())["rows"] == []
    assert "broken: CUDA out of memory; left out" in capsys.readouterr().out
    row = {"sentences": 10, "name": "x", "steps": None, "best_step": None, "dev_span_f": None, "test_span_p": None,
           "test_span_r": None, "test_span_f": None, "test_string_f": 0.5}
    assert "| 10 | x | – (–) | – | – | – | – | 50.00 |" in learning_curve.render_markdown({"rows": [row]})
    learning_curve.render_plot({"rows": [row]}, tmp_path / "c.png")
    with pytest.raises(SystemExit, match="not a training file"):
        learning_curve._sentences("corpus/train.jsonl")
