"""``python benchmarks/average_candidates.py`` on two tiny LoRA models: every average is written and scored on dev
beside the two inputs, and the table, JSON and plot report them."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from average_candidates import main, parse_candidate  # noqa: E402


def test_candidates_parse():
    assert parse_candidate("exact:1,3") == ("exact", [1.0, 3.0])
    with pytest.raises(ValueError, match="MODE:W1,W2"):
        parse_candidate("mean:1,1")


def test_averages_are_scored_on_dev_beside_their_inputs(tiny_base, tmp_path, train_tiny, capsys):
    first, _ = train_tiny(tmp_path / "a", tiny_base, tiny.SENTENCES, tiny.LABELS, steps=15, method="lora", lr=1e-2)
    second, _ = train_tiny(tmp_path / "b", first, tiny.SENTENCES, tiny.LABELS, steps=10, method="lora", lr=1e-2)
    dev = tiny.write_docbin(tmp_path / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "avg"
    assert main([str(first), str(second), str(dev), "--out", str(out), "--candidate", "factors:1,1",
                 "--candidate", "exact:0,1"]) == 0
    report = json.loads((out / "candidates.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["first", "second", "factors-1:1", "exact-0:1"]
    assert all(r["docs"] == len(tiny.SENTENCES) for r in rows.values())
    assert rows["exact-0:1"]["ents_f"] == pytest.approx(rows["second"]["ents_f"])  # weight 0 on the first
    assert report["chosen"] == max(rows.values(), key=lambda r: r["ents_f"])["name"]
    assert (out / "candidates.png").stat().st_size > 0 and (out / "exact-0:1" / "adapter").is_dir()
    assert "| factors-1:1 | factors |" in capsys.readouterr().out
