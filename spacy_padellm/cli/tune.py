"""``python -m spacy_padellm tune PIPELINE DEV.spacy --output OUT_DIR``: decoding settings and per-label count
biases chosen on dev data, written into a pipeline folder.

Dev data only: the command decodes the DocBin it is given and nothing else; keep the test set for
``evaluate`` on OUT_DIR afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping

from ..tuning.search import DEFAULT_GRID, DEFAULT_VARIANTS, PER_LABEL, parse_grid, parse_variants


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune", help="choose decoding levers and per-label count biases on DEV data; write the tuned pipeline",
        description=(
            "Decode the dev docs once per --grid value of a global count_bias for each lever variant, choose "
            "one count bias per label maximising micro span F1 over the per-label counts, decode that choice "
            "to measure it, and write OUT_DIR: the pipeline with the best measured settings in its config and "
            "tune.json. Give DEV data only (never the test set): every score reported is on these docs."))
    p.add_argument("pipeline", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("dev", help="DEV .spacy DocBin with gold entities (not the test set)")
    p.add_argument("--output", required=True, help="pipeline folder to write, with tune.json inside")
    p.add_argument("--max-docs", type=int, default=None, help="use the first N dev docs (default: all)")
    p.add_argument("--gpu-id", type=int, default=-1, help="like spacy evaluate: use this GPU")
    p.add_argument("--batch-size", type=int, default=64, help="docs per nlp.pipe batch (default 64)")
    p.add_argument("--grid", default=DEFAULT_GRID, help=f"count_bias values to decode with (default {DEFAULT_GRID})")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"lever variants, each boolean settings joined by + or plain (default {DEFAULT_VARIANTS})")
    p.add_argument("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
                   help="a decoding setting for every decode, also written into the config; repeatable")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--lang", default=None)
    p.add_argument("--spans-key", default=None,
                   help="nested mode: the span group written and scored (default: the model's, else flat)")
    p.add_argument("--no-progress", action="store_true")
    # ``--grid -2,-1,0`` is a value, not an option: argparse reads a leading "-" and digit as a negative number
    p._negative_number_matcher = re.compile(r"^-\.?\d[\d.,\-]*$")
    p.set_defaults(func=run)


def save_pipeline(model: str, output: str, settings: Mapping[str, Any], lang=None, spans_key=None) -> Path:
    """``model`` written to ``output`` with ``settings`` in its config: a pipeline folder is loaded with them
    and saved, a model folder or padellm:NAME is assembled with them."""
    from .assemble import assemble
    from ..pipeline.load import load_pipeline

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if (Path(model) / "config.cfg").exists():
        load_pipeline(model, config=settings).to_disk(output)
        return Path(output)
    return assemble(model, output, lang, spans_key, settings=dict(settings))


def render_table(report: Mapping[str, Any]) -> str:
    """One row per measured decode: variant, count bias, dev span P/R/F1 and F1 per label; * marks the choice."""
    labels = report["labels"]
    head = ["variant", "count_bias", "P", "R", "F1", *labels]
    lines = [f"dev {report['dev']}: {report['docs']} docs", "", "| " + " | ".join(head) + " |",
             "|" + " --- |" * len(head)]
    best = report["best"]
    for name, result in report["variants"].items():
        rows = [(key, row) for key, row in result["grid"].items()] + [(PER_LABEL, result[PER_LABEL])]
        for key, row in rows:
            mark = " *" if name == best["variant"] and best["from"] in (key, f"count_bias={key}") else ""
            cells = [name + mark, key, *(f"{row[k]:.4f}" for k in "prf"),
                     *(f"{row['per_label'].get(label, {}).get('f', 0.0):.4f}" for label in labels)]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"chosen: {best['variant']} {best['from']} {json.dumps(best['count_bias'])}: dev span F1 "
                 f"{best['f']:.4f} (P {best['p']:.4f}, R {best['r']:.4f})")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from ..pipeline.load import parse_settings
    from ..tuning.search import tune

    settings = parse_settings(args.set_items)
    variants, grid = parse_variants(args.variants), parse_grid(args.grid)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.gpu_id >= 0:
        import spacy

        spacy.require_gpu(args.gpu_id)
    report = tune(args.pipeline, args.dev, variants=variants, grid=grid, settings=settings, max_docs=args.max_docs,
                  batch_size=args.batch_size, lang=args.lang, spans_key=args.spans_key, progress=not args.no_progress)
    out = save_pipeline(args.pipeline, args.output, report["chosen_settings"], args.lang, args.spans_key)
    report["output"] = str(out)
    text = json.dumps(report, indent=2)
    (out / "tune.json").write_text(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    print(render_table(report), end="")
    print(f"pipeline with the chosen settings written to {out}")
    return 0
