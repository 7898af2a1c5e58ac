"""``python benchmarks/levers_speed.py`` on a tiny model folder that records the levers: both variants decode the
same gold docs, the recorded one with the levers on and the other with them off, and the table, JSON and plot
report them."""

import json
import shutil
import sys
from pathlib import Path

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from levers_speed import main  # noqa: E402


def test_levers_recorded_and_off_side_by_side(tiny_model, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    meta = json.loads((folder / "padellm.json").read_text())
    (folder / "padellm.json").write_text(json.dumps({**meta, "levers": {"constrain_mentions": True}}))
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "out" / "levers.json"
    assert main([str(folder), str(data), "--device", "cpu", "--batch-size", "2", "--rounds", "1", "--warm-docs", "1",
                 "--latency-docs", "2", "--unfused", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert rows["recorded"]["levers"] == ["constrain_mentions"] and rows["off"]["levers"] == []
    assert list(rows) == ["recorded", "off", "recorded, unfused", "off, unfused"]
    assert rows["recorded, unfused"]["same_docs_as_fused"] == 1.0 and rows["recorded"]["same_docs_as_fused"] is None
    assert {row["kernels"] for row in rows.values()} == {"unfused"}  # the CPU runs no fused steps
    assert report["fused_vs_unfused"]["off"]["span_f1_points"] == 0.0
    assert report["docs"] == len(tiny.SENTENCES) and report["device"] == "cpu"
    for row in rows.values():
        assert row["f"] == 1.0 and row["sentences_per_s"] > 0 and row["latency_docs"] == 2  # memorised
        assert row["forward_passes"] > 0
    assert out.with_suffix(".png").stat().st_size > 0 and "| off | none | unfused |" in out.with_suffix(".md").read_text()
    assert "| recorded | constrain_mentions |" in capsys.readouterr().out


def test_a_missing_docbin_is_a_clear_error(tiny_model, tmp_path, capsys):
    assert main([str(tiny_model), str(tmp_path / "missing.spacy"), "--device", "cpu"]) == 1
    assert "missing.spacy" in capsys.readouterr().err


def test_variants_of_other_settings_compared_with_recorded(tiny_model, tmp_path):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "levers.json"
    assert main([str(tiny_model), str(data), "--device", "cpu", "--batch-size", "2", "--rounds", "1", "--warm-docs",
                 "1", "--latency-docs", "2", "--warm-timed", "--variant", "drafts:count_drafts=3,span_drafts=4",
                 "--variant", "no-drafts:draft_tokens=0", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert list(rows) == ["recorded", "off", "drafts", "no-drafts"]
    assert rows["drafts"]["changes"] == {"count_drafts": 3, "span_drafts": 4}
    assert all(row["graph_captures_batch1"] == 0 for row in rows.values())  # the CPU captures none
    # drafts never change greedy output, in nlp.pipe or one doc at a time, and fewer drafts never take fewer passes
    for name in ("drafts", "no-drafts"):
        assert rows[name]["same_docs_as_recorded"] == 1.0 and rows[name]["same_batch1_docs_as_recorded"] == 1.0
        assert rows[name]["same_docs_as_fused"] is None
    assert rows["drafts"]["batch1_passes_per_doc"] <= rows["no-drafts"]["batch1_passes_per_doc"]
    assert set(report["variants_vs_recorded"]) == {"drafts", "no-drafts"}
    assert "drafts / recorded" in out.with_suffix(".md").read_text()


def test_a_variant_named_like_a_fixed_one_is_refused(tiny_model, tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main([str(tiny_model), str(tmp_path / "g.spacy"), "--variant", "off:count_drafts=2"])
    assert "fixed variants" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tiny_model), str(tmp_path / "g.spacy"), "--variant", "a:count_drafts=2", "--variant", "a:span_drafts=2"])
    assert "must differ: a" in capsys.readouterr().err
