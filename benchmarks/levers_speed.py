"""``python benchmarks/levers_speed.py PIPELINE DATA.spacy``: what the decoding levers and the fused kernels cost and
bring, side by side.

One pipeline, its model loaded once, decodes the gold docs of DATA (a DocBin) under each variant of the levers:
``recorded`` (the settings as configured: ``constrain_mentions`` and ``dedupe_mentions`` left null follow the model
folder's record, which the shipped default model sets on) and ``off`` (both turned off); with ``--unfused``, each
also with ``fused_kernels`` off (``recorded, unfused`` and ``off, unfused``; on the CPU, where the setting does
nothing, they are the same). For each, in this order: one document alone (the time of this first call holds the
compiling of the fused steps), one warm-up pass over every doc (CUDA graphs captured; its entities give the span
P/R/F1, and against the fused variant's the share of docs with the same entities), ``nlp.pipe`` over every doc
``--rounds`` times (the best is reported: sentences per second, and its forward passes), then ``--latency-docs`` docs
one at a time after ``--warm-docs`` (batch size 1: the median and 90th percentile in ms, the forward passes per doc
and the CUDA graphs captured among them; ``--warm-timed`` runs the timed docs once before, so that none is).
``--variant NAME:KEY=VALUE,...`` adds variants of other decoding settings (over the component's own; e.g. more
drafts), each compared with ``recorded``: the share of docs with its entities in ``nlp.pipe`` and one at a time (a
wide ``nlp.pipe`` batch may decode without drafts, ``draft_max_docs``), and ratios. Prints a markdown table;
``--output`` writes the JSON, the table (.md) and a PNG next to it.

    python benchmarks/levers_speed.py padellm:conll03-gemma3-270m corpus/conll03/conll03_test.spacy \\
        --gpu-id 0 --unfused --output metrics/levers_speed.json      # or: spacy project run levers-speed
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import forward_passes, load_gold, open_pipeline, select_device  # noqa: E402
from report import write_outputs  # noqa: E402
from results import agreement  # noqa: E402
from settings_sweep import check_variants, variant_arg_except  # noqa: E402

VARIANTS = {"recorded": {}, "off": {"constrain_mentions": False, "dedupe_mentions": False}}
COLORS = ["#4c72b0", "#dd8452", "#8fa8d0", "#eeb48f", "#55a868", "#c44e52", "#8172b3"]
UNFUSED = {f"{name}, unfused": {**changes, "fused_kernels": False} for name, changes in VARIANTS.items()}


def _sync(device: Optional[str]) -> None:
    if device and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _kernels(ner) -> str:
    """Whether the component's static engine runs its passes with the fused steps."""
    lm = getattr(ner.decoder, "lm", None)
    if lm is None or not hasattr(lm, "kernels"):
        return "-"
    return "fused" if lm.kernels is not None else "unfused"


def _entities(docs) -> List[List[Tuple[int, int, str]]]:
    return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]


def measure(nlp, ner, gold: List[Any], base, changes: Dict[str, Any], args, device: Optional[str]) -> Dict[str, Any]:
    """One variant: the first call's time, span scores of a warm-up pass, the best ``nlp.pipe`` rate, batch-1
    latencies (and, under ``entities``, the warm-up pass's entities per doc); ``base``: the settings ``changes`` apply
    to (the component's own, not the last variant's)."""
    from spacy.training import Example

    from spacy_padellm.pipeline.scoring import score_padellm

    from spacy_padellm.decoding.static_lm import StaticLM

    ner.use_settings(base.replace(**changes))
    texts = [doc.text for doc in gold]
    _sync(device)
    start = time.perf_counter()
    nlp(texts[0])
    _sync(device)
    first = time.perf_counter() - start
    preds = list(nlp.pipe(texts, batch_size=args.batch_size))
    scores = score_padellm([Example(p, g) for p, g in zip(preds, gold)])
    list(nlp.pipe(texts, batch_size=args.batch_size))  # a second warm-up: a cache grown in the first is settled
    captures = StaticLM.all_captures
    best = passes = None
    for _ in range(args.rounds):
        _sync(device)
        before = forward_passes(ner.decoder, 0)
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=args.batch_size))
        _sync(device)
        seconds = time.perf_counter() - start
        if best is None or seconds < best:
            best, passes = seconds, forward_passes(ner.decoder, 0) - before
    captures = StaticLM.all_captures - captures
    timed = texts[args.warm_docs: args.warm_docs + args.latency_docs]
    for text in texts[: args.warm_docs] + (timed if args.warm_timed else []):
        nlp(text)
    times, batch1_docs = [], []
    before, batch1_captures = forward_passes(ner.decoder, 0), StaticLM.all_captures
    for text in timed:
        _sync(device)
        start = time.perf_counter()
        doc = nlp(text)
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
        batch1_docs.append(doc)
    batch1_passes = forward_passes(ner.decoder, 0) - before
    batch1_captures = StaticLM.all_captures - batch1_captures
    times.sort()
    return {"levers": ner.levers, "kernels": _kernels(ner), "changes": changes, "first_call_s": round(first, 2),
            "entities": _entities(preds), "batch1_entities": _entities(batch1_docs),
            "sentences_per_s": round(len(texts) / best, 1),
            "graph_captures_timed": captures, "graph_captures_batch1": batch1_captures, "forward_passes": passes,
            "batch1_median_ms": round(statistics.median(times), 3) if times else None,
            "batch1_p90_ms": round(times[int(0.9 * (len(times) - 1))], 3) if times else None,
            "batch1_passes_per_doc": round(batch1_passes / len(times), 3) if times and batch1_passes else None,
            "latency_docs": len(times), "p": round(scores["ents_p"] or 0.0, 4),
            "r": round(scores["ents_r"] or 0.0, 4), "f": round(scores["ents_f"] or 0.0, 4)}


def run(args) -> Dict[str, Any]:
    import torch

    if not Path(args.data).exists():
        raise FileNotFoundError(f"no such DocBin: {args.data}")
    device = select_device(args.device, args.gpu_id)
    nlp, ner, _ = open_pipeline(args.pipeline, None, None, device, None)
    gold = load_gold(args.data, nlp.vocab, args.max_docs)
    custom = dict(args.variant)
    variants = {**VARIANTS, **(UNFUSED if args.unfused else {}), **custom}
    base = ner.settings
    rows = {name: measure(nlp, ner, gold, base, changes, args, device) for name, changes in variants.items()}
    for name, row in rows.items():
        fused = rows.get(name.replace(", unfused", ""))
        row["same_docs_as_fused"] = None if fused is row or name in custom else agreement(row["entities"],
                                                                                             fused["entities"])
        if name in custom:
            # nlp.pipe's batches may decode without drafts (draft_max_docs): the one-at-a-time docs are compared too
            ref = rows["recorded"]
            row["same_docs_as_recorded"] = agreement(row["entities"], ref["entities"])
            row["same_batch1_docs_as_recorded"] = agreement(row["batch1_entities"], ref["batch1_entities"])
    for row in rows.values():
        del row["entities"], row["batch1_entities"]
    dev = torch.cuda.get_device_name(torch.device(device)) if device and device.startswith("cuda") else "cpu"
    report = {"pipeline": args.pipeline, "data": args.data, "docs": len(gold), "device": dev,
              "batch_size": args.batch_size, "rounds": args.rounds, "rows": rows,
              "recorded_vs_off": _ratios(rows["recorded"], rows["off"])}
    if args.unfused:
        report["fused_vs_unfused"] = {name: _ratios(rows[name], rows[f"{name}, unfused"]) for name in VARIANTS}
    if args.variant:
        report["variants_vs_recorded"] = {name: _ratios(rows[name], rows["recorded"]) for name, _ in args.variant}
    return report


def _ratios(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    """Variant ``a`` against ``b``: throughput and batch-1 median as ratios, span F1 as a difference in points."""
    return {"throughput": round(a["sentences_per_s"] / b["sentences_per_s"], 3),
            "batch1_median": (round(a["batch1_median_ms"] / b["batch1_median_ms"], 3)
                              if a["batch1_median_ms"] and b["batch1_median_ms"] else None),
            "span_f1_points": round(100 * (a["f"] - b["f"]), 2)}


def render_markdown(report: Dict[str, Any]) -> str:
    lines = [f"{report['docs']} docs of {report['data']}, {report['device']}, nlp.pipe batch {report['batch_size']}",
             "", "| variant | levers | kernels | span P | R | **F1** | same docs as fused (variants: as recorded) | "
             "nlp.pipe sentences/s | "
             "batch-1 median ms | p90 ms | batch-1 passes per doc | first call s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in report["rows"].items():
        share = row["same_docs_as_fused"] if row["same_docs_as_fused"] is not None else row.get(
            "same_docs_as_recorded")
        same = "-" if share is None else f"{100 * share:.2f}%"
        if row.get("same_batch1_docs_as_recorded") is not None:
            same += f" ({100 * row['same_batch1_docs_as_recorded']:.2f}% one at a time)"
        lines.append(f"| {name} | {', '.join(row['levers']) or 'none'} | {row['kernels']} | {row['p']:.4f} | "
                     f"{row['r']:.4f} | **{row['f']:.4f}** | {same} | {row['sentences_per_s']:,} | "
                     f"{row['batch1_median_ms']} | {row['batch1_p90_ms']} | {row.get('batch1_passes_per_doc')} | "
                     f"{row['first_call_s']} |")
    pairs = [("recorded / off", report["recorded_vs_off"])]
    pairs += [(f"{name} / {name}, unfused", r) for name, r in report.get("fused_vs_unfused", {}).items()]
    pairs += [(f"{name} / recorded", r) for name, r in report.get("variants_vs_recorded", {}).items()]
    lines.append("")
    lines += [f"{what}: throughput {r['throughput']}x, batch-1 median {r['batch1_median']}x, span F1 "
              f"{r['span_f1_points']:+} points" for what, r in pairs]
    return "\n".join(lines) + "\n"


def render_plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["rows"])
    rows = [report["rows"][n] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(10, 1.2 + 0.45 * len(names)))
    for ax, key, label in ((axes[0], "sentences_per_s", "nlp.pipe sentences/s"),
                           (axes[1], "batch1_median_ms", "batch-1 median ms")):
        values = [row[key] or 0 for row in rows]
        bars = ax.barh(names, values, color=[COLORS[i % len(COLORS)] for i in range(len(names))])
        for bar, row in zip(bars, rows):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {bar.get_width():,.1f}, F1 {row['f']:.4f}",
                    va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.set_xlim(0, 1.45 * max(values + [1]))
        ax.invert_yaxis()
    fig.suptitle(f"decoding levers and fused kernels: {report['docs']} docs, {report['device']}", fontsize=9)
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
    p.add_argument("--warm-timed", action="store_true",
                   help="also run the timed docs once, untimed, before timing them: every pass shape's CUDA graph is "
                        "then captured before the clock runs (steady-state latency)")
    p.add_argument("--latency-docs", type=int, default=300, help="docs timed one at a time")
    p.add_argument("--unfused", action="store_true", help="also each variant with fused_kernels off")
    p.add_argument("--variant", action="append", default=[], type=variant_arg_except(*VARIANTS, *UNFUSED), metavar="NAME:KEY=VALUE,...",
                   help="also these decoding settings (over the component's own), e.g. count_drafts=5,span_drafts=8; "
                        "repeatable, measured after the others in order")
    p.add_argument("--output", type=Path, default=None, help="JSON path (a PNG is written next to it)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.variant:
        try:
            check_variants(args.variant)
        except ValueError as err:
            parser.error(f"--variant: {err}")
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
