"""``python benchmarks/train_candidates.py`` on the tiny base: each candidate trains with its own overrides in
its own process, and the table, JSON and plot report what each one reached on dev."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from train_candidates import main, parse_candidate, parse_overrides, train_command  # noqa: E402

CONFIG = """
[paths]
base_model = "{base}"
train = "{train}"
dev = "{dev}"
output = "unused"

[data]
labels = {labels}

[training]
method = "full"
batch_size = 8
lr = 0.003
warmup_ratio = 0.0
eval_every = 3
log_every = 1
device = "cpu"
"""


def tiny_config(tmp_path: Path, base, train, dev) -> Path:
    """``CONFIG`` over the tiny ``base`` with these training and dev files, written in ``tmp_path``."""
    config = tmp_path / "tiny.cfg"
    config.write_text(CONFIG.format(base=base, train=train, dev=dev, labels=json.dumps(tiny.LABELS)))
    return config


def test_overrides_and_candidates_parse():
    assert parse_overrides("lora.lora_r=24, data.nonzero_repeat=2,") == {"lora.lora_r": "24",
                                                                         "data.nonzero_repeat": "2"}
    assert parse_candidate("r24:lora.lora_r=24") == ("r24", {"lora.lora_r": "24"})
    with pytest.raises(SystemExit, match="section.key=value"):
        parse_overrides("lora_r=24")
    with pytest.raises(SystemExit, match="candidate name"):
        parse_candidate("a/b:lora.lora_r=8")
    cmd = train_command("c.cfg", Path("out/a"), {"lora.lora_r": "8"}, 2.5)
    assert cmd[-5:] == ["out/a", "--training.max_minutes", "2.5", "--lora.lora_r", "8"]


def test_two_candidates_train_and_are_reported(tiny_base, tmp_path):
    train = tiny.write_examples(tmp_path / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    dev = tiny.write_docbin(tmp_path / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    config = tmp_path / "tiny.cfg"
    config.write_text(CONFIG.format(base=tiny_base, train=train, dev=dev, labels=json.dumps(tiny.LABELS)))
    out = tmp_path / "candidates"
    argv = [str(config), "--out", str(out), "--common", "training.seed=0",
            "--candidate", "short:training.max_steps=3", "--candidate", "long:training.max_steps=6,data.nonzero_repeat=2"]
    assert main(argv) == 0
    report = json.loads((out / "candidates.json").read_text())
    rows = {r["name"]: r for r in report["candidates"]}
    assert rows["short"]["steps"] == 3 and rows["long"]["steps"] == 6
    assert rows["long"]["settings"] == {"training.seed": "0", "training.max_steps": "6", "data.nonzero_repeat": "2"}
    assert rows["long"]["examples"] > rows["short"]["examples"]  # the repeat reached the trainer
    for row in rows.values():
        assert row["returncode"] == 0 and 0.0 <= row["dev_f"] <= 1.0
        assert [h["step"] for h in row["history"] if "dev_f" in h] == list(range(3, row["steps"] + 1, 3))
    table = (out / "candidates.md").read_text().splitlines()
    assert table[0].startswith("| candidate | base_model | method | lora_r |")
    assert sum(line.startswith("| long | ") for line in table) == 1
    assert (out / "candidates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failing_candidate_is_reported_with_its_log(tiny_base, tmp_path):
    config = tmp_path / "bad.cfg"
    config.write_text(CONFIG.format(base=tiny_base, train=tmp_path / "missing.jsonl", dev=tmp_path / "none.spacy",
                                    labels="[]"))
    out = tmp_path / "candidates"
    assert main([str(config), "--out", str(out), "--candidate", "x:training.max_steps=1"]) == 1
    row = json.loads((out / "candidates.json").read_text())["candidates"][0]
    assert row["returncode"] != 0 and "does not exist" in row["error"]


def test_candidates_one_at_a_time_report_their_speed(tiny_base, tmp_path):
    """``--one-at-a-time``: each candidate trains alone, in order; the rows give examples and tokens per second
    (with shared prompts, the same examples in fewer tokens)."""
    train = tiny.write_examples(tmp_path / "train.padellm.jsonl", tiny.SENTENCES, tiny.LABELS)
    dev = tiny.write_docbin(tmp_path / "dev.spacy", tiny.SENTENCES, tiny.LABELS)
    config = tmp_path / "tiny.cfg"
    config.write_text(CONFIG.format(base=tiny_base, train=train, dev=dev, labels=json.dumps(tiny.LABELS)))
    out = tmp_path / "candidates"
    assert main([str(config), "--out", str(out), "--one-at-a-time", "--common", "training.max_steps=4",
                 "--candidate", "examples:data.shared_prompts=false",
                 "--candidate", "shared:data.shared_prompts=true"]) == 0
    rows = {r["name"]: r for r in json.loads((out / "candidates.json").read_text())["candidates"]}
    first, second = rows["examples"], rows["shared"]
    assert second["started"] >= first["started"] + first["wall_s"] - 2.5  # after the first ended (polled every 2 s)
    for row in rows.values():
        assert row["steps"] == 4 and row["examples_per_second"] > 0 and row["tokens_per_second"] > 0
    # the same examples a second are written in fewer tokens when a text's prompt is shared
    assert second["tokens_per_second"] / second["examples_per_second"] < \
        first["tokens_per_second"] / first["examples_per_second"]
    table = (out / "candidates.md").read_text().splitlines()
    assert "| shared_prompts | batch_size | steps | train s | examples/s | tokens/s |" in table[0]


def test_a_running_candidate_is_pending_and_nested_scores_show(tmp_path):
    from train_candidates import collect, render_markdown

    done = tmp_path / "done"
    done.mkdir()
    (done / "summary.json").write_text(json.dumps({
        "steps": 10, "examples": 80, "train_seconds": 5.0,
        "best": {"step": 9, "score": 0.7, "scores": {"spans_sc_p": 0.75, "spans_sc_r": 0.65, "spans_sc_f": 0.7}}}))
    (tmp_path / "running").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train.log").write_text("Traceback\nValueError: bad\n")
    candidates = {"done": {}, "running": {}, "broken": {}}
    (tmp_path / "running" / "summary.json").write_text('{"steps": 3, "be')  # half written while it trains
    rows = {r["name"]: r for r in collect(tmp_path, candidates, {}, {"done": {"returncode": 0}, "broken": {}},
                                          running=["running"])}
    assert rows["running"]["pending"] and "error" not in rows["running"] and "dev_f" not in rows["running"]
    assert "ValueError: bad" in rows["broken"]["error"] and "pending" not in rows["broken"]
    table = render_markdown(list(rows.values()))
    done_line = next(line for line in table.splitlines() if line.startswith("| done |"))
    assert "| 0.7500 | 0.6500 | 0.7000 |" in done_line  # the span group's P and R, not blanks
    assert next(line for line in table.splitlines() if line.startswith("| running |")).count("pending") == 1


def test_each_finished_candidate_is_reported_at_once():
    from train_candidates import _wait

    class Proc:
        def __init__(self, polls):
            self.polls, self.returncode = list(polls), None

        def poll(self):
            self.returncode = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
            return self.returncode

    seen = []
    done = _wait({"a": (Proc([None, 0]), 0.0), "b": (Proc([None, None, None, 1]), 0.0)},
                 lambda now: seen.append(sorted(now)))
    assert seen == [["a"], ["a", "b"]]
    assert done["a"]["returncode"] == 0 and done["b"]["returncode"] == 1
