"""``python benchmarks/error_analysis.py`` on the tiny memorised model: numbers that can be checked by hand.

tiny.SENTENCES: 6 sentences, 14 gold mentions, 6 x 4 = 24 (sentence, label) slots. Four slots hold two or
more mentions: LOC in "Japan beat Syria ..." (2), PER in "Peter Blackburn met Jordan ..." (2), LOC in
"Germany and Britain ... Bonn" (3) and LOC in "... Jordan and Jordan again" (2).
"""

import collections
import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from error_analysis import by_gold_count_table, classify_spans, gold_count_bucket, main, window_offsets  # noqa: E402


def _run(model, tmp, *options):
    data = tiny.write_docbin(tmp / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp / "ea.json"
    assert main([str(data), "--model", str(model), "--output", str(out), *options]) == 0
    report = json.loads(out.read_text())
    (name, run), = report["runs"].items()
    return out, name, run


def _totals(run):
    """The totals, 0 for a key never counted (the JSON holds only the keys that were)."""
    return collections.Counter(run["totals"])


@pytest.fixture(scope="module")
def default_run(tiny_model, tmp_path_factory):
    return _run(tiny_model, tmp_path_factory.mktemp("error_analysis"))


@pytest.fixture(scope="module")
def capped_run(tiny_model, tmp_path_factory):
    """max_count=1: every count of 2 or 3 is clipped to 1, so the mentions after the first are never asked for."""
    return _run(tiny_model, tmp_path_factory.mktemp("error_analysis_capped"), "--set", "max_count=1")


def test_all_found(default_run):
    out, name, run = default_run
    t = _totals(run)
    assert name == "gold[:6] default" and run["docs"] == 6
    assert run["ents_f"] == 1.0
    assert (t["gold"], t["pred"], t["tp"]) == (14, 14, 14)
    assert not any(v for k, v in t.items() if k.startswith(("fn_", "fp_")))
    assert (t["count_exact"], t["count_low"], t["count_high"]) == (24, 0, 0)
    assert (t["raw_mentions"], t["raw_aligned"], t["raw_not_found"], t["raw_no_free_occurrence"]) == (14, 14, 0, 0)
    assert t["raw_repeated_within_label"] == 1  # "Jordan" twice under LOC, both aligned
    assert run["per_label"]["LOC"]["gold"] == 8 and run["per_label"]["LOC"]["tp"] == 8
    assert run["command"].startswith("python benchmarks/error_analysis.py ")
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_count_too_low_is_attributed(capped_run):
    _, name, run = capped_run
    t = _totals(run)
    assert name == "gold[:6] max_count=1"
    assert t["stage_capped_counts"] == 4
    assert (t["count_exact"], t["count_low"], t["count_high"]) == (20, 4, 0)
    assert t["mentions_lost_to_low_counts"] == 5  # 1 + 1 + 2 + 1
    assert (t["gold"], t["tp"], t["fn_missed_count_low"]) == (14, 9, 5)
    assert not any(v for k, v in t.items() if k.startswith(("fn_", "fp_")) and k != "fn_missed_count_low")
    per_label = run["per_label"]
    assert per_label["LOC"].get("fn_missed_count_low") == 4 and per_label["PER"].get("fn_missed_count_low") == 1
    assert run["examples"]["fn_missed_count_low"][0]["gold"] == ["Syria", "LOC"]


def test_classify_spans():
    gold = [(0, 5, "LOC"), (10, 15, "PER"), (20, 30, "ORG"), (40, 45, "MISC")]
    pred = [(0, 5, "LOC"), (10, 15, "ORG"), (20, 25, "ORG"), (40, 44, "LOC"), (50, 55, "PER")]
    fp, fn = classify_spans(pred, gold)
    assert fp == {(10, 15, "ORG"): "wrong_label", (20, 25, "ORG"): "wrong_boundary",
                  (40, 44, "LOC"): "wrong_label_and_boundary", (50, 55, "PER"): "spurious"}
    assert fn == {(10, 15, "PER"): "wrong_label", (20, 30, "ORG"): "wrong_boundary",
                  (40, 45, "MISC"): "wrong_label_and_boundary"}
    assert classify_spans([], [(0, 5, "LOC")]) == ({}, {(0, 5, "LOC"): "missed"})


def test_unknown_setting_is_one_line(tmp_path, capsys):
    assert main(["x.spacy", "--output", str(tmp_path / "x.json"), "--set", "max_cont=1"]) == 1
    assert "max_cont" in capsys.readouterr().err


def test_window_offsets_are_the_tokens_inside_each_window():
    """Raw mentions are aligned per window on the tokens the component aligned with (windows of one sentence:
    a window is not the doc's text); a window the doc's text does not hold has none."""
    import spacy

    doc = spacy.blank("en")("Japan won . Syria lost .")
    assert window_offsets(doc, ["Japan won .", "Syria lost ."]) == [[(0, 5), (6, 9), (10, 11)],
                                                                   [(0, 5), (6, 10), (11, 12)]]
    assert window_offsets(doc, ["Japan won .", "Japan  won"]) == [[(0, 5), (6, 9), (10, 11)], None]
    repeated = spacy.blank("en")("Go . Go .")
    assert window_offsets(repeated, ["Go .", "Go ."]) == [[(0, 2), (3, 4)], [(0, 2), (3, 4)]]


def test_recall_by_gold_count(default_run, capped_run):
    """The 24 slots by their gold count: the four slots of two or three mentions (9), five slots of one and 15
    of none; with max_count=1 the dense slots keep one mention each."""
    rows = default_run[2]["by_gold_count"]
    assert list(rows) == ["0", "1", "2", "3"]
    assert {k: (r["slots"], r["gold"], r["tp"]) for k, r in rows.items()} == {
        "0": (15, 0, 0), "1": (5, 5, 5), "2": (3, 6, 6), "3": (1, 3, 3)}
    capped = capped_run[2]["by_gold_count"]
    assert (capped["1"]["tp"], capped["2"]["tp"], capped["3"]["tp"]) == (5, 3, 1)
    assert sum(r["pred"] for r in capped.values()) == 9


def test_gold_count_buckets_and_table():
    assert [gold_count_bucket(n) for n in (0, 1, 5, 6, 9)] == ["0", "1", "5", "6+", "6+"]
    run = {"by_gold_count": {"1": {"slots": 4, "gold": 4, "pred": 2, "tp": 2}, "6+": {"slots": 1, "gold": 7, "pred": 0,
                                                                                    "tp": 0}}}
    rows = by_gold_count_table(run).splitlines()[2:]
    assert rows == ["| 1 | 4 | 4 | 2 | 2 | 0.5000 | 1.0000 |", "| 6+ | 1 | 7 | 0 | 0 | 0.0000 | - |"]


@pytest.mark.parametrize("flag", [True, False])
def test_nested_mode_scores_the_span_group(tiny_model, tmp_path, flag):
    """Nested mode, by --spans-key or by the key the model records: the component writes doc.spans["sc"] and the
    gold's span group is what it is scored against (a gold doc without doc.ents: flat scoring would find nothing)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    if not flag:
        meta = json.loads((model / "padellm.json").read_text())
        (model / "padellm.json").write_text(json.dumps({**meta, "spans_key": "sc"}))
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS, spans_key="sc")
    out = tmp_path / "ea.json"
    options = ["--spans-key", "sc"] if flag else []
    assert main([str(data), "--model", str(model), *options, "--output", str(out)]) == 0
    (_, run), = json.loads(out.read_text())["runs"].items()
    t = _totals(run)
    assert run["spans_key"] == "sc" and run["ents_f"] == 1.0
    assert (t["gold"], t["pred"], t["tp"]) == (14, 14, 14)
