"""``python benchmarks/trie_build.py`` on the tiny model: both builds timed, the same sequences, the outputs."""

import json
import sys
from pathlib import Path

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from trie_build import main  # noqa: E402


def test_report_and_plot(tiny_model, tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps([text]) + "\n" for text, _ in tiny.SENTENCES), encoding="utf8")
    out = tmp_path / "trie.json"
    assert main(["--model", str(tiny_model), "--data", str(data), "--docs", "5", "--rounds", "1",
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["docs"] == 5 and report["same_sequences"] == 5 and report["sequences_per_sentence"] > 5
    assert [r["ms_per_sentence"] > 0 for r in report["rows"]] == [True, True]
    assert report["rows"][1]["x_faster_than_long_way"] == 1.0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
