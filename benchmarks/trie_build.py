"""``python benchmarks/trie_build.py``: host time of the mention tries of ``constrain_mentions``, two ways.

The mention lever holds each document's mentions to a trie over every candidate span of its text
(``MentionTrie.build``), on the host. This times, on the first ``--docs`` sentences of a PaDeLLM JSONL file (CoNLL03
test by default), what a constrained decode asks of it: the trie of the sentence, then along the way of each of its
gold mentions the allowed ids at every step (a sentence with none: the first step of one mention). Two ways: as
``constrain_mentions`` runs it (``decoding/trie_paths.py``: the text's chunk paths from cached chunk ids, nodes made
as the steps reach them) and the long way (every candidate string encoded and inserted from the root), after a
warm-up over the same sentences that fills the chunk cache of both; and it checks that both hold the same sequences
for every sentence. Prints a table; ``--output`` writes JSON and a PNG next to it.
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


def walk(trie, ways: List[List[int]]) -> None:
    """The allowed ids at every step of each way (token ids), as a constrained decode reads them."""
    for ids in ways or [[]]:
        node = trie.root
        for tok in ids + [None]:
            trie.allowed_ids(node)
            if tok is None:
                break
            node = trie.advance(node, tok)
            if node is None:
                break


def timed(build, texts: List[str], ways: List[List[List[int]]], rounds: int) -> float:
    """Best of ``rounds`` of building every text's trie and walking its mentions' ``ways``: milliseconds per text."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for text, its in zip(texts, ways):
            walk(build(text), its)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / len(texts)


def run(model: str, data: Path, docs: int, rounds: int) -> Dict:
    import spacy

    from spacy_padellm.decoding.constraints import MentionTrie

    records = [json.loads(line) for line in data.open(encoding="utf8")][:docs]
    texts = [rec[0] for rec in records]
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": model, "device": "cpu"})
    encoder = ner._ensure_loaded()[2].encoder
    paths = lambda text: MentionTrie.build(text, encoder)  # noqa: E731
    whole = lambda text: long_way(text, encoder)  # noqa: E731
    ways = [[encoder.mention(e[2]) for e in rec[1:]] for rec in records]
    built = [(paths(t), whole(t)) for t in texts]  # also the warm-up of both
    same = sum(fast.sequences() == slow.sequences() for fast, slow in built)
    rows = [{"method": "chunk paths, nodes made as reached (constrain_mentions)",
             "ms_per_sentence": timed(paths, texts, ways, rounds)},
            {"method": "every candidate from the root", "ms_per_sentence": timed(whole, texts, ways, rounds)}]
    for row in rows:
        row["x_faster_than_long_way"] = rows[1]["ms_per_sentence"] / row["ms_per_sentence"]
    return {"command": "python benchmarks/trie_build.py " + " ".join(sys.argv[1:]), "model": model,
            "data": str(data), "docs": len(texts), "rounds": rounds, "same_sequences": same,
            "mentions_walked": sum(map(len, ways)),
            "sequences_per_sentence": sum(len(fast) for fast, _ in built) / len(texts),
            "cpu": platform.processor() or platform.machine(), "rows": rows}


def table(report: Dict) -> str:
    lines = [f"Mention tries of {report['docs']} sentences ({report['sequences_per_sentence']:.0f} sequences each), "
             f"built and walked along {report['mentions_walked']} gold mentions, the same sequences both ways in "
             f"{report['same_sequences']} of {report['docs']}:", "",
             "| trie | ms per sentence | × the long way |", "| --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['ms_per_sentence']:.3f} | {r['x_faster_than_long_way']:.2f}x |"
              for r in report["rows"]]
    return "\n".join(lines)


def plot(report: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6))
    names = [r["method"] for r in report["rows"]]
    values = [r["ms_per_sentence"] for r in report["rows"]]
    ax.barh(names, values, color=["#1f77b4", "#aaaaaa"])
    for i, v in enumerate(values):
        ax.annotate(f"{v:.2f} ms", (v, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9)
    ax.set_xlabel("host ms per sentence")
    ax.invert_yaxis()
    ax.margins(x=0.25)
    ax.set_title(f"Mention tries built and walked, {report['docs']} sentences")
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
