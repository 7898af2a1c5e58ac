"""``python benchmarks/spacy_peer/crossner.py``: spaCy's ``ner`` trained and scored per domain, one report of the
shape the padellm benchmark writes."""

import importlib.util
import json
from pathlib import Path

import tiny

# benchmarks/spacy_peer/crossner.py under a name of its own: benchmarks/crossner.py is imported as "crossner"
_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "spacy_peer" / "crossner.py"
_spec = importlib.util.spec_from_file_location("spacy_peer_crossner", _SCRIPT)
peer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer)
main = peer.main


def test_each_domain_trained_evaluated_and_reported(tmp_path, capsys):
    for domain in ("ai", "music"):
        (tmp_path / "corpus" / domain).mkdir(parents=True)
        for split in ("train", "dev", "test"):
            tiny.write_docbin(tmp_path / "corpus" / domain / f"{split}.spacy", tiny.SENTENCES, tiny.LABELS)
    out = tmp_path / "report.json"
    assert main([str(tmp_path / "corpus"), str(tmp_path / "peer"), "--domains", "ai,music", "--jobs", "2",
                 "--max-steps", "20", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["system"] == "spaCy ner" and list(report["domains"]) == ["ai", "music"]
    for domain, row in report["domains"].items():
        scores = json.loads((tmp_path / "peer" / domain / "test.json").read_text())  # spacy evaluate's output
        assert (row["p"], row["r"], row["f"]) == tuple(round(scores[k], 4) for k in ("ents_p", "ents_r", "ents_f"))
        assert row["gold"] == sum(len(m) for _, m in tiny.SENTENCES)
    assert "--training.max_steps 20" in report["commands"][0]
    assert not out.with_suffix(".png").exists()  # the JSON alone
    assert capsys.readouterr().out.startswith("| domain | spaCy ner P |")
