"""``python benchmarks/trie_build.py``: host time to build the mention tries of ``constrain_mentions``, two ways.

The mention lever builds one trie per document over every candidate span of its text (``MentionTrie.build``), on
the host, before the document's mentions can be decoded. This times, on the first ``--docs`` sentences of a PaDeLLM
JSONL file (CoNLL03 test by default), the whole build as ``constrain_mentions`` runs it (one path per start, from
cached chunk ids: ``decoding/trie_paths.py``) against the long way (every candidate string encoded and inserted
from the root), after a warm-up over the same sentences that fills the chunk cache of both, and checks that both
hold the same sequences for every sentence. Prints a table; ``--output`` writes JSON and a PNG next to it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_speed import DATA  # noqa: E402


def long_way(text: str, encoder):
    from spacy_padellm.decoding.constraints import MentionTrie, candidate_strings

    trie = MentionTrie(eos_id=encoder.eos_id)
    trie.add_all(encoder.mentions(candidate_strings(text)))
    return trie


def timed(build, texts: List[str], rounds: int) -> float:
    """Best of ``rounds`` of building every text's trie: milliseconds per text."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for text in texts:
            build(text)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / len(texts)


def run(model: str, data: Path, docs: int, rounds: int) -> Dict:
    import spacy

    from spacy_padellm.decoding.constraints import MentionTrie

    texts = [json.loads(line)[0] for line in data.open(encoding="utf8")][:docs]
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": model, "device": "cpu"})
    encoder = ner._ensure_loaded()[2].encoder
    paths = lambda text: MentionTrie.build(text, encoder)  # noqa: E731
    whole = lambda text: long_way(text, encoder)  # noqa: E731
    built = [(paths(t), whole(t)) for t in texts]  # also the warm-up of both
    same = sum(fast.sequences() == slow.sequences() for fast, slow in built)
    rows = [{"method": "one path per start (constrain_mentions)", "ms_per_sentence": timed(paths, texts, rounds)},
            {"method": "every candidate from the root", "ms_per_sentence": timed(whole, texts, rounds)}]
    for row in rows:
        row["x_faster_than_long_way"] = rows[1]["ms_per_sentence"] / row["ms_per_sentence"]
    return {"command": "python benchmarks/trie_build.py " + " ".join(sys.argv[1:]), "model": model,
            "data": str(data), "docs": len(texts), "rounds": rounds, "same_sequences": same,
            "sequences_per_sentence": sum(len(fast) for fast, _ in built) / len(texts),
            "cpu": platform.processor() or platform.machine(), "rows": rows}


def table(report: Dict) -> str:
    lines = [f"Mention tries of {report['docs']} sentences ({report['sequences_per_sentence']:.0f} sequences each), "
             f"the same sequences both ways in {report['same_sequences']} of {report['docs']}:", "",
             "| build | ms per sentence | × the long way |", "| --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['ms_per_sentence']:.3f} | {r['x_faster_than_long_way']:.2f}x |"
              for r in report["rows"]]
    return "\n".join(lines)


def plot(report: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.6))
    names = [r["method"] for r in report["rows"]]
    values = [r["ms_per_sentence"] for r in report["rows"]]
    ax.barh(names, values, color=["#1f77b4", "#aaaaaa"])
    for i, v in enumerate(values):
        ax.annotate(f"{v:.2f} ms", (v, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
    ax.set_xlabel("host ms per sentence")
    ax.invert_yaxis()
    ax.margins(x=0.25)
    ax.set_title(f"Mention trie build, {report['docs']} sentences")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="padellm:conll03-gemma3-270m")
    p.add_argument("--data", type=Path, default=DATA, help="PaDeLLM JSONL (first field of each line: the text)")
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--output", type=Path, default=None, help="JSON; a PNG goes next to it")
    args = p.parse_args(argv)
    report = run(args.model, args.data, args.docs, args.rounds)
    print(table(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        plot(report, args.output.with_suffix(".png"))
    return 0 if report["same_sequences"] == report["docs"] else 1


if __name__ == "__main__":
    sys.exit(main())
