"""``python benchmarks/batch1_rounds.py`` on a tiny model folder on the CPU: every variant timed in every round, in
turn, the ratios to the default's round by round, and the table, JSON and plot."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from batch1_rounds import main  # noqa: E402


def test_rounds_of_each_variant(tiny_model, tmp_path, capsys):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "out" / "rounds.json"
    assert main([str(tiny_model), str(data), "--device", "cpu", "--rounds", "2", "--warm-docs", "1",
                 "--latency-docs", "2", "--variant", "plain:draft_tokens=0", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["default", "plain"] and report["latency_docs"] == 2 and report["rounds"] == 2
    default, plain = report["rows"]["default"], report["rows"]["plain"]
    assert plain["changes"] == {"draft_tokens": 0} and default["changes"] == {}
    assert len(default["turns"]) == len(plain["turns"]) == 2
    assert default["ratio_to_default"] == [1.0, 1.0]
    assert plain["ratio_to_default"] == [round(t["median_ms"] / d["median_ms"], 3)
                                         for t, d in zip(plain["turns"], default["turns"])]
    # on the CPU a pass's result comes with its launch: no wait, no graph
    assert all(t["median_ms"] > 0 and t["graph_captures"] == 0 and t["wait_mean_ms"] == 0
               for t in default["turns"] + plain["turns"])
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| plain | draft_tokens=0 |" in capsys.readouterr().out


def test_bad_arguments(tiny_model, tmp_path):
    data = tiny.write_docbin(tmp_path / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    with pytest.raises(SystemExit):
        main([str(tiny_model), str(data), "--variant", "default:draft_tokens=0"])  # the component's own name
    with pytest.raises(SystemExit):
        main([str(tiny_model), str(data), "--rounds", "0"])
    with pytest.raises(SystemExit, match="no doc left"):
        main([str(tiny_model), str(data), "--device", "cpu", "--warm-docs", str(len(tiny.SENTENCES))])
