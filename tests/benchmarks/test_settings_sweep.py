"""``python benchmarks/settings_sweep.py`` on the tiny memorised model: one row per variant, exact scores,
the files written, and variants checked before any model is loaded."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from settings_sweep import main, parse_variant  # noqa: E402


@pytest.fixture(scope="module")
def sweep(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("settings_sweep")
    data = tiny.write_docbin(tmp / "gold.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp / "sweep.json"
    argv = [str(tiny_model), str(data), "--variant", "plain:", "--variant", "capped:max_count=1",
            "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    return out, json.loads(out.read_text())


def test_one_row_per_variant(sweep):
    out, report = sweep
    assert list(report["variants"]) == ["plain", "capped"]
    assert report["docs"] == len(tiny.SENTENCES)
    assert report["command"].startswith("python benchmarks/settings_sweep.py ")
    md = out.with_suffix(".md").read_text()
    assert sum(line.startswith("| plain |") for line in md.splitlines()) == 1
    assert sum(line.startswith("| capped | `max_count=1` |") for line in md.splitlines()) == 1
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_scores_exact(sweep):
    _, report = sweep
    plain = report["variants"]["plain"]
    assert plain["changes"] == {}
    assert plain["span_p"] == plain["span_r"] == plain["span_f"] == 1.0
    assert plain["string_f"] == 1.0
    assert plain["gold"] == plain["pred"] == sum(len(m) for _, m in tiny.SENTENCES)
    assert all(scores["f"] == 1.0 for scores in plain["per_type"].values())
    assert plain["sentences_per_second"] > 0 and plain["passes_per_sentence"] > 0


def test_variant_settings_take_effect(sweep):
    _, report = sweep
    capped = report["variants"]["capped"]
    assert capped["changes"] == {"max_count": 1}
    assert capped["component_stats"]["capped_counts"] > 0  # two or three LOC in a sentence, one kept
    assert capped["span_r"] < 1.0 and capped["pred"] < capped["gold"]
    assert report["base_settings"]["max_count"] == 20  # the pipeline's own settings, not the variant's


def test_unknown_setting_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["model", str(tmp_path / "none.spacy"), "--variant", "typo:constrain_mention=true"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "variant 'typo': unknown setting 'constrain_mention'; did you mean 'constrain_mentions'?" in err


def test_parse_variant():
    assert parse_variant("plain:") == ("plain", {})
    name, settings = parse_variant('b:count_bias={"PER": -1, "LOC": 0},dedupe_mentions=true,max_count=3')
    assert name == "b" and settings == {"count_bias": {"PER": -1, "LOC": 0}, "dedupe_mentions": True,
                                        "max_count": 3}
    with pytest.raises(ValueError, match="NAME:KEY=VALUE"):
        parse_variant("constrain_mentions=true")
    with pytest.raises(ValueError, match="'max_count' must be a positive integer"):
        parse_variant("zero:max_count=0")
