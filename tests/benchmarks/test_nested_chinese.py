"""``python benchmarks/nested_chinese.py`` end to end on the CPU: a GENIA-style nested set (token offsets, cut
90/10 from its dev split) and a Chinese set (character offsets) -> convert -> the tiny base fine-tuned on both at
once -> tuned on dev -> scored on test -> one report with the paper's figures and batch-1 timing."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from nested_chinese import PAPER_F1, main, split_genia  # noqa: E402

ZH = [["李明在北京工作。", [0, 1, "李明", "PER"], [3, 4, "北京", "LOC"]],
      ["上海很大。", [0, 1, "上海", "LOC"]],
      ["今天天气很好。"]]


def genia_lines():
    lines = []
    for text, mentions in tiny.NESTED:
        tokens, record = text.split(" "), [text]
        for mention, label in mentions:
            words = mention.split(" ")
            start = next(i for i in range(len(tokens)) if tokens[i:i + len(words)] == words)
            record.append([start, start + len(words), mention, label])
        lines.append(json.dumps(record, ensure_ascii=False))
    return lines


@pytest.fixture(scope="module")
def nested_chinese_run(tiny_base, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nested_chinese")
    data = tmp / "data"
    (data / "genia").mkdir(parents=True)
    (data / "genia" / "genia_dev.jsonl").write_text("\n".join(genia_lines() * 10) + "\n", encoding="utf-8")
    (data / "genia" / "genia_test.jsonl").write_text("\n".join(genia_lines()) + "\n", encoding="utf-8")
    (data / "resume").mkdir()
    zh = "\n".join(json.dumps(r, ensure_ascii=False) for r in ZH) + "\n"
    for split in ("train", "dev", "test"):
        (data / "resume" / f"resume_{split}.jsonl").write_text(zh * (4 if split == "train" else 1), encoding="utf-8")
    out = tmp / "out"
    argv = ["--base", str(tiny_base), "--data", str(data), "--out", str(out), "--gpu-id", "-1", "--max-minutes", "5",
            "--sets", "genia,resume", "--set", "training.method=full", "--set", "training.max_steps=300",
            "--set", "training.batch_size=16", "--set", "training.lr=0.003", "--set", "training.warmup_ratio=0",
            "--set", "training.eval_every=150", "--set", "data.max_dev_docs=null", "--tune", "--tune-docs", "3",
            "--latency-docs", "2", "--previous", "genia=63.1,resume=84.9"]
    code = main(argv)
    return code, out, json.loads((out / "nested_chinese.json").read_text())


def test_both_sets_are_trained_tuned_and_scored(nested_chinese_run):
    code, out, report = nested_chinese_run
    assert code == 0 and report["failed"] == {} and report["latency_failed"] == {}
    assert list(report["sets"]) == ["genia", "resume"]
    for name, row in report["sets"].items():
        assert row["plain"]["f"] == row["plain"]["string_f"] == 100.0  # memorised
        assert row["dev_f"] == 100.0 and row["steps"] == 300 and row["best_step"] in (150, 300)
        assert row["paper_f"] == PAPER_F1[name]
        assert row["chosen"] == "plain" and row["plain_tune_dev_f"] == 100.0  # tuning cannot beat 100 on dev
        assert row["tuned"]["f"] == 100.0 and "count_bias" in row["tuning"]
        assert row["test"] == row["plain"]
        assert row["batch1_ms"] > 0 and json.loads((out / "metrics" / f"{name}.batch1.json").read_text())["docs"] == 2
    genia = json.loads((out / "metrics" / "genia.test.json").read_text())
    assert genia["spans_sc_f"] == 1.0 and genia["docs"] == len(tiny.NESTED)  # nested: the span group is scored
    labels = json.loads((out / "corpus" / "resume" / "resume_train.labels.json").read_text())
    assert labels == ["LOC", "PER"]
    assert json.loads((out / "training" / "resume" / "best" / "padellm.json").read_text())["lang"] == "zh"


def test_report_files_and_halfway_column(nested_chinese_run):
    _, out, report = nested_chinese_run
    md = (out / "nested_chinese.md").read_text().splitlines()
    assert md[0].startswith("| set | steps |") and md[0].endswith("| test docs/s | batch-1 ms |") and len(md) == 4
    assert md[2].startswith("| genia | 300 |") and f"| {(63.1 + 77.66) / 2:.1f} |" in md[2]
    assert (out / "nested_chinese.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "--training.max_minutes 5.0" in report["commands"]["train"]
    assert report["command"].startswith("python benchmarks/nested_chinese.py --base ")


def test_genia_split_keeps_the_last_tenth_for_selection(tmp_path):
    src = tmp_path / "dev.jsonl"
    src.write_text("".join(f'["s{i}"]\n' for i in range(25)) + "\n")
    split_genia(src, tmp_path / "a" / "train.jsonl", tmp_path / "a" / "dev.jsonl")
    assert (tmp_path / "a" / "train.jsonl").read_text().splitlines() == [f'["s{i}"]' for i in range(23)]
    assert (tmp_path / "a" / "dev.jsonl").read_text().splitlines() == ['["s23"]', '["s24"]']


def test_unknown_set_is_an_error(tmp_path, capsys):
    assert main(["--base", "x", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--sets", "genia,msra"]) == 2
    assert "unknown set(s) ['msra']" in capsys.readouterr().err


def test_report_only_writes_the_report_again_from_out(nested_chinese_run, capsys):
    _, out, report = nested_chinese_run
    (out / "nested_chinese.md").unlink()
    assert main(["--base", "x", "--data", "unused", "--out", str(out), "--report-only", "--previous",
                 "genia=63.1"]) == 0  # the sets and the tuned rows: those the folder holds
    again = json.loads((out / "nested_chinese.json").read_text())
    assert again["command"] == report["command"] and again["sets"]["genia"]["test"] == report["sets"]["genia"]["test"]
    assert again["sets"]["resume"]["previous_f"] is None  # as given this time
    assert list(again["sets"]) == ["genia", "resume"] and again["sets"]["resume"]["tuned"]["f"] == 100.0
    assert (out / "nested_chinese.md").read_text().splitlines()[2].startswith("| genia | 300 |")
