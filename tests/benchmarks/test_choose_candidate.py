"""``python benchmarks/choose_candidate.py`` on two tiny candidates: the one with the best dev score is tuned on dev
and scored on test, and a report written again from what its stages left is the same."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

import choose_candidate  # noqa: E402
import train_candidates  # noqa: E402
from test_train_candidates import tiny_config  # noqa: E402


def test_the_score_prefix_follows_the_evaluate_json(tmp_path):
    """A model that records its span key is scored nested without --spans-key: the prefix is the JSON's."""
    from choose_candidate import score_prefix_of

    nested, flat = tmp_path / "nested.json", tmp_path / "flat.json"
    nested.write_text(json.dumps({"spans_sc_p": 0.5, "spans_sc_f": 0.5, "string_f": 0.5}))
    flat.write_text(json.dumps({"ents_f": 0.5, "string_f": 0.5}))
    assert score_prefix_of(nested, None) == "spans_sc" and score_prefix_of(flat, None) == "ents"
    assert score_prefix_of(flat, "sc") == "spans_sc" and score_prefix_of(tmp_path / "missing.json", None) == "ents"


def test_the_best_on_dev_is_chosen_and_a_failed_one_is_never():
    rows = [{"name": "a", "dev_f": 0.5}, {"name": "b", "dev_f": 0.7}, {"name": "c", "error": "out of memory"}]
    assert choose_candidate.chosen_row(rows)["name"] == "b"
    with pytest.raises(SystemExit, match="every training failed"):
        choose_candidate.chosen_row([{"name": "c", "error": "out of memory"}])


def test_the_chosen_candidate_is_tuned_on_dev_and_scored_on_test(tiny_base, tmp_path, capsys):
    train = tiny.write_examples(tmp_path / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    dev = tiny.write_docbin(tmp_path / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    test = tiny.write_docbin(tmp_path / "test.spacy", tiny.SENTENCES[:3], tiny.LABELS)
    config = tiny_config(tmp_path, tiny_base, train, dev)
    out = tmp_path / "candidates"
    assert train_candidates.main([str(config), "--out", str(out), "--candidate", "one:training.max_steps=3",
                                  "--candidate", "two:training.max_steps=6"]) == 0
    rows = json.loads((out / "candidates.json").read_text())["candidates"]
    best = max(rows, key=lambda r: r["dev_f"])["name"]

    report_path = tmp_path / "report.json"
    argv = [str(out), "--dev", str(dev), "--test", str(test), "--variants", "plain", "--latency-docs", "2",
            "--output", str(report_path)]
    assert choose_candidate.main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["chosen"] == best and {r["name"] for r in report["candidates"]} == {"one", "two"}
    assert report["tune"]["docs"] == len(tiny.SENTENCES) and report["tune_variants"] == ["plain"]
    assert report["test_plain"]["docs"] == report["test_tuned"]["docs"] == 3
    assert 0.0 <= report["test_plain"]["ents_f"] <= 1.0 and report["batch1_docs"] == 2
    assert report_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"| {best} (chosen) |" in capsys.readouterr().out

    stamp = (out / "chosen" / "tune.json").stat().st_mtime_ns
    assert choose_candidate.main(argv) == 0  # the stages' JSON is there: nothing runs again
    assert (out / "chosen" / "tune.json").stat().st_mtime_ns == stamp
    again = json.loads(report_path.read_text())
    assert again["test_plain"] == report["test_plain"] and again["tune"] == report["tune"]
