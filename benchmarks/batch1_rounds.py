"""``python benchmarks/batch1_rounds.py PIPELINE DATA.spacy --gpu-id 0 --variant NAME:KEY=VALUE,...``: batch-1 latency
of settings variants, taken in turn over several rounds in one process.

One sentence at a time is the measure most at the mercy of the host (its clock, other processes): a variant timed
once, after another, can look faster or slower by more than the change it makes. Here the component's own settings
("default") and each ``--variant`` are timed in turn, ``--rounds`` times: in each turn the variant's settings are
applied (its CUDA graphs captured again), ``--warm-docs`` docs run one at a time, then each of the ``--latency-docs``
docs after them is timed alone (``nlp(text)``, the device synchronised before and after). Each turn gives a median;
the report gives every turn's, the median of a variant's turns, and for each variant its turn's median over the
default's of the same round (the ratio of a pair measured side by side). The CUDA graphs captured among the timed
docs are counted (shapes the warm-up did not reach), and the time the host waited for the device per sentence
(``gpu_time.waits``: the rest of a sentence's time is host work, overlapping the device's or not). Prints a markdown
table; ``--output`` writes the JSON, the table (.md) and a PNG (each turn's median) next to it.

    python benchmarks/batch1_rounds.py padellm:conll03-gemma3-270m corpus/conll03/conll03_test.spacy --gpu-id 0 \\
        --variant sdpa:attention_kernel=sdpa --rounds 5 --output metrics/batch1_rounds.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import load_gold, open_pipeline, select_device  # noqa: E402
from gpu_time import waits  # noqa: E402
from report import publish  # noqa: E402
from settings_sweep import variant_arg_except  # noqa: E402

DEFAULT = "default"


def one_turn(nlp, ner, base, changes: Dict[str, Any], warm: List[str], timed: List[str], sync) -> Dict[str, Any]:
    """The batch-1 times of ``timed`` under ``changes``, after ``warm``: median, p10, p90 (ms), the mean wait for
    the device per sentence (ms), and the graphs captured among them."""
    from spacy_padellm.decoding.static_lm import StaticLM

    ner.use_settings(base.replace(**changes))
    for text in warm:
        nlp(text)
    captures = StaticLM.all_captures
    times, clock = [], [0.0]
    with waits(clock):
        for text in timed:
            sync()
            start = time.perf_counter()
            nlp(text)
            sync()
            times.append(1e3 * (time.perf_counter() - start))
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p10_ms": round(times[len(times) // 10], 3),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
            "wait_mean_ms": round(1e3 * clock[0] / len(timed), 3), "graph_captures": StaticLM.all_captures - captures}


def run(args) -> Dict[str, Any]:
    import torch

    device = select_device(args.device, args.gpu_id)
    nlp, ner, _ = open_pipeline(args.pipeline, None, None, device, None)
    engine = getattr(ner.decoder, "device", None)
    cuda = engine is not None and torch.device(engine).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    texts = [doc.text for doc in load_gold(args.data, nlp.vocab, args.warm_docs + args.latency_docs)]
    if len(texts) <= args.warm_docs:
        raise SystemExit(f"{len(texts)} docs: no doc left to time after --warm-docs {args.warm_docs}")
    warm, timed = texts[: args.warm_docs], texts[args.warm_docs:]
    variants = {DEFAULT: {}, **dict(args.variant)}
    base = ner.settings
    turns: Dict[str, List[Dict[str, Any]]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, changes in variants.items():
            turn = one_turn(nlp, ner, base, changes, warm, timed, sync)
            turns[name].append(turn)
            print(f"round {r + 1}, {name}: median {turn['median_ms']} ms", file=sys.stderr, flush=True)
    rows = {}
    for name, changes in variants.items():
        medians = [t["median_ms"] for t in turns[name]]
        ratios = [round(t["median_ms"] / d["median_ms"], 3) for t, d in zip(turns[name], turns[DEFAULT])]
        rows[name] = {"changes": changes, "turns": turns[name],
                      "median_of_turns_ms": round(statistics.median(medians), 3),
                      "ratio_to_default": ratios, "faster_than_default_in": sum(x < 1 for x in ratios)}
    return {"pipeline": args.pipeline, "data": args.data, "warm_docs": len(warm), "latency_docs": len(timed),
            "rounds": args.rounds, "device": torch.cuda.get_device_name(torch.device(engine)) if cuda else "cpu",
            "command": " ".join(sys.argv), "rows": rows}


def table(report: Dict[str, Any]) -> str:
    rounds = report["rounds"]
    lines = [f"Device: {report['device']}; `{report['pipeline']}`, {report['latency_docs']} docs timed one at a time "
             f"after {report['warm_docs']}, {rounds} rounds.", "",
             "| variant | settings | " + " | ".join(f"round {r + 1} ms" for r in range(rounds))
             + " | median of rounds ms | / default, per round | mean wait for the device ms, per round "
             "| graph captures in timed docs |",
             "| --- | --- |" + " --- |" * (rounds + 4)]
    for name, row in report["rows"].items():
        settings = ", ".join(f"{k}={v}" for k, v in row["changes"].items()) or "the component's own"
        lines.append(f"| {name} | {settings} | " + " | ".join(str(t["median_ms"]) for t in row["turns"])
                     + f" | **{row['median_of_turns_ms']}** | {', '.join(map(str, row['ratio_to_default']))} | "
                     + ", ".join(str(t["wait_mean_ms"]) for t in row["turns"]) + " | "
                     + ", ".join(str(t["graph_captures"]) for t in row["turns"]) + " |")
    return "\n".join(lines)


def plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in report["rows"].items():
        ax.plot(range(1, report["rounds"] + 1), [t["median_ms"] for t in row["turns"]], marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("batch-1 median ms")
    ax.set_xticks(range(1, report["rounds"] + 1))
    ax.legend()
    ax.set_title(f"{report['pipeline']}, {report['latency_docs']} docs one at a time, {report['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/batch1_rounds.py", description=__doc__.split("\n\n")[0])
    p.add_argument("pipeline", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("data", help="docs (DocBin)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: --gpu-id, else the CPU)")
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--variant", action="append", default=[], type=variant_arg_except(DEFAULT), metavar="NAME:KEY=VALUE,...",
                   help="settings over the component's own (repeatable); 'default' is the component's own")
    p.add_argument("--rounds", type=int, default=5, help="turns of every variant")
    p.add_argument("--warm-docs", type=int, default=200, help="docs run one at a time before each turn's timed ones")
    p.add_argument("--latency-docs", type=int, default=300, help="docs timed one at a time in each turn")
    p.add_argument("--output", default=None, help="JSON path (.md and .png written next to it)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.latency_docs < 1:
        p.error("--rounds and --latency-docs take at least 1")
    return publish(run(args), table, args.output, plot)


if __name__ == "__main__":
    sys.exit(main())
