"""``python benchmarks/levers_speed.py PIPELINE DATA.spacy``: what the decoding levers cost and bring, side by side.

One pipeline, its model loaded once, decodes the gold docs of DATA (a DocBin) under each variant of the levers:
``recorded`` (the settings as configured: ``constrain_mentions`` and ``dedupe_mentions`` left null follow the model
folder's record, which the shipped default model sets on) and ``off`` (both turned off). For each, in this order:
one warm-up pass over every doc (CUDA graphs captured; its entities give the span P/R/F1), ``nlp.pipe`` over every
doc ``--rounds`` times (the best is reported, sentences per second), then ``--latency-docs`` docs one at a time
after ``--warm-docs`` (batch size 1: the median and 90th percentile in ms). Prints a markdown table; ``--output``
writes the JSON, the table (.md) and a PNG next to it.

    python benchmarks/levers_speed.py padellm:conll03-gemma3-270m corpus/conll03/conll03_test.spacy \\
        --gpu-id 0 --output metrics/levers_speed.json      # or: spacy project run levers-speed
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import load_gold, open_pipeline, select_device  # noqa: E402
from report import write_outputs  # noqa: E402

VARIANTS = {"recorded": {}, "off": {"constrain_mentions": False, "dedupe_mentions": False}}


def _sync(device: Optional[str]) -> None:
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure(nlp, ner, gold: List[Any], changes: Dict[str, Any], args, device: Optional[str]) -> Dict[str, Any]:
    """One variant: span scores of a warm-up pass, the best ``nlp.pipe`` rate, batch-1 latencies."""
    from spacy.training import Example

    from spacy_padellm.pipeline.scoring import score_padellm

    ner.use_settings(ner.settings.replace(**changes))
    texts = [doc.text for doc in gold]
    preds = list(nlp.pipe(texts, batch_size=args.batch_size))
    scores = score_padellm([Example(p, g) for p, g in zip(preds, gold)])
    best = None
    for _ in range(args.rounds):
        _sync(device)
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=args.batch_size))
        _sync(device)
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
    for text in texts[: args.warm_docs]:
        nlp(text)
    times = []
    for text in texts[args.warm_docs: args.warm_docs + args.latency_docs]:
        _sync(device)
        start = time.perf_counter()
        nlp(text)
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    times.sort()
    return {"levers": ner.levers, "changes": changes, "sentences_per_s": round(len(texts) / best, 1),
            "batch1_median_ms": round(statistics.median(times), 3) if times else None,
            "batch1_p90_ms": round(times[int(0.9 * (len(times) - 1))], 3) if times else None,
            "latency_docs": len(times), "p": round(scores["ents_p"] or 0.0, 4),
            "r": round(scores["ents_r"] or 0.0, 4), "f": round(scores["ents_f"] or 0.0, 4)}


def run(args) -> Dict[str, Any]:
    import torch

    if not Path(args.data).exists():
        raise FileNotFoundError(f"no such DocBin: {args.data}")
    device = select_device(args.device, args.gpu_id)
    nlp, ner, _ = open_pipeline(args.pipeline, None, None, device, None)
    gold = load_gold(args.data, nlp.vocab, args.max_docs)
    rows = {name: measure(nlp, ner, gold, changes, args, device) for name, changes in VARIANTS.items()}
    on, off = rows["recorded"], rows["off"]
    ratios = {"throughput": round(on["sentences_per_s"] / off["sentences_per_s"], 3),
              "batch1_median": (round(on["batch1_median_ms"] / off["batch1_median_ms"], 3)
                                if on["batch1_median_ms"] and off["batch1_median_ms"] else None),
              "span_f1_points": round(100 * (on["f"] - off["f"]), 2)}
    dev = torch.cuda.get_device_name(torch.device(device)) if device and device.startswith("cuda") else "cpu"
    return {"pipeline": args.pipeline, "data": args.data, "docs": len(gold), "device": dev,
            "batch_size": args.batch_size, "rounds": args.rounds, "rows": rows, "recorded_vs_off": ratios}


def render_markdown(report: Dict[str, Any]) -> str:
    lines = [f"{report['docs']} docs of {report['data']}, {report['device']}, nlp.pipe batch {report['batch_size']}",
             "", "| variant | levers | span P | R | **F1** | nlp.pipe sentences/s | batch-1 median ms | p90 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {', '.join(row['levers']) or 'none'} | {row['p']:.4f} | {row['r']:.4f} | "
                     f"**{row['f']:.4f}** | {row['sentences_per_s']:,} | {row['batch1_median_ms']} | "
                     f"{row['batch1_p90_ms']} |")
    r = report["recorded_vs_off"]
    lines.append(f"\nrecorded / off: throughput {r['throughput']}x, batch-1 median {r['batch1_median']}x, "
                 f"span F1 {r['span_f1_points']:+} points")
    return "\n".join(lines) + "\n"


def render_plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["rows"])
    rows = [report["rows"][n] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
    for ax, key, label in ((axes[0], "sentences_per_s", "nlp.pipe sentences/s"),
                           (axes[1], "batch1_median_ms", "batch-1 median ms")):
        values = [row[key] or 0 for row in rows]
        bars = ax.barh(names, values, color=["#4c72b0", "#dd8452"][: len(names)])
        for bar, row in zip(bars, rows):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {bar.get_width():,.1f}, F1 {row['f']:.4f}",
                    va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.set_xlim(0, 1.45 * max(values + [1]))
        ax.invert_yaxis()
    fig.suptitle(f"decoding levers: {report['docs']} docs, {report['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/levers_speed.py", description=__doc__.splitlines()[0])
    p.add_argument("pipeline", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("data", help="gold docs (DocBin)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: --gpu-id, else the CPU)")
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=1024, help="nlp.pipe batch size")
    p.add_argument("--rounds", type=int, default=2, help="timed nlp.pipe runs per variant (the best is reported)")
    p.add_argument("--warm-docs", type=int, default=50, help="docs run one at a time before the timed ones")
    p.add_argument("--latency-docs", type=int, default=300, help="docs timed one at a time")
    p.add_argument("--output", type=Path, default=None, help="JSON path (a PNG is written next to it)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as err:  # a missing DocBin, an empty one, a pipeline without padellm_ner
        print(f"error: {err}", file=sys.stderr)
        return 1
    table = render_markdown(report)
    print(table)
    if args.output is not None:
        write_outputs(report, table, str(args.output), render_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
