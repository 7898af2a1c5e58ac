"""``python benchmarks/crossner.py`` end to end on the CPU: CrossNER-style column files (tab, BIO, lowercase labels)
of two domains -> convert -> the tiny base fine-tuned per domain in parallel -> evaluate -> one report; and the
scores' arithmetic."""

import json
import sys
from pathlib import Path

import pytest

import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their siblings

from crossner import main  # noqa: E402
from crossner_scores import averages, domain_row, render_table  # noqa: E402
from crossner_scores import main as table_main  # noqa: E402

LOWER = {"PER": "person", "LOC": "location", "ORG": "organisation", "MISC": "misc"}
N_GOLD = sum(len(m) for _, m in tiny.SENTENCES)


def bio_lines(text, mentions):
    """``token<TAB>tag`` lines of a sentence, as CrossNER's files hold them."""
    starts, tags, offset = [], [], 0
    for token in text.split(" "):
        starts.append(offset)
        offset += len(token) + 1
        tags.append("O")
    for start, end, label in tiny.char_spans(text, mentions):
        inside = [i for i, s in enumerate(starts) if start <= s < end]
        tags[inside[0]] = f"B-{LOWER[label]}"
        for i in inside[1:]:
            tags[i] = f"I-{LOWER[label]}"
    return [f"{tok}\t{tag}" for tok, tag in zip(text.split(" "), tags)]


def write_domain(folder: Path) -> None:
    folder.mkdir(parents=True)
    body = "\n\n".join("\n".join(bio_lines(text, mentions)) for text, mentions in tiny.SENTENCES) + "\n"
    for split in ("train", "dev", "test"):
        (folder / f"{split}.txt").write_text(body, encoding="utf-8")


@pytest.fixture(scope="module")
def crossner_run(tiny_base, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crossner")
    for domain in ("ai", "music"):  # "politics" has no files: its conversion fails, the others go on
        write_domain(tmp / "raw" / domain)
    out = tmp / "out"
    argv = ["--base", str(tiny_base), "--data", str(tmp / "raw"), "--out", str(out), "--gpu-id", "-1",
            "--max-minutes", "5", "--domains", "ai,music,politics",
            "--set", "training.method=full", "--set", "training.max_steps=300", "--set", "training.batch_size=16",
            "--set", "training.lr=0.003", "--set", "training.warmup_ratio=0", "--set", "training.eval_every=150",
            "--candidate", "fast", "--candidate", "slow=training.lr=0.00001,training.max_steps=150", "--tune"]
    code = main(argv)
    return code, out, json.loads((out / "crossner.json").read_text())


def test_each_domain_is_converted_trained_and_scored(crossner_run):
    code, out, report = crossner_run
    assert code == 1  # politics failed
    assert list(report["domains"]) == ["ai", "music"]
    for domain in ("ai", "music"):
        labels = json.loads((out / "corpus" / domain / "train.labels.json").read_text())
        assert labels == ["location", "misc", "organisation", "person"]  # taken from the data
        row = report["domains"][domain]
        assert row["gold"] == N_GOLD
        assert row["p"] == row["r"] == row["f"] == 1.0  # the tiny sentences memorised
        assert row["tp"] == row["pred"] == N_GOLD
        assert row["steps"] == 300 and row["best_step"] in (150, 300)
        assert json.loads((out / "training" / "fast" / domain / "best" / "padellm.json").read_text())["labels"] == labels
        assert row["tuned_dev_f"] == 1.0 and row["variant"] and set(row["count_bias"]) <= set(labels)
        assert report["untuned"]["domains"][domain]["f"] == 1.0
    assert report["average"]["micro"] == {"p": 1.0, "r": 1.0, "f": 1.0}


def test_candidates_train_at_once_and_the_best_on_dev_is_scored(crossner_run):
    """Both candidates train on every domain; the one that memorised dev is chosen; only it reaches the test
    split (metrics hold one plain and one tuned score per domain, nothing of the other candidate)."""
    _, out, report = crossner_run
    fast, slow = report["candidates"]["fast"], report["candidates"]["slow"]
    assert set(fast["dev_f"]) == set(slow["dev_f"]) == {"ai", "music"}
    assert fast["mean_dev_f"] == 1.0 > slow["mean_dev_f"] and report["chosen"] == "fast"
    assert "training.max_steps=150" in slow["overrides"] and "training.lr=0.003" in slow["overrides"]
    assert (out / "training" / "slow" / "ai" / "summary.json").exists()
    assert sorted(p.name for p in (out / "metrics").iterdir()) == [
        "ai.test.json", "ai.tuned.test.json", "music.test.json", "music.tuned.test.json"]
    assert (out / "tuned" / "ai" / "tune.json").exists()


def test_failures_and_outputs_are_reported(crossner_run):
    _, out, report = crossner_run
    assert list(report["failed"]) == ["politics"] and "convert exited with" in report["failed"]["politics"]
    assert (out / "logs" / "politics.convert.log").read_text().strip()
    assert "--training.max_minutes 5.0" in report["train_command"]
    assert report["command"].startswith("python benchmarks/crossner.py --base ")
    md = (out / "crossner.md").read_text().splitlines()
    assert md[0] == "| domain | padellm P | padellm R | padellm F1 |"
    assert md[2:] == ["| ai | 100.00 | 100.00 | 100.00 |", "| music | 100.00 | 100.00 | 100.00 |",
                      "| micro-average | 100.00 | 100.00 | 100.00 |", "| macro-average | 100.00 | 100.00 | 100.00 |"]
    assert (out / "crossner.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_micro_pools_the_counts_and_macro_averages_the_scores():
    a = domain_row({"ents_p": 0.5, "ents_r": 0.25, "ents_f": 1 / 3}, n_gold=40)  # tp 10, 20 predicted
    b = domain_row({"ents_p": 0.9, "ents_r": 0.9, "ents_f": 0.9}, n_gold=10)  # tp 9, 10 predicted
    assert (a["tp"], a["pred"], b["tp"], b["pred"]) == (10, 20, 9, 10)
    avg = averages({"a": a, "b": b})
    assert avg["micro"] == {"p": round(19 / 30, 4), "r": round(19 / 50, 4), "f": round(2 * 19 / 80, 4)}
    assert avg["macro"] == {"p": 0.7, "r": 0.575, "f": round((a["f"] + 0.9) / 2, 4)}
    none_right = domain_row({"ents_p": 0.0, "ents_r": 0.0, "ents_f": 0.0}, n_gold=5)
    assert none_right["pred"] is None  # precision 0 does not tell how many were predicted
    assert averages({"a": a, "z": none_right})["micro"] == {"p": None, "r": round(10 / 45, 4), "f": None}


def test_table_puts_reports_side_by_side():
    row = domain_row({"ents_p": 0.5, "ents_r": 0.5, "ents_f": 0.5}, n_gold=4)
    peer = {"domains": {"ai": row}, "average": averages({"ai": row})}
    lines = render_table({"spaCy ner": peer, "padellm": None}).splitlines()
    assert lines[0] == "| domain | spaCy ner P | spaCy ner R | spaCy ner F1 | padellm P | padellm R | padellm F1 |"
    assert lines[2] == "| ai | 50.00 | 50.00 | 50.00 |  |  |  |"
    assert lines[3] == "| micro-average | 50.00 | 50.00 | 50.00 |  |  |  |"


def test_table_of_saved_reports(crossner_run, tmp_path, capsys):
    _, out, report = crossner_run
    peer = {**report, "system": "spaCy ner", "domains": {"ai": report["domains"]["ai"]}}
    (tmp_path / "peer.json").write_text(json.dumps(peer))
    assert table_main([str(tmp_path / "peer.json"), str(out / "crossner.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| domain | spaCy ner P |") and lines[0].endswith("| padellm F1 |")
    assert lines[3] == "| music |  |  |  | 100.00 | 100.00 | 100.00 |"


def test_plot_of_several_reports(tmp_path, capsys):
    row = domain_row({"ents_p": 0.5, "ents_r": 0.5, "ents_f": 0.5}, n_gold=4)
    for name, domains in (("spaCy ner", {"ai": row, "music": row}), ("padellm", {"music": row})):
        report = {"system": name, "domains": domains, "average": averages(domains)}
        (tmp_path / f"{name}.json").write_text(json.dumps(report))
    png = tmp_path / "both.png"
    assert table_main([str(tmp_path / "spaCy ner.json"), str(tmp_path / "padellm.json"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.splitlines()[2] == "| ai | 50.00 | 50.00 | 50.00 |  |  |  |"
    with pytest.raises(SystemExit, match="--plot needs"):
        table_main([str(tmp_path / "padellm.json"), "--plot"])
