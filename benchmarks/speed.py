"""``python benchmarks/speed.py PIPELINE DATA.spacy``: speed and accuracy of decoding methods, side by side.

PIPELINE is a spaCy pipeline folder with a ``padellm_ner`` component, a PaDeLLM model folder or
``padellm:NAME`` (see ``spacy_padellm.pipeline.load.load_pipeline``); DATA is a DocBin with gold entities
(or spans).

Every method of ``methods.METHODS`` runs inside the same pipeline: its decoder is swapped into the
component for the time of its measurements, so windowing, alignment, de-duplication and span writing are
identical and only decoding differs.

Per method: span- and string-level F1, per-sentence latency at batch size 1 (``nlp(text)``, one doc at a
time, the methods interleaved doc by doc so that machine noise hits them alike), sequential forward
passes and tokens per sentence (``DecoderStats`` deltas), ``nlp.pipe`` throughput at several batch sizes
(methods with ``throughput=True``), peak GPU memory on CUDA, and the speedup over ``reference`` (median
latency ratio on the docs both decoded). ``--anchor`` also times an encoder on the same texts and device
(``encoder_anchor.py``: RoBERTa-base's token classifier, random weights, bf16 on CUDA) at its own batch sizes, and
states padellm's best throughput as a fraction of the encoder's. Writes JSON (``--output``), a markdown table and a
PNG next to it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, Dict, List, Optional, Sequence

from encoder_anchor import EncoderAnchor, time_anchor
from measure import (build_runs, check_request, load_gold, open_pipeline, select_device, time_latency,
                     time_throughput, warm_texts, warm_up)
from methods import DEFAULT_METHODS, METHODS
from report import render_markdown, render_plot, write_outputs
from results import NOTES, PIPE_WARMUP, environment, method_results, timestamp
from timing import Clock, memory_floor

from spacy_padellm.pipeline.load import parse_settings

__all__ = ["benchmark", "main", "build_parser"]


def benchmark(pipeline: str, data: str, *, max_docs: Optional[int] = None, latency_docs: int = 200,
              reference_docs: int = 50, batch_sizes: Sequence[int] = (1, 8, 32, 128), warmup: int = 3,
              methods: Optional[Sequence[str]] = None, device: Optional[str] = None, gpu_id: int = -1,
              spans_key: Optional[str] = None, lang: Optional[str] = None, progress: bool = True,
              command: Optional[str] = None, compare: Optional[Dict[str, str]] = None,
              settings: Optional[Dict[str, Any]] = None, anchor_batch_sizes: Sequence[int] = (),
              anchor_tokenizer: Optional[str] = None) -> Dict[str, Any]:
    """Measure every method of ``methods`` (default: ``DEFAULT_METHODS``) on the docs of ``data``, the
    pipeline's decoding ``settings`` changed as given (some ``DecodeSettings`` keys).

    ``compare`` adds methods that are other pipelines (name -> pipeline folder or model), such as the
    autoregressive baselines: each runs its own component with its own model and decoding mode. Given
    ``anchor_batch_sizes``, the encoder anchor is timed too (tokenised by ``anchor_tokenizer``, a tokenizer folder,
    or the pipeline's tokenizer).
    """
    compare = dict(compare or {})
    methods = list(methods or DEFAULT_METHODS)
    check_request(methods, compare, data, batch_sizes)
    device = select_device(device, gpu_id)
    nlp, ner, engine = open_pipeline(pipeline, lang, spans_key, device, settings)
    model = ner._runtime[0]
    torch_device = next(model.parameters()).device
    clock = Clock(torch_device)
    gold = load_gold(data, nlp.vocab, max_docs)
    texts = [d.text for d in gold]
    n_words = sum(1 for d in gold for t in d if not t.is_space)

    runs = build_runs(methods, engine, nlp, ner, compare,
                      lambda path: open_pipeline(path, lang, spans_key, device))
    for run in runs:
        run.latency_docs = min(len(gold), reference_docs if run.slow else latency_docs)
    warm, n_warm, warm_disjoint = warm_texts(texts, warmup, max(r.latency_docs for r in runs))
    if n_warm:
        warm_up(runs, texts, warm, batch_sizes, progress)
    time_latency(runs, texts, clock, progress)
    for run in runs:
        if run.measures_throughput:
            time_throughput(run, texts, n_words, batch_sizes, clock, progress)
    anchor = _time_anchor(ner, torch_device, texts, anchor_batch_sizes, anchor_tokenizer, latency_docs, clock)
    floor = memory_floor(model, torch_device)  # weight bytes read per sequential pass over memory bandwidth

    key = spans_key or ner.spans_key
    results = method_results(runs, gold, key, floor, list(compare))
    settings = {
        "docs": len(gold), "words": n_words, "max_docs": max_docs, "latency_docs": latency_docs,
        "reference_docs": reference_docs, "batch_sizes": list(batch_sizes), "warmup_docs": n_warm,
        "warmup_docs_are_timed_docs": (bool(n_warm) and not warm_disjoint)
        or (1 in list(batch_sizes) and any(r.measures_throughput for r in runs)),
        "pipe_warmup": PIPE_WARMUP,
        "pipe_warmup_rounds": {r.name: r.pipe_rounds for r in runs if r.pipe_rounds is not None},
        "methods": [r.name for r in runs], "labels": list(ner.labels), "spans_key": key,
        "text_format": ner.text_format, "component_batch_size": ner.cfg["batch_size"],
        "max_batch_rows": ner.cfg["max_batch_rows"], "decode_settings": ner.decode_settings.to_config(),
    }
    speedup = (results.get("padellm", {}).get("speedup_vs_reference") or {}).get("median_latency_ratio")
    peaks = [r.peak_mb for r in runs if r.peak_mb is not None]
    return {"command": command, "timestamp": timestamp(), "pipeline": str(pipeline), "data": str(data),
            "environment": environment(model, torch_device), "settings": settings, "notes": NOTES,
            "methods": results, "speedup": speedup, "peak_gpu_memory_mb": max(peaks, default=None),
            "floor": floor, "compare": compare, "anchor": anchor,
            "padellm_vs_anchor": _fraction_of_anchor(results, anchor)}


def _time_anchor(ner, device, texts: Sequence[str], batch_sizes: Sequence[int], tokenizer: Optional[str],
                 latency_docs: int, clock: Clock) -> Optional[Dict[str, Any]]:
    """The encoder anchor's throughput and batch-1 latency on ``texts`` (None without batch sizes)."""
    if not batch_sizes:
        return None
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
    else:
        tok = ner._ensure_loaded()[1]
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    return time_anchor(EncoderAnchor(tok, str(device), dtype), texts, batch_sizes, latency_docs, clock.now)


def _fraction_of_anchor(results: Dict[str, Any], anchor: Optional[Dict[str, Any]]) -> Optional[float]:
    """padellm's best ``nlp.pipe`` sentences/s over the anchor's best."""
    best = ((results.get("padellm") or {}).get("throughput") or {}).get("best")
    if not anchor or not best:
        return None
    return round(best["sentences_per_second"] / anchor["best"]["sentences_per_second"], 3)


# --- Command line --------------------------------------------------------------------------------


def _batch_sizes(text: str) -> List[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"positive batch sizes expected, got {text!r}")
    return sizes


def _compare(items: Sequence[str]) -> Dict[str, str]:
    """``--compare NAME=PIPELINE`` items as a dict; ``NAME=`` (no pipeline, as from an empty project
    variable) is left out with a note."""
    out: Dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--compare expects NAME=PIPELINE, got {item!r}")
        if not path.strip():
            print(f"--compare {item}: no pipeline given, {name.strip()} left out", file=sys.stderr)
            continue
        out[name.strip()] = path.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/speed.py", description=__doc__.splitlines()[0])
    p.add_argument("pipeline", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("data", help=".spacy DocBin with gold entities")
    p.add_argument("--max-docs", type=int, default=None, help="use the first N docs (F1 and throughput)")
    p.add_argument("--latency-docs", type=int, default=200, help="docs timed one at a time (default 200)")
    p.add_argument("--reference-docs", type=int, default=50,
                   help="docs timed with the slow reference decoder (default 50)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 8, 32, 128],
                   help="nlp.pipe batch sizes for throughput (default 1,8,32,128)")
    p.add_argument("--warmup", type=int, default=3,
                   help="docs run one at a time per method before timing, from the end of the data (default 3)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {','.join(METHODS)} (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=PIPELINE",
                   help="also benchmark another pipeline or model as method NAME (e.g. autoreg_struct=PATH); "
                        "repeatable; NAME= with no pipeline is left out")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:K (default: follow spaCy/thinc)")
    p.add_argument("--gpu-id", type=int, default=-1, help="like spacy evaluate: use this GPU")
    p.add_argument("--spans-key", default=None)
    p.add_argument("--lang", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_items",
                   help="a decoding setting of the pipeline (python -m spacy_padellm settings lists them); repeatable")
    p.add_argument("--anchor", type=_batch_sizes, default=None, metavar="BATCH_SIZES",
                   help="also time the encoder anchor (RoBERTa-base token classifier, random weights) at these "
                        "batch sizes, e.g. 64,256,1024")
    p.add_argument("--anchor-tokenizer", default=None,
                   help="tokenizer folder for the anchor (default: the pipeline's tokenizer)")
    p.add_argument("--output", default=None, help="metrics JSON; a .md table and a .png plot go next to it")
    p.add_argument("--no-progress", action="store_true")
    return p


def _command(args) -> str:
    """The command line that reproduces this run, as recorded in the report."""
    argv = ["python", "benchmarks/speed.py", str(args.pipeline), str(args.data)]
    for flag, dest in (("--max-docs", "max_docs"), ("--latency-docs", "latency_docs"),
                       ("--reference-docs", "reference_docs"), ("--batch-sizes", "batch_sizes"),
                       ("--warmup", "warmup"), ("--methods", "methods"), ("--device", "device"),
                       ("--gpu-id", "gpu_id"), ("--spans-key", "spans_key"), ("--lang", "lang"),
                       ("--anchor", "anchor"), ("--anchor-tokenizer", "anchor_tokenizer"), ("--output", "output")):
        value = getattr(args, dest, None)
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if value is not None and not (dest == "gpu_id" and value < 0):
            argv += [flag, str(value)]
    for item in getattr(args, "compare", None) or []:
        argv += ["--compare", item]
    for item in getattr(args, "set_items", None) or []:
        argv += ["--set", item]
    if getattr(args, "no_progress", False):
        argv.append("--no-progress")
    return shlex.join(argv)


def run(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    report = benchmark(args.pipeline, args.data, max_docs=args.max_docs, latency_docs=args.latency_docs,
                       reference_docs=args.reference_docs, batch_sizes=args.batch_sizes, warmup=args.warmup,
                       methods=methods, device=args.device, gpu_id=args.gpu_id, spans_key=args.spans_key,
                       lang=args.lang, progress=not args.no_progress, command=_command(args),
                       compare=_compare(args.compare), settings=parse_settings(args.set_items),
                       anchor_batch_sizes=args.anchor or (), anchor_tokenizer=args.anchor_tokenizer)
    table = render_markdown(report)
    print(table)
    if args.output:
        write_outputs(report, table, args.output, render_plot)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as err:
        # Configuration and input errors are one line that says what to fix, not a traceback.
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
